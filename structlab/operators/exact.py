"""Networks in exact (dyadic, float64) arithmetic, to test function preservation bit for bit.

With weights and inputs that are small multiples of 1/4 (inputs 1/8) in float64, and BatchNorm with
``eps = 0`` and ``running_var = 1``, every sum of the forward pass is exact, so two networks that
compute the same function give *bit-identical* outputs whatever order the sums are taken in.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["dyadic", "exact_input", "make_exact"]


def dyadic(shape, generator: torch.Generator, scale: int = 2, denominator: int = 4) -> torch.Tensor:
    """Random multiples of ``1 / denominator`` in ``[-scale, scale] / denominator``, float64."""
    low, high = -scale, scale + 1
    return torch.randint(low, high, tuple(shape), generator=generator).double() / denominator


@torch.no_grad()
def make_exact(model: nn.Module, seed: int = 0) -> nn.Module:
    """Cast ``model`` to float64 and give it dyadic parameters and exact BatchNorm statistics."""
    g = torch.Generator().manual_seed(seed)
    model.double()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            m.eps = 0.0
            m.running_mean.copy_(dyadic(m.running_mean.shape, g))
            m.running_var.fill_(1.0)
            m.weight.copy_(torch.randint(1, 3, m.weight.shape, generator=g).double())
            m.bias.copy_(dyadic(m.bias.shape, g))
        elif isinstance(m, nn.Linear | nn.Conv2d):
            m.weight.copy_(dyadic(m.weight.shape, g))
            if m.bias is not None:
                m.bias.copy_(dyadic(m.bias.shape, g))
    return model


def exact_input(shape, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 9, tuple(shape), generator=g).double() / 8
