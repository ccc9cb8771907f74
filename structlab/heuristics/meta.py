"""Meta-parameters of Noisy Heuristics NAS, read between iterations (Fig. 3, "Workflow").

The user steers the search with a few meta-parameters that may change while it runs (appendix C,
Fig. 8-10): the number of neurons to add ``P``, the add-to-remove ratio (``M = ceil(P / ratio)``
neurons are pruned, the authors' code), the learning rate and the maximum training epochs. They
come from

* a JSON or YAML **file**, re-read before every iteration, so that it can be edited while the
  search runs (the paper's interface between user and NAS system); a file holding a list is a
  schedule;
* a **schedule**: a list of dicts, one per iteration, the last one repeated;
* a single dict (the same every iteration), or a callable ``iteration -> dict``.

Each dict may give only some keys: the others keep their value from the previous iteration
(from :class:`MetaParams`' defaults at the first).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = ["MetaParams", "MetaSource"]


@dataclass(frozen=True)
class MetaParams:
    """The meta-parameters of one iteration.

    Attributes:
        neurons_to_add: ``P``, neurons added in the growth phase.
        add_to_remove_ratio: ``P / M``; ``M = ceil(P / ratio)`` least important neurons are
            pruned (a ratio above 1 grows the network, below 1 shrinks it).
        learning_rate: of the optimizer, set at the start of the iteration.
        max_epochs: most epochs of the training phase (the stopping rule may stop earlier).
        min_epochs: epochs always trained before the stopping rule may stop.
        decay_epochs: epochs over which the pruned neurons' outgoing weights decay to zero while
            the other neurons fine-tune (0: prune at once).
        neurons_to_remove: ``M`` given directly instead of through the ratio.
    """

    neurons_to_add: int = 16
    add_to_remove_ratio: float = 2.0
    learning_rate: float = 1e-3
    max_epochs: int = 10
    min_epochs: int = 1
    decay_epochs: int = 1
    neurons_to_remove: int | None = None

    def __post_init__(self) -> None:
        def integer(name: str, low: int) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"meta-parameter {name} must be an integer >= {low}, got {v!r}")

        integer("neurons_to_add", 0)
        integer("max_epochs", 1)
        integer("min_epochs", 0)
        integer("decay_epochs", 0)
        if self.neurons_to_remove is not None:
            integer("neurons_to_remove", 0)
        r = self.add_to_remove_ratio
        if isinstance(r, bool) or not isinstance(r, int | float) or not r > 0:
            raise ValueError(f"meta-parameter add_to_remove_ratio must be > 0, got {r!r}")
        lr = self.learning_rate
        if isinstance(lr, bool) or not isinstance(lr, int | float) or not lr > 0:
            raise ValueError(f"meta-parameter learning_rate must be > 0, got {lr!r}")

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    def updated(self, changes: Mapping[str, Any]) -> MetaParams:
        """A copy with ``changes`` applied (unknown keys are an error)."""
        unknown = set(changes) - set(self.keys())
        if unknown:
            raise ValueError(f"unknown meta-parameters {sorted(unknown)}; known: {self.keys()}")
        values = dict(changes)
        for key in ("learning_rate", "add_to_remove_ratio"):
            if isinstance(values.get(key), int) and not isinstance(values.get(key), bool):
                values[key] = float(values[key])
        return dataclasses.replace(self, **values)

    def neurons_to_prune(self, added: int) -> int:
        """``M``: ``neurons_to_remove`` when given, else ``ceil(added / add_to_remove_ratio)``."""
        if self.neurons_to_remove is not None:
            return self.neurons_to_remove
        return int(math.ceil(added / self.add_to_remove_ratio - 1e-12))

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


Source = (
    str
    | os.PathLike[str]
    | Mapping[str, Any]
    | Sequence[Mapping[str, Any]]
    | Callable[[int], Mapping[str, Any]]
    | None
)


class MetaSource:
    """Where the meta-parameters of each iteration come from (see the module docstring).

    >>> src = MetaSource([{"neurons_to_add": 8}, {"add_to_remove_ratio": 0.5}])
    >>> [(m.neurons_to_add, m.add_to_remove_ratio) for m in src.sequence(3)]
    [(8, 2.0), (8, 0.5), (8, 0.5)]
    """

    def __init__(self, source: Source = None, *, defaults: MetaParams | None = None) -> None:
        self.defaults = defaults or MetaParams()
        self.path: Path | None = None
        self.schedule: list[Mapping[str, Any]] | None = None
        self.function: Callable[[int], Mapping[str, Any]] | None = None
        if source is None:
            self.schedule = [{}]
        elif isinstance(source, str | os.PathLike):
            self.path = Path(source)
            if not self.path.is_file():
                raise ValueError(f"meta-parameter file {str(self.path)!r} does not exist")
            self.read_file()  # fail early on a bad file
        elif isinstance(source, MetaParams):
            self.schedule = [source.as_dict()]
        elif isinstance(source, Mapping):
            self.schedule = [dict(source)]
        elif callable(source):
            self.function = source
        elif (
            isinstance(source, Sequence)
            and source
            and all(isinstance(s, Mapping | MetaParams) for s in source)
        ):
            self.schedule = [s.as_dict() if isinstance(s, MetaParams) else dict(s) for s in source]
        else:
            raise ValueError(
                "meta-parameters must be a file path, a dict, a non-empty list of "
                f"dicts or a callable, got {type(source).__name__}"
            )
        if self.schedule is not None:  # validate every entry before the search starts
            meta = self.defaults
            for entry in self.schedule:
                meta = meta.updated(entry)

    def read_file(self) -> Mapping[str, Any] | list[Mapping[str, Any]]:
        """Parse the file (JSON for ``.json``, YAML otherwise)."""
        assert self.path is not None
        text = self.path.read_text(encoding="utf-8")
        data = json.loads(text) if self.path.suffix.lower() == ".json" else yaml.safe_load(text)
        if isinstance(data, Mapping) or (
            isinstance(data, list) and data and all(isinstance(d, Mapping) for d in data)
        ):
            return data
        raise ValueError(f"{self.path}: expected a mapping of meta-parameters or a list of them")

    def _entry(self, iteration: int) -> Mapping[str, Any]:
        if self.function is not None:
            return self.function(iteration)
        if self.path is not None:
            data = self.read_file()
            return data[min(iteration, len(data) - 1)] if isinstance(data, list) else data
        assert self.schedule is not None
        return self.schedule[min(iteration, len(self.schedule) - 1)]

    def read(self, iteration: int, previous: MetaParams | None = None) -> MetaParams:
        """The meta-parameters of ``iteration`` (0-based): the entry for it applied to
        ``previous`` (or the defaults). A file that cannot be read or holds bad values while a
        search runs (being edited) keeps ``previous`` with a warning; at the first iteration it
        is an error."""
        base = previous or self.defaults
        try:
            return base.updated(self._entry(iteration))
        except (ValueError, TypeError, OSError, yaml.YAMLError) as err:
            if self.path is None or previous is None:
                raise
            warnings.warn(
                f"meta-parameters of iteration {iteration} not read from {self.path} "
                f"({err}); keeping the previous ones",
                stacklevel=2,
            )
            return previous

    def sequence(self, n: int) -> list[MetaParams]:
        """The meta-parameters of iterations ``0 .. n-1`` as they would be read now."""
        out: list[MetaParams] = []
        for i in range(n):
            out.append(self.read(i, out[-1] if out else None))
        return out

    def __repr__(self) -> str:
        if self.path is not None:
            return f"MetaSource(file={str(self.path)!r})"
        if self.function is not None:
            return f"MetaSource(function={self.function!r})"
        return f"MetaSource(schedule of {len(self.schedule or [])})"
