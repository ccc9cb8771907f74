"""Verdicts on the sources' claims, and the checked statements of a chapter's own text.

A chapter ends with one claims cell that reports two kinds of claim (``../shared/CLAIMS.md``):

* **seed claims**, the sources' headline claims by id (:func:`load_catalog`). Each gets a
  verdict, *shown*, *direction only*, *not shown* or *not run*, computed from the run's per-seed
  values by the rules of CLAIMS.md (:func:`compare`, :func:`equivalent`, :func:`threshold`,
  :func:`exact`) and printed with the numbers that decided it. A seed claim never has to hold:
  a *not shown* is a result.
* **text claims**, what the chapter's prose says about its run. Each is a fixed sentence checked
  against the run (:meth:`Report.check`); in the stored book run every one must hold
  (``tests/test_stored_runs.py``). The sentence is written before the run and never chosen from
  the condition it checks, so that a claim can fail.

>>> report = Report("neural_operators")
>>> v = report.seed("3.5", compare([84.1, 84.3, 84.0], [83.0, 83.4, 83.1],
...                                names=("iterative", "one-shot"), paired=True, unit=" %"))
>>> v.verdict
'shown'
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from structlab import stats

__all__ = ["VERDICTS", "Verdict", "Report", "compare", "equivalent", "threshold", "exact",
           "weakest", "load_catalog", "catalog_for", "parse_seed_claims", "SEED_HEADER",
           "TEXT_HEADER", "ALPHA", "MIN_SEEDS"]

#: The verdicts, strongest first.
VERDICTS = ("shown", "direction only", "not shown", "not run")
#: The significance level of every test (CLAIMS.md).
ALPHA = 0.05
#: Seeds a comparison needs before it can be *shown* (CLAIMS.md).
MIN_SEEDS = 3

SEED_HEADER = "Seed claims (../shared/CLAIMS.md; verdicts by its rules):"
TEXT_HEADER = "Text claims (each must hold in the book run):"
_LINE = re.compile(r"^\[(?P<id>[^\]\s]+)\] (?P<verdict>shown|direction only|not shown|not run)"
                   r" \| (?P<numbers>.*)$")
_RANK = {"shown": 2, "direction only": 1, "not shown": 0}


@dataclass(frozen=True)
class Verdict:
    """A verdict, the numbers that decided it (one line of text) and the values behind them."""

    verdict: str
    numbers: str
    values: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {', '.join(VERDICTS)}, got {self.verdict!r}")
        if "\n" in self.numbers or not self.numbers.strip():
            raise ValueError("a verdict's numbers are one non-empty line")

    @property
    def shown(self) -> bool:
        return self.verdict == "shown"


def _fmt(value: float, digits: int) -> str:
    return f"{value:.{digits}f}"


def _side(name: str, s: stats.Summary, digits: int, unit: str) -> str:
    if s.n == 1:
        return f"{name} {_fmt(s.mean, digits)}{unit}"
    return f"{name} {_fmt(s.mean, digits)} ± {_fmt(s.std, digits)}{unit}"


def _p(p: float) -> str:
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


def compare(better: Sequence[float], worse: Sequence[float], *,
            names: tuple[str, str] = ("a", "b"), lower_is_better: bool = False,
            paired: bool = False, unit: str = "", digits: int = 1,
            margin: float | None = None) -> Verdict:
    """The verdict on "``names[0]`` beats ``names[1]``" from per-seed values (CLAIMS.md).

    *Shown*: the mean goes that way over at least :data:`MIN_SEEDS` seeds each and a one-sided
    test (Welch's, or paired by seed when ``paired``) gives p < :data:`ALPHA`; for one
    deterministic run per side, the difference exceeds the ``margin`` stated before the run.
    *Direction only*: the mean goes that way but the test (or the seed count) falls short.
    *Not shown*: anything else. ``lower_is_better`` for errors and losses.
    """
    a, b = stats.summary(better), stats.summary(worse)
    diff = a.mean - b.mean
    goes = diff < 0 if lower_is_better else diff > 0
    sides = f"{_side(names[0], a, digits, unit)} vs {_side(names[1], b, digits, unit)}"
    values = {names[0]: [float(v) for v in better], names[1]: [float(v) for v in worse]}
    if a.n < 2 or b.n < 2:
        if margin is not None and a.n == b.n == 1:
            verdict = "shown" if goes and abs(diff) > margin else (
                "direction only" if goes else "not shown")
            return Verdict(verdict, f"{sides} (one deterministic run each, margin "
                                    f"{_fmt(margin, digits)}{unit} stated before the run)", values)
        return Verdict("direction only" if goes else "not shown",
                       f"{sides} (n={a.n}/{b.n}: too few seeds for a test)", values)
    alternative = "less" if lower_is_better else "greater"
    result = (stats.paired(better, worse, alternative=alternative) if paired
              else stats.welch(better, worse, alternative=alternative))
    enough = a.n >= MIN_SEEDS and b.n >= MIN_SEEDS
    verdict = ("shown" if goes and result.p < ALPHA and enough
               else "direction only" if goes else "not shown")
    n = f"n={a.n}" if paired else f"n={a.n}/{b.n}"
    return Verdict(verdict, f"{sides} ({n}, {result.test} one-sided {_p(result.p)})",
                   {**values, "p": result.p})


def equivalent(a: Sequence[float], b: Sequence[float], *, effect: float,
               names: tuple[str, str] = ("a", "b"), paired: bool = False, unit: str = "",
               digits: int = 1, level: float = 0.95) -> Verdict:
    """The verdict on "``names[0]`` is within noise of ``names[1]``" (CLAIMS.md).

    *Shown*: with at least :data:`MIN_SEEDS` seeds each, a two-sided test finds no difference
    (p >= :data:`ALPHA`) **and** the ``level`` confidence interval of the difference is narrower
    than ``effect``, the difference the source reports between the compared methods and the next
    baseline. *Direction only*: no difference found, but the interval is too wide (or too few
    seeds). *Not shown*: the test finds a difference.
    """
    if effect <= 0:
        raise ValueError(f"effect must be > 0, got {effect}")
    sa, sb = stats.summary(a), stats.summary(b)
    sides = f"{_side(names[0], sa, digits, unit)} vs {_side(names[1], sb, digits, unit)}"
    values = {names[0]: [float(v) for v in a], names[1]: [float(v) for v in b]}
    if sa.n < 2 or sb.n < 2:
        return Verdict("not shown", f"{sides} (n={sa.n}/{sb.n}: too few seeds for a test)",
                       values)
    result = (stats.paired(a, b, alternative="two-sided") if paired
              else stats.welch(a, b, alternative="two-sided"))
    lo, hi = stats.difference_ci(a, b, paired_runs=paired, level=level)
    enough = sa.n >= MIN_SEEDS and sb.n >= MIN_SEEDS
    narrow = hi - lo < effect
    verdict = ("not shown" if result.p < ALPHA else
               "shown" if narrow and enough else "direction only")
    n = f"n={sa.n}" if paired else f"n={sa.n}/{sb.n}"
    return Verdict(verdict, f"{sides} ({n}, {result.test} two-sided {_p(result.p)}; "
                            f"{100 * level:.0f} % CI of the difference [{_fmt(lo, digits)}, "
                            f"{_fmt(hi, digits)}], width {_fmt(hi - lo, digits)} against the "
                            f"source's effect {_fmt(effect, digits)}{unit})",
                   {**values, "p": result.p, "ci": [lo, hi]})


def threshold(value: float | Sequence[float], limit: float, *, name: str, above: bool = True,
              start: float | None = None, unit: str = "", digits: int = 2) -> Verdict:
    """The verdict on a mechanism: the measurement ``name`` crosses ``limit`` (stated in the
    chapter before the run) upwards when ``above``, else downwards.

    *Shown*: it crosses (the mean, for several seeds). *Direction only*: it moves from ``start``
    toward the limit but stays short. *Not shown*: anything else.
    """
    values = [float(value)] if isinstance(value, int | float) else [float(v) for v in value]
    s = stats.summary(values)
    crosses = s.mean > limit if above else s.mean < limit
    moves = start is not None and (s.mean > start if above else s.mean < start)
    verdict = "shown" if crosses else "direction only" if moves else "not shown"
    text = _side(name, s, digits, unit) + (f" (n={s.n})" if s.n > 1 else "")
    text += f", threshold {'>' if above else '<'} {_fmt(limit, digits)}{unit}"
    if start is not None:
        text += f", from {_fmt(start, digits)}{unit}"
    return Verdict(verdict, text, {name: values, "threshold": limit})


def exact(error: float, tol: float, *, name: str) -> Verdict:
    """The verdict on an exactness property: the largest deviation ``error`` is at most ``tol``."""
    verdict = "shown" if float(error) <= tol else "not shown"
    return Verdict(verdict, f"{name} {float(error):.1e} (tolerance {tol:.0e})",
                   {name: float(error), "tolerance": tol})


def weakest(*verdicts: Verdict) -> Verdict:
    """A claim of several parts holds as far as its weakest part: the lowest verdict, with the
    numbers of every part."""
    if not verdicts:
        raise ValueError("weakest needs at least one verdict")
    if any(v.verdict == "not run" for v in verdicts):
        raise ValueError("a part that was not run makes the claim not run: use Report.not_run")
    low = min(verdicts, key=lambda v: _RANK[v.verdict])
    values: dict[str, Any] = {}
    for i, v in enumerate(verdicts):
        values[f"part {i + 1}"] = v.values
    return Verdict(low.verdict, "; ".join(v.numbers for v in verdicts), values)


@cache
def load_catalog() -> tuple[dict[str, Any], ...]:
    """The claims of ``catalog.yaml`` (a copy of CLAIMS.md's tables), in their order."""
    path = Path(__file__).with_name("catalog.yaml")
    claims = yaml.safe_load(path.read_text(encoding="utf-8"))["claims"]
    return tuple(dict(c) for c in claims)


def catalog_for(chapter: str) -> dict[str, dict[str, Any]]:
    """The catalogue's claims of one chapter by id."""
    return {c["id"]: c for c in load_catalog() if c["chapter"] == chapter}


class Report:
    """The claims cell of chapter ``chapter``: its seed claims by id and its text claims."""

    def __init__(self, chapter: str) -> None:
        self.chapter = chapter
        self.catalog = catalog_for(chapter)
        self.seeds: dict[str, Verdict] = {}
        self.texts: list[tuple[str, bool]] = []

    def seed(self, claim_id: str, *parts: Verdict) -> Verdict:
        """Record the verdict on seed claim ``claim_id`` (the weakest of ``parts``)."""
        self._new(claim_id)
        verdict = parts[0] if len(parts) == 1 else weakest(*parts)
        self.seeds[claim_id] = verdict
        return verdict

    def not_run(self, claim_id: str, reason: str) -> Verdict:
        """Record that seed claim ``claim_id`` was not run, and why."""
        self._new(claim_id)
        verdict = Verdict("not run", reason)
        self.seeds[claim_id] = verdict
        return verdict

    def _new(self, claim_id: str) -> None:
        if claim_id not in self.catalog:
            raise ValueError(f"{claim_id!r} is not a claim of chapter {self.chapter!r} in "
                             f"CLAIMS.md (its ids: {', '.join(self.catalog) or 'none'})")
        if claim_id in self.seeds:
            raise ValueError(f"seed claim {claim_id} is reported twice")

    def verdict(self, claim_id: str) -> str:
        """The verdict recorded for ``claim_id`` (for prose that follows it)."""
        return self.seeds[claim_id].verdict

    def check(self, statement: str, holds: Any) -> bool:
        """Record text claim ``statement`` (a fixed sentence) and whether it ``holds``."""
        if not statement or "\n" in statement:
            raise ValueError("a claim is one non-empty line of text")
        if any(statement == s for s, _ in self.texts):
            raise ValueError(f"claim {statement!r} is recorded twice")
        value = bool(holds)
        self.texts.append((statement, value))
        return value

    @property
    def all_hold(self) -> bool:
        """Whether every text claim holds."""
        return all(v for _, v in self.texts)

    def lines(self) -> list[str]:
        """The printed report: the seed claims in catalogue order, then the text claims."""
        missing = [i for i in self.catalog if i not in self.seeds]
        if missing:
            raise ValueError(f"chapter {self.chapter} does not report seed claims "
                             f"{', '.join(missing)} of CLAIMS.md")
        out = [SEED_HEADER]
        out += [f"[{i}] {self.seeds[i].verdict} | {self.seeds[i].numbers}" for i in self.catalog]
        if not self.catalog:
            out.append("(none: CLAIMS.md lists no claim for this chapter)")
        out.append(TEXT_HEADER)
        out += [f"{str(v):6s} {s}" for s, v in self.texts]
        return out

    def report(self) -> None:
        """Print the report (what nbval compares and the scorecard reads)."""
        print("\n".join(self.lines()))

    def to_dict(self) -> dict[str, Any]:
        """Every verdict with its numbers and per-seed values, and every text claim."""
        return {"chapter": self.chapter,
                "seed_claims": {i: {"verdict": v.verdict, "numbers": v.numbers,
                                    "values": v.values} for i, v in self.seeds.items()},
                "text_claims": dict(self.texts)}


def parse_seed_claims(text: str) -> dict[str, tuple[str, str]] | None:
    """The seed claims of a printed :meth:`Report.report` as {id: (verdict, numbers)}; ``None``
    when the text has no seed-claims section (a chapter not converted to this report)."""
    lines = text.splitlines()
    if SEED_HEADER not in lines:
        return None
    found: dict[str, tuple[str, str]] = {}
    for line in lines[lines.index(SEED_HEADER) + 1:]:
        if line == TEXT_HEADER:
            break
        match = _LINE.match(line)
        if match:
            found[match["id"]] = (match["verdict"], match["numbers"])
    return found
