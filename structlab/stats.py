"""Statistics of repeated runs: summaries over seeds and the tests behind every verdict.

The book reports a comparison between two methods from their per-seed values (``../shared/
CLAIMS.md``, "When a seed claim is shown"): the mean over at least three seeds must go the source's
way **and** the difference must exceed its noise, a one-sided Welch t-test (independent runs) or
paired t-test (runs that share a seed) at p < 0.05. "Within noise of" asks for the opposite: a
two-sided test that finds no difference and a confidence interval of the difference narrower than
the effect the source reports. This module holds those computations, on top of
:mod:`scipy.stats`, so that every chapter decides the same way.

>>> summary([1.0, 2.0, 3.0])
Summary(mean=2.0, std=1.0, n=3)
>>> round(welch([3.0, 3.1, 2.9], [1.0, 1.2, 0.8], alternative="greater").p, 4)
0.0001
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as _sp

__all__ = ["Summary", "TestResult", "summary", "welch", "paired", "difference_ci", "ALTERNATIVES"]

#: What a one-sided test asks of ``a - b``; "two-sided" asks whether they differ at all.
ALTERNATIVES = ("greater", "less", "two-sided")


@dataclass(frozen=True)
class Summary:
    """Mean, sample standard deviation (ddof 1; 0 for one value) and count of some values."""

    mean: float
    std: float
    n: int


@dataclass(frozen=True)
class TestResult:
    """A t-test of ``a`` against ``b``: its p-value, t statistic, degrees of freedom and name."""

    p: float
    statistic: float
    df: float
    test: str


def _values(values: Sequence[float], what: str) -> np.ndarray:
    array = np.asarray([float(v) for v in values], dtype=np.float64)
    if array.size == 0:
        raise ValueError(f"{what}: no values")
    if not np.isfinite(array).all():
        raise ValueError(f"{what}: values must be finite, got {array.tolist()}")
    return array


def summary(values: Sequence[float]) -> Summary:
    """Mean, standard deviation over seeds (ddof 1) and n."""
    array = _values(values, "summary")
    std = float(array.std(ddof=1)) if array.size > 1 else 0.0
    return Summary(float(array.mean()), std, int(array.size))


def _check(alternative: str) -> None:
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {', '.join(ALTERNATIVES)}, "
                         f"got {alternative!r}")


def _degenerate(diff: float, alternative: str) -> float:
    """The p-value when both samples have no spread: the difference is exact."""
    if diff == 0:
        return 1.0
    if alternative == "two-sided":
        return 0.0
    return 0.0 if (diff > 0) == (alternative == "greater") else 1.0


def welch(a: Sequence[float], b: Sequence[float], *, alternative: str = "greater") -> TestResult:
    """Welch's t-test (unequal variances) of ``mean(a) - mean(b)``: ``alternative`` "greater"
    tests a > b. Needs at least 2 values on each side; samples without any spread give p 0 or 1
    by the sign of the (then exact) difference."""
    _check(alternative)
    x, y = _values(a, "welch a"), _values(b, "welch b")
    if x.size < 2 or y.size < 2:
        raise ValueError(f"welch needs at least 2 values per side, got {x.size} and {y.size}")
    vx, vy = x.var(ddof=1) / x.size, y.var(ddof=1) / y.size
    diff = float(x.mean() - y.mean())
    if vx + vy == 0:
        return TestResult(_degenerate(diff, alternative), math.copysign(math.inf, diff) if diff
                          else 0.0, float(x.size + y.size - 2), "Welch t")
    result = _sp.ttest_ind(x, y, equal_var=False, alternative=alternative)
    df = (vx + vy) ** 2 / (vx ** 2 / (x.size - 1) + vy ** 2 / (y.size - 1))
    return TestResult(float(result.pvalue), float(result.statistic), float(df), "Welch t")


def paired(a: Sequence[float], b: Sequence[float], *, alternative: str = "greater") -> TestResult:
    """Paired t-test of the per-seed differences ``a[i] - b[i]`` (runs that share seed i)."""
    _check(alternative)
    x, y = _values(a, "paired a"), _values(b, "paired b")
    if x.size != y.size or x.size < 2:
        raise ValueError(f"paired needs two samples of the same length >= 2, got {x.size} and "
                         f"{y.size}")
    d = x - y
    if d.std(ddof=1) == 0:
        diff = float(d.mean())
        return TestResult(_degenerate(diff, alternative), math.copysign(math.inf, diff) if diff
                          else 0.0, float(d.size - 1), "paired t")
    result = _sp.ttest_rel(x, y, alternative=alternative)
    return TestResult(float(result.pvalue), float(result.statistic), float(d.size - 1),
                      "paired t")


def difference_ci(a: Sequence[float], b: Sequence[float], *, paired_runs: bool = False,
                  level: float = 0.95) -> tuple[float, float]:
    """The ``level`` confidence interval of ``mean(a) - mean(b)``: Student's t on the per-seed
    differences when ``paired_runs``, else Welch-Satterthwaite degrees of freedom."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    x, y = _values(a, "ci a"), _values(b, "ci b")
    if paired_runs:
        if x.size != y.size or x.size < 2:
            raise ValueError("a paired interval needs two samples of the same length >= 2")
        d = x - y
        se, df = d.std(ddof=1) / math.sqrt(d.size), d.size - 1
        centre = float(d.mean())
    else:
        if x.size < 2 or y.size < 2:
            raise ValueError("an interval needs at least 2 values per side")
        vx, vy = x.var(ddof=1) / x.size, y.var(ddof=1) / y.size
        se = math.sqrt(vx + vy)
        df = ((vx + vy) ** 2 / (vx ** 2 / (x.size - 1) + vy ** 2 / (y.size - 1))
              if vx + vy > 0 else x.size + y.size - 2)
        centre = float(x.mean() - y.mean())
    half = float(_sp.t.ppf(0.5 + level / 2, df) * se) if se > 0 else 0.0
    return centre - half, centre + half
