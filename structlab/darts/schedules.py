"""When to take an architecture (alpha) step: DARTS, CS10 and the dynamic FIMT schedule (§5.2.1).

DARTS solves the bilevel problem (eq. 17) by alternating one first-order step on the weights
``w`` (training loss, eq. 17b) with one step on the architecture weights ``alpha`` (validation
loss, eq. 17a). If ``w`` is far from ``w*(alpha)`` when ``alpha`` moves, operators whose
parameters are not yet trained are judged unfairly (skip-connections train fastest and win).
Three schedules decide, after every w-step, whether an alpha step follows:

* :class:`AlternateSchedule`: DARTS, an alpha step after every w-step (1:1).
* :class:`ConstantSchedule`: CS10 of §5.3, exactly one alpha step per ``r`` w-steps (after the
  ``r``-th, ``2r``-th, ... w-step).
* :class:`FIMTSchedule`: the dynamic schedule of DARTS-PRIME (Algorithm 3, lines 5-10). The
  trace of the empirical Fisher information of the w-gradient ``G`` (eq. 18),
  ``tr(G G^T) = sum_k G_k^2`` (:func:`fisher_trace`, no extra backward pass), is smoothed by an
  exponential moving average ``F_n = lam F + (1 - lam) F_{n-1}`` (eq. 19). An alpha step is taken
  iff ``F_n < h``; the threshold then shrinks, ``h <- h h_d`` with ``h_d = exp(-r ln h_i)``, and
  otherwise grows, ``h <- h h_i``. A falling FIMT (w still converging) keeps ``F_n`` above the
  threshold that chases it downwards, so alpha steps wait (Fig. 20); a flat FIMT gives a
  regular rhythm.

Every schedule has ``step(fimt_sample) -> bool``, counters ``n_steps`` / ``n_alpha_steps``, and
``state_dict()`` / ``load_state_dict()`` for checkpointing.

Readings where the thesis leaves room (checked against the authors' code,
https://github.com/k8lion/DARTS-PRIME, ``src/model_admm_hard_statebn.py::track_FI`` and
``src/train_scheduled_hard_statebn.py::train``):

* **F_0.** The authors start the average from a sentinel and take the *first sample itself*
  as the first average (``F_1 = F(w_1)``), not ``lam F(w_1)`` (as ``F_0 = 0`` would give): with
  ``F_0 = 0`` the average would start at a fifth of the real trace and trigger spurious alpha
  steps at the very start, exactly where Fig. 20 shows none. We do the same.
* **Long-run ratio.** With a constant FIMT, ``h`` settles around it and ``log h`` drifts by
  ``+ln h_i`` per w-step without an alpha step and by ``-r ln h_i`` per w-step with one. Zero net
  drift means ``r`` w-steps *without* an alpha step per alpha step, i.e. one alpha step per
  ``r + 1`` w-steps (attribute :attr:`FIMTSchedule.expected_w_steps_per_alpha`). This is what
  Algorithm 3 and the authors' code (``threshold_divider = exp(-ln(h_i) * schedfreq)``) do; we
  implement it as printed rather than silently changing ``h_d`` to ``exp(-(r - 1) ln h_i)``.
  CS10 takes exactly one alpha step per ``r`` w-steps.
* **Train/validation split** (§5.3.3, :func:`train_fraction`): 50/50 for DARTS, ``r/(r+1)``
  otherwise (90.91 % / 9.09 % for ``r = 10``; the authors' ``1 - 1/(1 + schedfreq)``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

__all__ = [
    "SCHEDULES",
    "fisher_trace",
    "Schedule",
    "AlternateSchedule",
    "ConstantSchedule",
    "FIMTSchedule",
    "make_schedule",
    "train_fraction",
]

SCHEDULES = ("alternate", "constant", "fimt")


def fisher_trace(params: Iterable[torch.Tensor]) -> float:
    """Trace of the empirical Fisher information of one minibatch (eq. 18).

    ``tr(G G^T) = ||G||^2 = sum_k G_k^2`` where ``G = grad_w L_train`` is the gradient already left
    in ``p.grad`` by the w-step's backward pass: nothing is recomputed. Parameters without a
    gradient are skipped. Call it before gradient clipping to measure what the gradient says
    (this is what :func:`structlab.darts.search.search` and the authors' code do).

    Args:
        params: the weight parameters ``w`` (not the alphas).

    Returns:
        The trace as a Python float (0.0 when no parameter has a gradient).
    """
    total: torch.Tensor | None = None
    for p in params:
        g = p.grad
        if g is None:
            continue
        s = g.detach().double().pow(2).sum()
        total = s if total is None else total + s.to(total.device)
    return 0.0 if total is None else float(total)


def _check_sample(fimt_sample: float) -> float:
    x = float(fimt_sample)
    if not math.isfinite(x) or x < 0:
        raise ValueError(f"FIMT sample must be a finite non-negative number, got {fimt_sample!r}")
    return x


class Schedule:
    """Common interface: ``step(fimt_sample)`` after every w-step returns whether an alpha step
    follows. Subclasses implement :meth:`_decide`.

    Attributes:
        name: ``"alternate"``, ``"constant"`` or ``"fimt"``.
        n_steps: w-steps seen so far.
        n_alpha_steps: alpha steps decided so far.
    """

    name = "schedule"

    def __init__(self) -> None:
        self.n_steps = 0
        self.n_alpha_steps = 0

    def _decide(self, fimt_sample: float) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def step(self, fimt_sample: float) -> bool:
        """Record one w-step with its FIMT sample (eq. 18); True: take an alpha step now."""
        x = _check_sample(fimt_sample)
        self.n_steps += 1
        take = bool(self._decide(x))
        self.n_alpha_steps += int(take)
        return take

    def state_dict(self) -> dict[str, Any]:
        """Counters and internal state (plain Python numbers)."""
        return {"name": self.name, "n_steps": self.n_steps, "n_alpha_steps": self.n_alpha_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (same schedule type)."""
        if state.get("name") != self.name:
            raise ValueError(f"state is for schedule {state.get('name')!r}, not {self.name!r}")
        self.n_steps = int(state["n_steps"])
        self.n_alpha_steps = int(state["n_alpha_steps"])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n_steps={self.n_steps}, n_alpha_steps={self.n_alpha_steps})"


class AlternateSchedule(Schedule):
    """DARTS: an alpha step after every w-step; the FIMT sample is ignored."""

    name = "alternate"
    r = 1

    def _decide(self, fimt_sample: float) -> bool:
        return True


def _check_r(r: float, integer: bool) -> None:
    if integer and (isinstance(r, bool) or not isinstance(r, int) or r < 1):
        raise ValueError(f"r must be a positive integer (w-steps per alpha step), got {r!r}")
    if not integer and (isinstance(r, bool) or not isinstance(r, int | float) or not r > 0
                        or not math.isfinite(r)):
        raise ValueError(f"r must be a positive number (expected step ratio), got {r!r}")


class ConstantSchedule(Schedule):
    """CS10 of §5.3: exactly one alpha step per ``r`` w-steps, after w-steps ``r, 2r, ...``.

    Args:
        r: w-steps per alpha step (10 in the thesis); ``r = 1`` is DARTS.
    """

    name = "constant"

    def __init__(self, r: int = 10) -> None:
        if isinstance(r, float) and r.is_integer():
            r = int(r)
        _check_r(r, integer=True)
        super().__init__()
        self.r = r

    def _decide(self, fimt_sample: float) -> bool:
        return self.n_steps % self.r == 0

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "r": self.r}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.r = int(state["r"])

    def __repr__(self) -> str:
        return f"ConstantSchedule(r={self.r}, n_steps={self.n_steps})"


class FIMTSchedule(Schedule):
    """Dynamic FIMT schedule of DARTS-PRIME (Algorithm 3, lines 5-10; eqs. 18-19).

    After each w-step with FIMT sample ``F`` (eq. 18):

    1. ``F_n = lam F + (1 - lam) F_{n-1}`` (eq. 19), with ``F_1 = F`` (the first sample; see the
       module docstring);
    2. if ``F_n < h``: alpha step, ``h <- h h_d`` with ``h_d = exp(-r ln h_i) = h_i^(-r)``;
       else: no alpha step, ``h <- h h_i``.

    With a constant FIMT this gives ``r`` w-steps without an alpha step per alpha step, i.e.
    one alpha step every ``r + 1`` w-steps on average (:attr:`expected_w_steps_per_alpha`),
    whatever ``h0``.

    Args:
        h0: initial threshold ``h_0`` (1.0 in §5.3.2).
        h_i: threshold increasing factor ``h_i > 1`` (1.05).
        r: expected step ratio ``r > 0`` (10).
        lam: moving-average weight ``lam`` in ``(0, 1]`` of eq. 19 (0.2); 1 means no averaging.

    Attributes:
        fimt: the current average ``F_n`` (NaN before the first sample).
        threshold: the current threshold ``h`` (the one the next ``F_n`` is compared with).
        last_threshold: the threshold the last ``F_n`` was compared with (NaN before the first).
        last_sample: the last raw sample ``F`` (NaN before the first).
        h_d: the threshold decreasing factor ``exp(-r ln h_i)``.
    """

    name = "fimt"

    def __init__(self, h0: float = 1.0, h_i: float = 1.05, r: float = 10, lam: float = 0.2) -> None:
        _check_r(r, integer=False)
        if not (isinstance(h0, int | float) and math.isfinite(h0) and h0 > 0):
            raise ValueError(f"h0 must be a positive number (initial threshold), got {h0!r}")
        if not (isinstance(h_i, int | float) and math.isfinite(h_i) and h_i > 1):
            raise ValueError(f"h_i must be a number > 1 (threshold increasing factor), got {h_i!r}")
        if not (isinstance(lam, int | float) and 0 < lam <= 1):
            raise ValueError(f"lam must be in (0, 1] (moving-average weight), got {lam!r}")
        super().__init__()
        self.h0, self.h_i, self.r, self.lam = float(h0), float(h_i), r, float(lam)
        self.h_d = math.exp(-r * math.log(self.h_i))
        self.threshold = self.h0
        self.fimt = math.nan
        self.last_threshold = math.nan
        self.last_sample = math.nan

    @property
    def expected_w_steps_per_alpha(self) -> float:
        """Long-run w-steps per alpha step with a constant FIMT: ``r + 1``."""
        return self.r + 1

    def _decide(self, fimt_sample: float) -> bool:
        self.last_sample = fimt_sample
        if math.isnan(self.fimt):
            self.fimt = fimt_sample  # F_1 = first sample
        else:
            self.fimt = self.lam * fimt_sample + (1.0 - self.lam) * self.fimt  # eq. 19
        self.last_threshold = self.threshold
        if self.fimt < self.threshold:
            self.threshold *= self.h_d
            return True
        self.threshold *= self.h_i
        return False

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "h0": self.h0, "h_i": self.h_i, "r": self.r, "lam": self.lam,
            "threshold": self.threshold, "fimt": self.fimt,
            "last_threshold": self.last_threshold, "last_sample": self.last_sample,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.h0, self.h_i, self.lam = float(state["h0"]), float(state["h_i"]), float(state["lam"])
        self.r = state["r"]
        self.h_d = math.exp(-self.r * math.log(self.h_i))
        self.threshold = float(state["threshold"])
        self.fimt = float(state["fimt"])
        self.last_threshold = float(state["last_threshold"])
        self.last_sample = float(state["last_sample"])

    def __repr__(self) -> str:
        return (f"FIMTSchedule(h0={self.h0}, h_i={self.h_i}, r={self.r}, lam={self.lam}, "
                f"fimt={self.fimt:.4g}, threshold={self.threshold:.4g}, n_steps={self.n_steps})")


def _check_name(name: str) -> None:
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; expected one of {', '.join(SCHEDULES)}")


def make_schedule(
    name: str, r: float = 10, *, h0: float = 1.0, h_i: float = 1.05, lam: float = 0.2
) -> Schedule:
    """Build a schedule by name: ``"alternate"`` (DARTS; ``r`` and the FIMT parameters are
    ignored), ``"constant"`` (CS``r``) or ``"fimt"`` (Algorithm 3 with ``h0, h_i, r, lam``)."""
    _check_name(name)
    if name == "alternate":
        return AlternateSchedule()
    if name == "constant":
        return ConstantSchedule(r)  # type: ignore[arg-type]
    return FIMTSchedule(h0=h0, h_i=h_i, r=r, lam=lam)


def train_fraction(name: str, r: float = 10) -> float:
    """Fraction of the search data used for w-steps (§5.3.3): 0.5 for ``"alternate"`` (DARTS's
    50/50 split), ``r / (r + 1)`` for ``"constant"`` and ``"fimt"`` (0.9091 for ``r = 10``)."""
    _check_name(name)
    if name == "alternate":
        return 0.5
    _check_r(r, integer=False)
    return r / (r + 1)
