"""The claims a chapter's text makes about its results, each computed from the run.

A chapter ends with a *claims cell*, tagged ``nbval-check-output``: every statement the prose makes
about a result is computed from the run's data and printed as one line, ``True`` or ``False``
followed by the claim. nbval compares the lines, so a code change that breaks a claim fails the
tests; the test suite also requires every claim of a stored *book* run to hold, so the rendered
text never asserts what its own tables contradict.

>>> claims = Claims()
>>> claims.check("the CNN beats the MLP", 90.3 > 86.9)
True
>>> claims.report()
True   the CNN beats the MLP
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Claims", "parse_report"]


@dataclass
class Claims:
    """An ordered list of (statement, holds) pairs."""

    items: list[tuple[str, bool]] = field(default_factory=list)

    def check(self, statement: str, holds: Any) -> bool:
        """Record ``statement`` with whether it ``holds`` (anything with a truth value)."""
        if not statement or "\n" in statement:
            raise ValueError("a claim is one non-empty line of text")
        if any(statement == s for s, _ in self.items):
            raise ValueError(f"claim {statement!r} is recorded twice")
        value = bool(holds)
        self.items.append((statement, value))
        return value

    @property
    def all_hold(self) -> bool:
        return all(value for _, value in self.items)

    def lines(self) -> list[str]:
        return [f"{str(value):6s} {statement}" for statement, value in self.items]

    def report(self) -> None:
        """Print one line per claim (what nbval compares)."""
        print("\n".join(self.lines()))

    def to_dict(self) -> dict[str, bool]:
        return dict(self.items)


def parse_report(text: str) -> dict[str, bool]:
    """The claims of a printed :meth:`Claims.report` (for tests over stored notebooks)."""
    claims = {}
    for line in text.splitlines():
        value, _, statement = line.partition(" ")
        if value in {"True", "False"} and statement.strip():
            claims[statement.strip()] = value == "True"
    return claims
