"""The toy data of appendix B (Fig. 6): two-spiral classification and a 2D grid regression.

Both are generated from a seed by :mod:`structlab.data.toy` (also registered as the datasets
``"two-spirals"`` and ``"regression-2d"``); these helpers return the train and test splits at once
and the grid on which the chapter draws decision surfaces and fitted functions. The paper does not
give the regression function (its figure did not survive); the book's choice is
``sin(pi x1) cos(pi x2 / 2) + x1 x2 / 2`` on ``[-1, 1]^2``.
"""

from __future__ import annotations

import torch

from structlab.data.base import LabelledTensors
from structlab.data.toy import make_regression_2d, make_two_spirals

__all__ = ["two_spirals", "regression_2d", "grid_inputs"]


def two_spirals(
    *, n_samples: int = 1000, turns: float = 1.75, noise: float = 0.02, seed: int = 0
) -> tuple[LabelledTensors, LabelledTensors]:
    """(train, test) of two interleaved spirals in ``[-1, 1]^2``, one per class, 20 % test."""
    kw = dict(n_samples=n_samples, turns=turns, noise=noise, seed=seed)
    return make_two_spirals("train", **kw), make_two_spirals("test", **kw)


def regression_2d(
    *, grid: int = 40, noise: float = 0.0, seed: int = 0
) -> tuple[LabelledTensors, LabelledTensors]:
    """(train, test) of the 2D regression surface sampled on a ``grid`` x ``grid`` lattice."""
    kw = dict(grid=grid, noise=noise, seed=seed)
    return make_regression_2d("train", **kw), make_regression_2d("test", **kw)


def grid_inputs(
    n: int = 100, extent: float = 1.1
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x1, x2, points)``: an ``n`` x ``n`` mesh of ``[-extent, extent]^2`` and its points
    ``(n*n, 2)`` (row-major, ``x1`` along columns), for decision surfaces."""
    if n < 2:
        raise ValueError(f"n must be at least 2, got {n}")
    axis = torch.linspace(-extent, extent, n)
    x2, x1 = torch.meshgrid(axis, axis, indexing="ij")
    return x1, x2, torch.stack([x1.reshape(-1), x2.reshape(-1)], dim=1)
