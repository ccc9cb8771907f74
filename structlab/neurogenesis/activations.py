"""The modified ReLU of thesis §6.3.1.

GradMax initializes new neurons with zero fan-in, so their pre-activation is exactly 0 and their
fan-in only receives a gradient if the activation's derivative at 0 is non-zero. The thesis
therefore uses ``sigma(x) = 0 for x < 0, x for x >= 0``: the same values as
``max(0, x)``, but derivative 1 at 0 (PyTorch's ``relu`` has derivative 0 there).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ModifiedReLU", "modified_relu"]


class _ModifiedReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        mask = x >= 0
        ctx.save_for_backward(mask)
        return x * mask

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (mask,) = ctx.saved_tensors
        return grad * mask


def modified_relu(x: torch.Tensor) -> torch.Tensor:
    """``x`` where ``x >= 0`` else 0, with derivative 1 at 0 (§6.3.1)."""
    return _ModifiedReLU.apply(x)


class ModifiedReLU(nn.Module):
    """Module form of :func:`modified_relu` (pass ``ModifiedReLU`` as a model's activation)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return modified_relu(x)
