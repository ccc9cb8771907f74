"""Synaptic pruning and synaptogenesis through connection masks (thesis §3.3.2, §3.4.2).

A masked module keeps its trainable weight as ``weight_orig`` and a 0/1 buffer ``weight_mask``;
before every forward pass ``weight = weight_orig * weight_mask`` is recomputed (the mechanism of
``torch.nn.utils.prune``, which installs it). So the mask stays applied through any number of
optimizer steps, and the gradient reaching ``weight_orig`` is zero at masked positions. Setting a
mask entry back to 1 revives the connection: pruning through masks is *ephemeral* (§3.3.1,
"Handling Pruned Entities").

Scores used to choose connections (§3.3.1, "Measuring Entities"):

* ``"magnitude"``: ``|w|`` (Han et al. 2015);
* ``"taylor"``: the first-order Taylor estimate of the loss change when ``w`` is set to zero,
  ``|w * dL/dw|`` (cf. LeCun et al. 1990; Lee et al. 2019 "SNIP" use the same connection
  sensitivity);
* ``"random"``: uniform random scores.

Synaptogenesis (§3.4.2, "Measuring Entities") activates *dormant* (masked) connections. A masked
weight is exactly zero in the forward pass but still has a gradient ``dL/dw`` with respect to its
(zero) effective value; NeST (Dai et al. 2019) grows the dormant connections with the largest
``|dL/dw|``, the connections whose activation would reduce the loss fastest. Bellec et al. (2018)
revive dormant connections at random. :func:`connection_gradients` computes ``dL/dw`` for every
connection, dormant or not.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune as torch_prune

from structlab.operators._common import is_masked, weight_param
from structlab.operators.optim import _flat, zero_state_at, zero_state_entries

__all__ = [
    "PRUNING_METHODS",
    "GROWTH_METHODS",
    "prunable_modules",
    "get_mask",
    "set_mask",
    "remove_masks",
    "sparsity",
    "connection_gradients",
    "connection_scores",
    "prune_unstructured",
    "prune_global",
    "regrow_connections",
    "step_amount",
]

PRUNING_METHODS = ("magnitude", "taylor", "random")
GROWTH_METHODS = ("gradient", "random")
Modules = nn.Module | Sequence[nn.Module]


def prunable_modules(model: nn.Module, *, include_output: bool = True) -> list[nn.Module]:
    """Every ``nn.Linear`` and ``nn.Conv2d`` of ``model`` in registration order.

    With ``include_output=False`` the last of them (the classifier) is left out.
    """
    mods = [m for m in model.modules() if isinstance(m, nn.Linear | nn.Conv2d)]
    return mods[:-1] if (not include_output and mods) else mods


def _as_modules(target: Modules) -> list[nn.Module]:
    if isinstance(target, nn.Linear | nn.Conv2d):
        return [target]
    if isinstance(target, nn.Module):
        return prunable_modules(target)
    mods = list(target)
    for m in mods:
        if not isinstance(m, nn.Linear | nn.Conv2d):
            raise TypeError(f"only nn.Linear and nn.Conv2d can be masked, got {type(m).__name__}")
    return mods


def get_mask(module: nn.Module) -> torch.Tensor:
    """The 0/1 connection mask of ``module`` (all ones if it has never been masked)."""
    if is_masked(module):
        return module.weight_mask
    return torch.ones_like(module.weight)


@torch.no_grad()
def set_mask(
    module: nn.Module,
    mask: torch.Tensor,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    revive_value: torch.Tensor | float = 0.0,
) -> None:
    """Install or replace the connection mask of ``module``.

    Newly masked connections get ``weight_orig = 0`` and zero optimizer state (so a momentum
    accumulated before pruning does not move them); newly revived connections start from
    ``revive_value`` (a scalar or a tensor shaped like the weight) with zero optimizer state.
    """
    mask = mask.to(device=weight_param(module).device, dtype=weight_param(module).dtype)
    if mask.shape != weight_param(module).shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} != weight {tuple(module.weight.shape)}")
    if not is_masked(module):
        torch_prune.custom_from_mask(module, "weight", torch.ones_like(mask))
    old = module.weight_mask
    orig = module.weight_orig
    pruned = (old > 0) & (mask == 0)
    revived = (old == 0) & (mask > 0)
    orig.masked_fill_(pruned, 0.0)
    if revived.any():
        value = torch.as_tensor(revive_value, device=orig.device, dtype=orig.dtype)
        orig.copy_(torch.where(revived, value.expand_as(orig), orig))
    zero_state_entries(optimizer, orig, pruned | revived)
    module.weight_mask.copy_(mask)
    module.weight = orig * module.weight_mask


def remove_masks(model: Modules) -> None:
    """Make the current masks permanent: ``weight`` becomes a plain parameter again."""
    for m in _as_modules(model):
        if is_masked(m):
            torch_prune.remove(m, "weight")


def sparsity(model: Modules) -> float:
    """Fraction of masked (zero) connections over the weights of the given modules."""
    mods = _as_modules(model)
    total = sum(weight_param(m).numel() for m in mods)
    zeros = sum(int((get_mask(m) == 0).sum()) for m in mods)
    return zeros / max(total, 1)


def step_amount(current: float, target: float) -> float:
    """Fraction of the *active* connections to prune to go from sparsity ``current`` to
    ``target`` (for iterative schedules): ``1 - (1 - target) / (1 - current)``."""
    if not 0 <= current <= target < 1:
        raise ValueError(f"need 0 <= current <= target < 1, got {current}, {target}")
    return 1.0 - (1.0 - target) / (1.0 - current)


def connection_gradients(
    model: nn.Module,
    data: Iterable,
    *,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    device: str | torch.device = "cpu",
    max_batches: int | None = None,
    modules: Sequence[nn.Module] | None = None,
) -> dict[nn.Module, torch.Tensor]:
    """``dL/dw`` with respect to the *effective* weight of every prunable module, dormant
    connections included, averaged over the batches of ``data`` (an iterable of
    ``(inputs, targets)``).

    The model's own ``.grad`` fields are left as they were (``None`` afterwards: they are reset).
    """
    loss_fn = loss_fn or F.cross_entropy
    mods = list(modules) if modules is not None else prunable_modules(model)
    sums = {m: torch.zeros_like(weight_param(m)) for m in mods}
    captured: dict[nn.Module, torch.Tensor] = {}

    def hook(module, _inp, _out):
        w = module.weight
        if not w.is_leaf:
            w.retain_grad()
        captured[module] = w

    handles = [m.register_forward_hook(hook) for m in mods]
    was_training = model.training
    n = 0
    try:
        for i, (x, y) in enumerate(data):
            if max_batches is not None and i >= max_batches:
                break
            model.zero_grad(set_to_none=True)
            captured.clear()
            loss = loss_fn(model(x.to(device)), y.to(device))
            loss.backward()
            for m in mods:
                w = captured.get(m)
                if w is not None and w.grad is not None:
                    sums[m] += w.grad.detach()
            n += 1
    finally:
        for h in handles:
            h.remove()
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    if n == 0:
        raise ValueError("connection_gradients needs at least one batch")
    return {m: s / n for m, s in sums.items()}


def connection_scores(
    module: nn.Module,
    method: str,
    *,
    gradient: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    granularity: str = "weight",
) -> torch.Tensor:
    """Importance of every connection of ``module`` (higher = keep), shaped like the weight.

    ``granularity="kernel"`` scores whole ``kh x kw`` kernels of a convolution (the sum of their
    connection scores, i.e. the L1 norm for ``"magnitude"``) and broadcasts the kernel score to
    its connections, so that pruning removes entire kernels (Anwar et al. 2017).
    """
    if method not in PRUNING_METHODS:
        raise ValueError(f"unknown pruning method {method!r}; choose from {PRUNING_METHODS}")
    if granularity not in ("weight", "kernel"):
        raise ValueError(f"granularity must be 'weight' or 'kernel', got {granularity!r}")
    w = weight_param(module).detach()
    if is_masked(module):
        w = w * module.weight_mask
    if method == "magnitude":
        scores = w.abs()
    elif method == "taylor":
        if gradient is None:
            raise ValueError("the 'taylor' score needs the gradient (see connection_gradients)")
        scores = (w * gradient.to(w)).abs()
    else:
        scores = torch.rand(w.shape, generator=generator).to(w)
    if granularity == "kernel" and scores.dim() == 4:
        scores = scores.sum(dim=(2, 3), keepdim=True).expand_as(scores).clone()
    return scores


def _check_amount(amount: float | int, available: int, what: str) -> int:
    if isinstance(amount, bool):
        raise TypeError(f"{what} must be a float fraction or an int count")
    if isinstance(amount, int):
        if amount < 0:
            raise ValueError(f"{what} must be non-negative, got {amount}")
        return min(amount, available)
    if not 0.0 <= float(amount) <= 1.0:
        raise ValueError(f"{what} as a fraction must lie in [0, 1], got {amount}")
    return int(round(float(amount) * available))


def _select_lowest(
    scores: list[torch.Tensor], eligible: list[torch.Tensor], n: int, granularity: str
) -> list[torch.Tensor]:
    """Boolean selections of the ``n`` eligible entries with the lowest scores, jointly."""
    flat_s, flat_e, sizes = [], [], []
    for s, e in zip(scores, eligible):
        if granularity == "kernel" and s.dim() == 4:
            s, e = s[:, :, :1, :1], e[:, :, :1, :1]  # one entry per kernel
        flat_s.append(s.reshape(-1).float().cpu())
        flat_e.append(e.reshape(-1).cpu())
        sizes.append(s.numel())
    s_all = torch.cat(flat_s)
    e_all = torch.cat(flat_e)
    s_all = torch.where(e_all, s_all, torch.full_like(s_all, float("inf")))
    chosen = torch.zeros_like(e_all)
    if n > 0:
        idx = torch.topk(s_all, n, largest=False, sorted=False).indices
        chosen[idx] = True
    out, start = [], 0
    for size, s in zip(sizes, scores):
        part = chosen[start : start + size]
        start += size
        if granularity == "kernel" and s.dim() == 4:
            part = part.reshape(s.shape[0], s.shape[1], 1, 1).expand(s.shape)
        out.append(part.reshape(s.shape).to(s.device))
    return out


#: Positions sampled per stride when :func:`lowest_entries` bounds its threshold first.
_SAMPLE_STRIDE = 64


def lowest_entries(scores: torch.Tensor, n: int) -> torch.Tensor:
    """Flat positions (int64, increasing) of the ``n`` smallest entries of the 1-d ``scores``;
    among equal scores at the threshold the lowest positions are taken.

    Exact, and linear in ``scores.numel()``: for large inputs a strided sample gives an upper
    bound of the threshold, so that the exact selection (``torch.kthvalue``) only runs on the
    entries below it; if the bound holds fewer than ``n`` entries, it runs on all of them.
    """
    total = scores.numel()
    if n <= 0:
        return torch.empty(0, dtype=torch.long, device=scores.device)
    if n >= total:
        return torch.arange(total, device=scores.device)
    candidates = None
    if total > 64 * _SAMPLE_STRIDE:
        sample = scores[::_SAMPLE_STRIDE]
        rank = min(sample.numel(), int(1.1 * n / _SAMPLE_STRIDE) + 64)
        bound = torch.kthvalue(sample, rank).values
        below = scores <= bound
        if int(below.sum()) >= n:
            candidates = below.nonzero().squeeze(1)
    if candidates is None:
        candidates = torch.arange(total, device=scores.device)
    values = scores[candidates]
    threshold = torch.kthvalue(values, n).values
    strict = candidates[values < threshold]
    ties = candidates[values == threshold][: n - strict.numel()]
    return torch.cat([strict, ties]).sort().values


def _per_module(positions: torch.Tensor, sizes: list[int]) -> list[torch.Tensor]:
    """Split increasing flat positions over consecutive blocks of ``sizes`` (local positions)."""
    bounds = torch.tensor([0, *sizes], device=positions.device).cumsum(0)
    cuts = torch.searchsorted(positions, bounds).tolist()
    return [positions[a:b] - bounds[i] for i, (a, b) in enumerate(zip(cuts[:-1], cuts[1:]))]


def _set_at(
    module: nn.Module,
    index: torch.Tensor,
    alive: bool,
    optimizer,
    value: torch.Tensor | None = None,
) -> None:
    """Index-based :func:`set_mask`: mask (``alive=False``) or revive (``alive=True``) the
    connections at flat positions ``index``. Their ``weight_orig`` becomes 0, or ``value``
    (one entry per position) when given, and their optimizer state is zeroed; every other entry
    is left untouched. A module without a mask gets one installed first."""
    if not is_masked(module):
        torch_prune.custom_from_mask(module, "weight", torch.ones_like(weight_param(module)))
    if index.numel() == 0:
        return
    orig, mask = module.weight_orig, module.weight_mask
    _flat(mask).index_fill_(0, index, 1.0 if alive else 0.0)
    if value is None:
        _flat(orig).index_fill_(0, index, 0.0)
    else:
        _flat(orig).index_copy_(0, index, value)
    zero_state_at(optimizer, orig, index)
    module.weight = orig * mask


def _units(mask: torch.Tensor, granularity: str) -> torch.Tensor:
    """The eligible-entry map at the chosen granularity (kernels alive if any entry is)."""
    if granularity == "kernel" and mask.dim() == 4:
        return (mask.amax(dim=(2, 3), keepdim=True) > 0).expand_as(mask)
    return mask > 0


@torch.no_grad()
def prune_global(
    target: Modules,
    amount: float | int,
    *,
    method: str = "magnitude",
    gradients: Mapping[nn.Module, torch.Tensor] | None = None,
    granularity: str = "weight",
    generator: torch.Generator | None = None,
    optimizer: torch.optim.Optimizer | None = None,
) -> dict[nn.Module, torch.Tensor]:
    """Synaptic pruning with one ranking over all modules of ``target`` (global pruning, §3.3.1).

    Args:
        target: a model (all its ``Linear`` / ``Conv2d`` modules) or a list of modules.
        amount: fraction of the currently *active* connections (or kernels) to prune, or an
            ``int`` count.
        method: ``"magnitude"``, ``"taylor"`` (needs ``gradients`` from
            :func:`connection_gradients`) or ``"random"``.
        granularity: ``"weight"`` or ``"kernel"`` (whole convolution kernels).
        optimizer: if given, the optimizer state of pruned connections is zeroed.

    Returns:
        The new mask of every module.
    """
    mods = _as_modules(target)
    if method == "taylor" and gradients is None:
        raise ValueError("the 'taylor' score needs gradients (see connection_gradients)")
    if granularity == "weight":
        return _prune_weights(mods, amount, method, gradients, generator, optimizer)
    scores = [
        connection_scores(
            m,
            method,
            gradient=None if gradients is None else gradients[m],
            generator=generator,
            granularity=granularity,
        )
        for m in mods
    ]
    eligible = [_units(get_mask(m), granularity) for m in mods]
    available = sum(
        int(e[:, :, :1, :1].sum()) if (granularity == "kernel" and e.dim() == 4) else int(e.sum())
        for e in eligible
    )
    n = _check_amount(amount, available, "amount")
    chosen = _select_lowest(scores, eligible, n, granularity)
    masks = {}
    for m, c in zip(mods, chosen):
        new = get_mask(m).clone()
        new[c] = 0
        set_mask(m, new, optimizer=optimizer)
        masks[m] = m.weight_mask
    return masks


def _prune_weights(mods, amount, method, gradients, generator, optimizer):
    """:func:`prune_global` for single connections: one flat ranking, index-based surgery."""
    flat, sizes = [], []
    available = 0
    for m in mods:
        s = connection_scores(
            m, method, gradient=None if gradients is None else gradients[m], generator=generator
        ).reshape(-1).float()
        if is_masked(m):
            active = m.weight_mask.reshape(-1) > 0
            s = torch.where(active, s, torch.full_like(s, float("inf")))
            available += int(active.sum())
        else:
            available += s.numel()
        flat.append(s.cpu())
        sizes.append(s.numel())
    n = _check_amount(amount, available, "amount")
    chosen = lowest_entries(torch.cat(flat), n)
    for m, index in zip(mods, _per_module(chosen, sizes)):
        _set_at(m, index.to(weight_param(m).device), False, optimizer)
    return {m: m.weight_mask for m in mods}


def prune_unstructured(
    target: Modules,
    amount: float | int,
    *,
    method: str = "magnitude",
    gradients: Mapping[nn.Module, torch.Tensor] | None = None,
    granularity: str = "weight",
    generator: torch.Generator | None = None,
    optimizer: torch.optim.Optimizer | None = None,
) -> dict[nn.Module, torch.Tensor]:
    """Synaptic pruning ranked *within* each module (local, layer-wise pruning, §3.3.1).

    Same arguments as :func:`prune_global`; ``amount`` applies to every module separately.
    """
    masks = {}
    for m in _as_modules(target):
        masks.update(
            prune_global(
                [m],
                amount,
                method=method,
                gradients=gradients,
                granularity=granularity,
                generator=generator,
                optimizer=optimizer,
            )
        )
    return masks


@torch.no_grad()
def regrow_connections(
    target: Modules,
    amount: float | int,
    *,
    method: str = "gradient",
    gradients: Mapping[nn.Module, torch.Tensor] | None = None,
    init: str = "zeros",
    step_size: float = 1e-2,
    scope: str = "global",
    generator: torch.Generator | None = None,
    optimizer: torch.optim.Optimizer | None = None,
) -> dict[nn.Module, torch.Tensor]:
    """Synaptogenesis: activate dormant (masked) connections (thesis §3.4.2).

    Args:
        target: a model or a list of modules; only connections that are masked now can grow.
        amount: an ``int`` number of connections, or a fraction of the dormant connections.
        method: ``"gradient"``, the NeST rule (grow where ``|dL/dw|`` of the dormant connection
            is largest; needs ``gradients`` from :func:`connection_gradients`), or ``"random"``.
        init: value of a grown connection: ``"zeros"`` (the function is unchanged and gradient
            descent takes over), ``"gradient"`` (``-step_size * dL/dw``, one descent step from 0),
            or ``"default"`` (PyTorch's default init range of the module).
        scope: ``"global"`` (one ranking over all modules) or ``"local"`` (``amount`` per module).
        optimizer: the optimizer state of grown connections is zeroed.

    Returns:
        The new mask of every module.
    """
    if method not in GROWTH_METHODS:
        raise ValueError(f"unknown growth method {method!r}; choose from {GROWTH_METHODS}")
    if init not in ("zeros", "gradient", "default"):
        raise ValueError(f"init must be 'zeros', 'gradient' or 'default', got {init!r}")
    if scope not in ("global", "local"):
        raise ValueError(f"scope must be 'global' or 'local', got {scope!r}")
    if (method == "gradient" or init == "gradient") and gradients is None:
        raise ValueError("gradient-based growth needs gradients (see connection_gradients)")
    mods = _as_modules(target)
    groups = [mods] if scope == "global" else [[m] for m in mods]
    masks = {}
    for group in groups:
        # only masked modules have dormant connections; the random scores are drawn for every
        # module of the group all the same, so the generator's stream does not depend on that
        dormant, scores, sizes = [], [], []
        for m in group:
            mask = get_mask(m).reshape(-1)
            d = (mask == 0).nonzero().squeeze(1)
            if method == "gradient":
                s = -gradients[m].reshape(-1).abs().to(mask)[d]
            else:
                s = torch.rand(mask.shape, generator=generator).to(mask)[d]
            dormant.append(d)
            scores.append(s.float().cpu())
            sizes.append(d.numel())
        n = _check_amount(amount, sum(sizes), "amount")
        chosen = lowest_entries(torch.cat(scores), n)
        for m, d, local in zip(group, dormant, _per_module(chosen, sizes)):
            index = d[local.to(d.device)]
            if init == "zeros":
                value = None
            elif init == "gradient":
                value = (-step_size * gradients[m].reshape(-1).to(weight_param(m)))[index]
            else:
                fan = weight_param(m)[0].numel()
                bound = 1.0 / fan**0.5
                draw = (2 * torch.rand(weight_param(m).shape, generator=generator) - 1) * bound
                value = draw.to(weight_param(m)).reshape(-1)[index]
            if is_masked(m):
                _set_at(m, index, True, optimizer, value)
            masks[m] = get_mask(m)
    return masks
