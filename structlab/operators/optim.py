"""Optimizer-state surgery: the optimizer follows the network when its parameters change shape.

When an operator replaces a parameter by a resized one (units added or removed), the optimizer
must (i) hold the new tensor instead of the old one in its parameter groups and (ii) carry the
per-parameter state (SGD's ``momentum_buffer``, Adam's ``exp_avg`` / ``exp_avg_sq`` /
``max_exp_avg_sq``) through the same index map: entries of surviving units keep their state, new
entries start at zero, and scalar state such as Adam's ``step`` is kept as is. Training then goes
on with the same optimizer object, without rebuilding it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

__all__ = ["replace_parameter", "zero_state_entries", "zero_state_at"]


def replace_parameter(
    optimizer: torch.optim.Optimizer | None,
    old: nn.Parameter,
    new: nn.Parameter,
    transform: Callable[[torch.Tensor], torch.Tensor],
) -> bool:
    """Swap ``old`` for ``new`` in ``optimizer`` and map its state with ``transform``.

    ``transform`` takes a tensor shaped like ``old`` and returns one shaped like ``new`` (selecting
    surviving entries and appending zeros for new ones). State tensors of another shape (scalars
    such as ``step``) are kept unchanged. Returns whether ``old`` was found in the optimizer.
    """
    if optimizer is None:
        return False
    found = False
    for group in optimizer.param_groups:
        params = group["params"]
        for i, p in enumerate(params):
            if p is old:
                params[i] = new
                found = True
    if not found:
        return False
    state = optimizer.state.pop(old, None)
    if state:
        carried = {}
        for key, value in state.items():
            if torch.is_tensor(value) and value.shape == old.shape:
                carried[key] = transform(value.detach()).to(value.dtype).contiguous()
            else:
                carried[key] = value
        optimizer.state[new] = carried
    return True


@torch.no_grad()
def zero_state_entries(
    optimizer: torch.optim.Optimizer | None, param: torch.Tensor, where: torch.Tensor
) -> None:
    """Zero the optimizer state of ``param`` at the boolean positions ``where`` (same shape).

    Used when connections are pruned or revived, so that a momentum or Adam moment accumulated
    before the change does not move a weight that should be zero or that starts afresh.
    """
    if optimizer is None or param not in optimizer.state:
        return
    for value in optimizer.state[param].values():
        if torch.is_tensor(value) and value.shape == param.shape:
            value.masked_fill_(where.to(value.device), 0)


@torch.no_grad()
def zero_state_at(
    optimizer: torch.optim.Optimizer | None, param: torch.Tensor, index: torch.Tensor
) -> None:
    """Zero the optimizer state of ``param`` at the flat positions ``index`` (int64): the same
    as :func:`zero_state_entries` for a sparse set of entries, without a full-size mask."""
    if optimizer is None or param not in optimizer.state or index.numel() == 0:
        return
    for value in optimizer.state[param].values():
        if torch.is_tensor(value) and value.shape == param.shape:
            _flat(value).index_fill_(0, index.to(value.device), 0)


def _flat(tensor: torch.Tensor) -> torch.Tensor:
    """A flat view of ``tensor`` that writes through (it must be contiguous)."""
    if not tensor.is_contiguous():
        raise ValueError("in-place surgery on flat positions needs a contiguous tensor")
    return tensor.view(-1)
