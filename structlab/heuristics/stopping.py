"""When is the model fitted? The loss-flattening stopping rule of appendix A (Fig. 5).

The steps and the loss values of the training curve are normalised to ``[0, 1]`` and the model
``y = exp(a x) (1 - x)`` is fitted to them by least squares on its one parameter ``a``. A curve
that keeps falling steadily fits ``a`` near 0 (a straight line for ``a = 0``); one that dropped
early and then stayed flat fits a large negative ``a``. Training stops when ``a < -5`` or when the
maximum number of epochs is reached.

Readings where the paper is brief: the curve starts at its highest point (a loss that first rises
after a morphism is cut, as the authors' code does), the loss is normalised as
``(L - min L) / (max L - min L)`` and the step index as ``i / (n - 1)``; the per-step losses are
smoothed by an exponential moving average before fitting (the authors smooth too); the rule is
checked at the end of every epoch; the fit minimises the squared error over
``a in [-100, 50]`` by a grid search refined with :func:`scipy.optimize.minimize_scalar`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.optimize import minimize_scalar

from structlab.training import Callback, TrainState

__all__ = ["flattening_model", "normalise_curve", "flattening_rate", "FlatteningStop"]

#: Bounds of the fitted parameter ``a``.
A_BOUNDS = (-100.0, 50.0)


def flattening_model(x: np.ndarray | float, a: float) -> np.ndarray:
    """``y = exp(a x) (1 - x)`` on normalised steps ``x`` in ``[0, 1]`` (appendix A, Fig. 5)."""
    x = np.asarray(x, dtype=float)
    return np.exp(a * x) * (1.0 - x)


def normalise_curve(
    losses: Sequence[float], *, from_peak: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Normalised ``(x, y)`` of a loss curve: from its maximum on (``from_peak``), steps to
    ``[0, 1]`` and losses to ``[0, 1]``. Non-finite values are dropped."""
    y = np.asarray(list(losses), dtype=float)
    y = y[np.isfinite(y)]
    if from_peak and y.size:
        y = y[int(np.argmax(y)) :]
    if y.size < 2:
        return np.zeros(y.size), np.zeros(y.size)
    lo, hi = float(y.min()), float(y.max())
    x = np.linspace(0.0, 1.0, y.size)
    return x, (y - lo) / (hi - lo) if hi > lo else np.zeros_like(y)


def flattening_rate(losses: Sequence[float], *, from_peak: bool = True) -> float:
    """The least-squares ``a`` of ``y = exp(a x)(1 - x)`` on the normalised curve ``losses``.

    Returns NaN for fewer than 3 points and ``-inf`` for a curve that does not move at all
    (nothing left to learn: as flat as a curve gets).

    >>> x = np.linspace(0, 1, 50)
    >>> round(flattening_rate(np.exp(-8 * x) * (1 - x)), 3)
    -8.0
    """
    x, y = normalise_curve(losses, from_peak=from_peak)
    if x.size < 3:
        return float("nan")
    if not y.any():
        return float("-inf")
    one_minus = 1.0 - x

    def sse(a: float) -> float:
        return float(np.sum((np.exp(a * x) * one_minus - y) ** 2))

    grid = np.arange(A_BOUNDS[0], A_BOUNDS[1] + 1e-9, 0.5)
    with np.errstate(over="ignore"):
        errors = ((np.exp(np.outer(grid, x)) * one_minus - y) ** 2).sum(axis=1)
    best = int(np.nanargmin(errors))
    lo = grid[max(best - 1, 0)]
    hi = grid[min(best + 1, grid.size - 1)]
    res = minimize_scalar(sse, bounds=(lo, hi), method="bounded", options={"xatol": 1e-6})
    a = float(res.x) if sse(float(res.x)) <= errors[best] else float(grid[best])
    return a


class FlatteningStop(Callback):
    """The stopping rule as a :class:`~structlab.training.Callback` of
    :func:`structlab.training.fit`: stop when ``a < threshold`` (after ``min_epochs``) or after
    ``max_epochs``.

    Args:
        max_epochs: the meta-parameter "maximum train epochs" (also pass it to ``fit``).
        threshold: the paper's ``-5``.
        min_epochs: epochs always trained (the authors' ``train_epoch_min``).
        smoothing: steps of the exponential moving average of the per-step losses (default: a
            fifth of an epoch, at least 1: no smoothing).
        min_points: fewest smoothed losses to fit.

    After training: ``epochs`` (trained), ``reason`` (``"flat"`` or ``"max_epochs"``), ``rate``
    (the last fitted ``a``), ``rates`` (one per epoch), ``curve`` (the smoothed losses).
    """

    def __init__(
        self,
        max_epochs: int,
        *,
        threshold: float = -5.0,
        min_epochs: int = 1,
        smoothing: int | None = None,
        min_points: int = 3,
    ) -> None:
        if max_epochs < 1:
            raise ValueError(f"max_epochs must be >= 1, got {max_epochs}")
        if min_epochs < 0:
            raise ValueError(f"min_epochs must be >= 0, got {min_epochs}")
        if smoothing is not None and smoothing < 1:
            raise ValueError(f"smoothing must be >= 1 step, got {smoothing}")
        self.max_epochs = int(max_epochs)
        self.threshold = float(threshold)
        self.min_epochs = int(min_epochs)
        self.smoothing = smoothing
        self.min_points = max(3, int(min_points))
        self._reset()

    def _reset(self) -> None:
        self.curve: list[float] = []
        self.rates: list[float] = []
        self.rate = float("nan")
        self.reason = "max_epochs"
        self.epochs = 0
        self._ema: float | None = None
        self._beta = 0.0

    def on_train_begin(self, state: TrainState) -> None:
        self._reset()
        steps = self.smoothing
        if steps is None:
            per_epoch = max(1, state.total_steps // max(1, self.max_epochs))
            steps = max(1, per_epoch // 5)
        self._beta = 1.0 - 1.0 / steps

    def on_step_end(self, state: TrainState) -> None:
        loss = float(state.loss)
        if not math.isfinite(loss):
            return
        self._ema = loss if self._ema is None else self._beta * self._ema + (1 - self._beta) * loss
        self.curve.append(self._ema)

    def on_epoch_end(self, state: TrainState) -> None:
        self.epochs = state.epoch + 1
        a = flattening_rate(self.curve) if len(self.curve) >= self.min_points else float("nan")
        self.rates.append(a)
        self.rate = a
        if self.epochs >= self.min_epochs and a < self.threshold:
            self.reason = "flat"
            state.stop = True
        elif self.epochs >= self.max_epochs:
            self.reason = "max_epochs"
            state.stop = True
