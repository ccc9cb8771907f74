"""Neuron creation and neuron removal (thesis §3.1), for dense neurons and convolutional channels.

Both operators act on a :class:`~structlab.models.LayerSlot`: every tensor holding one entry per
unit of the slot is resized along its unit dimension (dim 0 of producer weights and biases, the
BatchNorm parameters and running statistics, dim 1 of consumer weights, ``spatial`` columns per
unit at a flatten boundary). Pruning masks and optimizer state follow the same index map.

**Creation.** A new unit ``u`` of a dense layer computes ``h_u = sigma(a_u . x + b_u)`` and feeds
``W_next[:, u] h_u`` into the next layer. With zero fan-out (``W_next[:, u] = 0``) nothing
downstream changes; with zero fan-in and zero bias, ``a_u . x + b_u = 0`` and, for an activation
with ``sigma(0) = 0`` (ReLU, tanh, LeakyReLU, ...), ``h_u = 0``. Either way the network computes
exactly the same function after the operator: a network morphism (thesis §3.4.1, "Impact on
Weight Optimization"). A new BatchNorm entry starts with ``running_mean = 0``, ``running_var = 1``,
``gamma = 1``, ``beta = 0``, so in evaluation mode it maps the zero pre-activation of a zero-fan-in
unit to zero.

**Removal.** Removing unit ``u`` deletes its fan-in row, bias, normalisation entries and fan-out
column (thesis Fig. 4, "neural pruning"): the result is the network built without that unit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from structlab.models.slots import LayerSlot
from structlab.operators._common import is_masked, resolve_slot
from structlab.operators.optim import replace_parameter

__all__ = ["add_units", "remove_units", "FanSpec"]

#: A fan-in / fan-out specification: ``None`` (the default for that side), ``"zeros"``,
#: ``"default"`` (PyTorch's default initialisation), a tensor (single producer / consumer) or one
#: entry per producer / consumer.
FanSpec = None | str | torch.Tensor | Sequence[torch.Tensor | str | None]


def _resize(
    t: torch.Tensor, dim: int, keep: torch.Tensor | None, extra: torch.Tensor | None
) -> torch.Tensor:
    if keep is not None:
        t = t.index_select(dim, keep.to(t.device))
    if extra is not None:
        t = torch.cat([t, extra.to(device=t.device, dtype=t.dtype)], dim)
    return t


def _zeros_like_extra(t: torch.Tensor, dim: int, n: int) -> torch.Tensor | None:
    if n == 0:
        return None
    shape = list(t.shape)
    shape[dim] = n
    return t.new_zeros(shape)


@torch.no_grad()
def _resize_tensor_attr(
    module: nn.Module,
    name: str,
    dim: int,
    keep: torch.Tensor | None,
    extra: torch.Tensor | None,
    optimizer: torch.optim.Optimizer | None,
) -> None:
    """Resize ``module.<name>`` (parameter, masked parameter or buffer) along ``dim``."""
    masked = is_masked(module, name)
    pname = name + "_orig" if masked else name
    old = getattr(module, pname, None)
    if old is None:
        return
    n_new = 0 if extra is None else extra.shape[dim]
    new_value = _resize(old.detach(), dim, keep, extra)
    if isinstance(old, nn.Parameter):
        new = nn.Parameter(new_value.contiguous(), requires_grad=old.requires_grad)
        setattr(module, pname, new)

        def transform(state: torch.Tensor) -> torch.Tensor:
            return _resize(state, dim, keep, _zeros_like_extra(state, dim, n_new))

        replace_parameter(optimizer, old, new, transform)
        if masked:
            mask = getattr(module, name + "_mask")
            extra_mask = None
            if n_new:
                shape = list(mask.shape)
                shape[dim] = n_new
                extra_mask = mask.new_ones(shape)
            new_mask = _resize(mask, dim, keep, extra_mask).contiguous()
            setattr(module, name + "_mask", new_mask)
            setattr(module, name, new * new_mask)
    else:  # a buffer
        setattr(module, pname, new_value.contiguous())


def _set_sizes(module: nn.Module) -> None:
    w = getattr(module, "weight_orig", None)
    if w is None:
        w = module.weight
    if isinstance(module, nn.Linear):
        module.out_features, module.in_features = int(w.shape[0]), int(w.shape[1])
    elif isinstance(module, nn.Conv2d):
        module.out_channels, module.in_channels = int(w.shape[0]), int(w.shape[1])


def _check_module(module: nn.Module, slot: LayerSlot) -> None:
    if isinstance(module, nn.Conv2d) and module.groups != 1:
        raise NotImplementedError(f"slot {slot.name}: grouped convolutions are not supported")
    if not isinstance(module, nn.Linear | nn.Conv2d):
        raise TypeError(f"slot {slot.name}: cannot resize {type(module).__name__}")


def _per_item(spec: FanSpec, n: int, what: str) -> list[torch.Tensor | str | None]:
    if spec is None or isinstance(spec, str) or torch.is_tensor(spec):
        if torch.is_tensor(spec) and n != 1:
            raise ValueError(f"{what}: this slot has {n} modules; pass a list of {n} tensors")
        return [spec] * n
    items = list(spec)
    if len(items) != n:
        raise ValueError(f"{what}: expected {n} entries (one per module), got {len(items)}")
    return items


def _uniform(shape: Sequence[int], fan: int, like: torch.Tensor, generator) -> torch.Tensor:
    """PyTorch's default ``Linear`` / ``Conv2d`` init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(max(fan, 1))
    t = torch.rand(tuple(shape), generator=generator, dtype=torch.float32)
    return ((2 * t - 1) * bound).to(device=like.device, dtype=like.dtype)


def _fan_tensor(
    spec: torch.Tensor | str | None,
    shape: Sequence[int],
    fan: int,
    like: torch.Tensor,
    generator,
    default: str,
    what: str,
) -> torch.Tensor:
    spec = default if spec is None else spec
    if isinstance(spec, str):
        if spec == "zeros":
            return like.new_zeros(tuple(shape))
        if spec == "default":
            return _uniform(shape, fan, like, generator)
        raise ValueError(f"{what}: unknown initialisation {spec!r} (use 'zeros' or 'default')")
    t = spec.detach()
    if tuple(t.shape) != tuple(shape):
        # a dense consumer at a flatten boundary may get (out, k, spatial) or (out, k * spatial)
        if t.numel() == math.prod(shape) and t.shape[0] == shape[0]:
            t = t.reshape(tuple(shape))
        else:
            raise ValueError(f"{what}: expected shape {tuple(shape)}, got {tuple(t.shape)}")
    return t.to(device=like.device, dtype=like.dtype)


@torch.no_grad()
def add_units(
    model: nn.Module,
    slot: int | str | LayerSlot,
    k: int,
    *,
    fan_in: FanSpec = None,
    fan_out: FanSpec = None,
    bias: torch.Tensor | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    generator: torch.Generator | None = None,
) -> LayerSlot:
    """Neuron creation: append ``k`` units to ``slot`` of ``model`` (thesis §3.1, §3.4.3).

    Args:
        model: a model with ``layer_slots()`` (see :mod:`structlab.models`).
        slot: index, name or :class:`LayerSlot`.
        k: number of units to add (0 is a no-op).
        fan_in: incoming weights of the new units, shaped like the producer's new rows,
            ``(k, in)`` for ``nn.Linear`` or ``(k, C_in, kh, kw)`` for ``nn.Conv2d``; one tensor per
            producer for a residual group. ``None`` or ``"default"``: PyTorch's default init
            ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``; ``"zeros"``: zero fan-in.
        fan_out: outgoing weights, ``(out, k)`` for a dense consumer (``(out, k, spatial)`` or
            ``(out, k * spatial)`` at a flatten boundary) or ``(C_out, k, kh, kw)`` for a
            convolution; one per consumer for several consumers. ``None`` or ``"zeros"``: zero
            fan-out; ``"default"``: PyTorch's default init.
        bias: biases of the new units in every producer that has one, shape ``(k,)``; default 0.
        optimizer: an optimizer over ``model``'s parameters to update in place (state of the new
            entries starts at zero).
        generator: random generator for ``"default"`` initialisations.

    Zero fan-in (with zero bias and an activation with ``sigma(0) = 0``) or zero fan-out leaves
    the function of the network exactly unchanged (in evaluation mode if there is BatchNorm).

    Returns:
        The slot, now ``k`` units wider; the new units are the last ``k`` indices.
    """
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"k must be an int, got {type(k).__name__}")
    if k < 0:
        raise ValueError(f"k must be non-negative, got {k}")
    s = resolve_slot(model, slot)
    for m in s.producers:
        _check_module(m, s)
    for c in s.consumers:
        _check_module(c.module, s)
    if k == 0:
        return s
    fan_ins = _per_item(fan_in, len(s.producers), "fan_in")
    fan_outs = _per_item(fan_out, len(s.consumers), "fan_out")
    if bias is not None:
        bias = bias.detach().reshape(-1)
        if bias.numel() != k:
            raise ValueError(f"bias: expected {k} values, got {bias.numel()}")

    for module, spec in zip(s.producers, fan_ins):
        w = getattr(module, "weight_orig", module.weight)
        shape = (k, *w.shape[1:])
        fan = math.prod(w.shape[1:])
        new_rows = _fan_tensor(spec, shape, fan, w, generator, "default", f"fan_in of {s.name}")
        _resize_tensor_attr(module, "weight", 0, None, new_rows, optimizer)
        if getattr(module, "bias", None) is not None:
            b = getattr(module, "bias_orig", module.bias)
            extra = b.new_zeros(k) if bias is None else bias.to(b)
            _resize_tensor_attr(module, "bias", 0, None, extra, optimizer)
        _set_sizes(module)

    for norm in s.norms:
        _resize_norm(norm, None, k, optimizer)

    for consumer, spec in zip(s.consumers, fan_outs):
        module = consumer.module
        w = getattr(module, "weight_orig", module.weight)
        shape = (w.shape[0], k * consumer.spatial, *w.shape[2:])
        fan = math.prod(w.shape[1:])
        new_cols = _fan_tensor(spec, shape, fan, w, generator, "zeros", f"fan_out of {s.name}")
        _resize_tensor_attr(module, "weight", 1, None, new_cols, optimizer)
        _set_sizes(module)
    return s


def _resize_norm(
    norm: nn.Module,
    keep: torch.Tensor | None,
    k: int,
    optimizer: torch.optim.Optimizer | None,
) -> None:
    if not isinstance(norm, nn.BatchNorm1d | nn.BatchNorm2d):
        raise TypeError(f"cannot resize normalisation {type(norm).__name__}")
    n = norm.num_features if keep is None else int(keep.numel())
    ref = norm.running_mean if norm.running_mean is not None else norm.weight
    ones = ref.new_ones(k) if (k and ref is not None) else None
    zeros = ref.new_zeros(k) if (k and ref is not None) else None
    if norm.affine:
        _resize_tensor_attr(norm, "weight", 0, keep, ones, optimizer)
        _resize_tensor_attr(norm, "bias", 0, keep, zeros, optimizer)
    if norm.track_running_stats and norm.running_mean is not None:
        _resize_tensor_attr(norm, "running_mean", 0, keep, zeros, optimizer)
        _resize_tensor_attr(norm, "running_var", 0, keep, ones, optimizer)
    norm.num_features = n + k


def _keep_indices(width: int, indices: torch.Tensor | Sequence[int], name: str) -> torch.Tensor:
    idx = torch.as_tensor(indices, dtype=torch.long).reshape(-1).cpu()
    if idx.numel() and (idx.min() < 0 or idx.max() >= width):
        raise IndexError(f"slot {name}: unit indices must lie in [0, {width}), got {idx.tolist()}")
    if torch.unique(idx).numel() != idx.numel():
        raise ValueError(f"slot {name}: duplicate unit indices {idx.tolist()}")
    if idx.numel() >= width:
        raise ValueError(f"slot {name}: cannot remove all {width} units")
    drop = torch.zeros(width, dtype=torch.bool)
    drop[idx] = True
    return torch.nonzero(~drop).reshape(-1)


@torch.no_grad()
def remove_units(
    model: nn.Module,
    slot: int | str | LayerSlot,
    indices: torch.Tensor | Sequence[int],
    *,
    optimizer: torch.optim.Optimizer | None = None,
) -> LayerSlot:
    """Neuron removal: delete units ``indices`` of ``slot`` (thesis §3.1, §3.3.3, Fig. 4).

    Removes the units' fan-in rows and biases in every producer, their BatchNorm entries and
    their fan-out columns in every consumer (``spatial`` columns each at a flatten boundary).
    The surviving units keep their order, their weights and their optimizer state; pruning masks
    shrink with them. The result computes what a network built without those units computes.

    Raises ``IndexError`` for indices out of range and ``ValueError`` for duplicates or for
    removing every unit of the slot.
    """
    s = resolve_slot(model, slot)
    for m in s.producers:
        _check_module(m, s)
    for c in s.consumers:
        _check_module(c.module, s)
    keep = _keep_indices(s.width, indices, s.name)
    if keep.numel() == s.width:
        return s
    for module in s.producers:
        _resize_tensor_attr(module, "weight", 0, keep, None, optimizer)
        if getattr(module, "bias", None) is not None:
            _resize_tensor_attr(module, "bias", 0, keep, None, optimizer)
        _set_sizes(module)
    for norm in s.norms:
        _resize_norm(norm, keep, 0, optimizer)
    for consumer in s.consumers:
        sp = consumer.spatial
        cols = (keep[:, None] * sp + torch.arange(sp)[None, :]).reshape(-1)
        _resize_tensor_attr(consumer.module, "weight", 1, cols, None, optimizer)
        _set_sizes(consumer.module)
    return s
