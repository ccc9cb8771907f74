"""The toy loss landscape of thesis Fig. 5 (§3.3.2; after Hoefler et al. 2021, Fig. 5).

A two-parameter loss ``L(w1, w2)`` whose restriction to the line ``w2 = 0`` has a local minimum
``s1`` and a global minimum, separated by a barrier:

    L(w1, w2) = b (w1 + 1)^2 + 1/2 (w2 - phi(w1))^2,   phi(w1) = c exp(-(w1 - m)^2 / s).

Minimising over ``w2`` gives ``b (w1 + 1)^2``, a single basin, so with the second parameter
(``w2``) gradient descent reaches the global minimum ``(-1, phi(-1))`` from anywhere. On the line
``w2 = 0`` the loss is ``b (w1 + 1)^2 + phi(w1)^2 / 2``: the bump ``phi^2 / 2`` creates the local
minimum ``s1`` at positive ``w1``. Creating ``w2`` at 0 (neuron creation with zero weight) leaves
the loss unchanged, yet ``dL/dw2 = -phi(w1) != 0`` there, so descent leaves the line and escapes;
pruning ``w2`` back to 0 before ``w1`` has crossed the barrier traps descent in ``s1`` again.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ToyLandscape", "descend"]


@dataclass(frozen=True)
class ToyLandscape:
    """``L(w1, w2) = b (w1 + 1)^2 + (w2 - c exp(-(w1 - m)^2 / s))^2 / 2`` (see module doc)."""

    b: float = 0.25
    c: float = 2.0
    m: float = 0.0
    s: float = 0.5

    def phi(self, w1):
        return self.c * np.exp(-((np.asarray(w1) - self.m) ** 2) / self.s)

    def loss(self, w1, w2):
        w1, w2 = np.asarray(w1, float), np.asarray(w2, float)
        return self.b * (w1 + 1) ** 2 + 0.5 * (w2 - self.phi(w1)) ** 2

    def grad(self, w1: float, w2: float) -> tuple[float, float]:
        p = float(self.phi(w1))
        dp = p * (-2.0 * (w1 - self.m) / self.s)
        return 2 * self.b * (w1 + 1) - (w2 - p) * dp, w2 - p

    def line_minima(self, lo: float = -3.0, hi: float = 3.0, n: int = 60001) -> np.ndarray:
        """Local minima of the 1-D loss ``L(w1, 0)`` on a grid (sorted by ``w1``)."""
        xs = np.linspace(lo, hi, n)
        f = self.loss(xs, 0.0)
        idx = np.nonzero((f[1:-1] < f[:-2]) & (f[1:-1] < f[2:]))[0] + 1
        return xs[idx]

    @property
    def global_minimum(self) -> tuple[float, float]:
        return -1.0, float(self.phi(-1.0))


def descend(
    landscape: ToyLandscape,
    start: tuple[float, float],
    *,
    steps: int = 2000,
    lr: float = 0.1,
    two_d_from: int | None = 0,
    prune_at: int | None = None,
    noise: float = 0.0,
    seed: int = 0,
) -> np.ndarray:
    """(Stochastic) gradient descent on ``landscape``; returns the ``(steps + 1, 2)`` trajectory.

    Args:
        start: initial ``(w1, w2)``.
        two_d_from: step at which ``w2`` is created (starts training); ``None`` keeps descent
            one-dimensional. ``0`` trains both from the start.
        prune_at: step at which ``w2`` is pruned: set to 0 and frozen.
        noise: standard deviation of Gaussian noise added to the gradient (the "stochastic" of
            Fig. 5); deterministic for a given ``seed``.
    """
    if steps < 0 or lr <= 0:
        raise ValueError("steps must be >= 0 and lr > 0")
    rng = np.random.default_rng(seed)
    w = np.array(start, dtype=float)
    active = two_d_from == 0
    path = [w.copy()]
    for t in range(steps):
        if two_d_from is not None and t == two_d_from:
            active = True
        if prune_at is not None and t == prune_at:
            active = False
            w[1] = 0.0
        g = np.array(landscape.grad(w[0], w[1]))
        if noise:
            g = g + noise * rng.standard_normal(2)
        w[0] -= lr * g[0]
        if active:
            w[1] -= lr * g[1]
        path.append(w.copy())
    return np.array(path)
