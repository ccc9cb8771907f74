"""Unit saliencies for neuron removal (thesis §3.3.3, "Measuring Entities").

Each function returns one score per unit of a slot. :func:`unit_saliency` orients every score as
an *importance*: the units with the lowest scores are the removal candidates. Scores:

* ``"weight_norm"``: ``||a_u||_p``, the norm of the unit's fan-in weights (over every producer of
  a residual group), as in filter pruning by weight norm (Li et al. 2017);
* ``"activation"``: the mean absolute post-activation ``E|h_u|`` over data and positions;
* ``"dormancy"``: ``1 - r_u`` with ``r_u`` the dormancy rate, the fraction of inputs (and spatial
  positions) where ``h_u <= threshold`` (a ReLU unit with ``r_u = 1`` is dead);
* ``"taylor"``: the first-order Taylor estimate of the loss change when the unit is removed,
  ``E_x |(1/M) sum_m h_{u,m} dL/dh_{u,m}|`` over the ``M`` positions of its map (Molchanov et al.
  2017);
* ``"redundancy"``: ``1 - max_{v != u} |cos(h_u, h_v)|``, with the cosine similarity of the
  post-activation vectors of two units over data and positions; a unit duplicated by another is
  the least important, and so is a unit that never fires (its vector is zero);
* ``"random"``: uniform random scores (the baseline).

Post-activations are read with a forward hook on ``slot.activation`` (for a WideResNet, switch
``model.residual_enabled`` off first to follow the thesis, §5.3.2).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from structlab.models.slots import LayerSlot
from structlab.operators._common import resolve_slot, weight_param
from structlab.operators.units import remove_units

__all__ = [
    "UNIT_SALIENCIES",
    "ActivationStats",
    "activation_statistics",
    "weight_norm_saliency",
    "taylor_saliency",
    "taylor_saliencies",
    "cosine_similarity_matrix",
    "unit_saliency",
    "lowest_units",
    "prune_units",
    "redundancy_matrix",
    "greedy_redundant_units",
]

UNIT_SALIENCIES = ("weight_norm", "activation", "dormancy", "taylor", "redundancy", "random")
SlotKey = int | str | LayerSlot


def _units_view(h: torch.Tensor) -> torch.Tensor:
    """Post-activations as ``(samples * positions, units)``."""
    if h.dim() == 2:
        return h
    if h.dim() > 2:  # (N, C, *spatial): channels last, then flatten samples and positions
        return h.movedim(1, -1).reshape(-1, h.shape[1])
    return h.reshape(-1, 1)


@dataclass
class ActivationStats:
    """Per-unit statistics of the post-activations ``h`` of one slot over a data set.

    ``mean``: ``E[h]``; ``abs_mean``: ``E|h|``; ``dormancy``: ``P(h <= threshold)``; ``gram``:
    ``sum h h^T`` over samples and positions (for cosine similarities); ``count``: samples times
    positions.
    """

    mean: torch.Tensor
    abs_mean: torch.Tensor
    dormancy: torch.Tensor
    gram: torch.Tensor
    count: int

    @property
    def cosine(self) -> torch.Tensor:
        """Cosine similarity between the post-activation vectors of every pair of units."""
        return _gram_to_cosine(self.gram)


def _gram_to_cosine(gram: torch.Tensor) -> torch.Tensor:
    norms = gram.diagonal().clamp_min(0).sqrt()
    denom = norms[:, None] * norms[None, :]
    cos = torch.where(denom > 0, gram / denom.clamp_min(1e-30), torch.zeros_like(gram))
    return cos


def _batches(data: Iterable, max_batches: int | None):
    for i, batch in enumerate(data):
        if max_batches is not None and i >= max_batches:
            break
        yield batch


@torch.no_grad()
def activation_statistics(
    model: nn.Module,
    slots: Sequence[SlotKey],
    data: Iterable,
    *,
    device: str | torch.device = "cpu",
    threshold: float = 0.0,
    max_batches: int | None = None,
) -> dict[str, ActivationStats]:
    """One pass over ``data`` (``(inputs, targets)`` batches) in evaluation mode, collecting
    :class:`ActivationStats` for every slot in ``slots``, keyed by slot name."""
    resolved = [resolve_slot(model, s) for s in slots]
    acc: dict[str, dict] = {s.name: {} for s in resolved}

    def make_hook(name):
        def hook(_m, _i, out):
            h = _units_view(out.detach()).double()
            a = acc[name]
            if not a:
                u = h.shape[1]
                a.update(
                    s=h.new_zeros(u),
                    abs=h.new_zeros(u),
                    dorm=h.new_zeros(u),
                    gram=h.new_zeros(u, u),
                    n=0,
                )
            a["s"] += h.sum(0)
            a["abs"] += h.abs().sum(0)
            a["dorm"] += (h <= threshold).double().sum(0)
            a["gram"] += h.t() @ h
            a["n"] += h.shape[0]

        return hook

    handles = []
    for s in resolved:
        if s.activation is None:
            raise ValueError(f"slot {s.name} has no activation module to observe")
        handles.append(s.activation.register_forward_hook(make_hook(s.name)))
    was_training = model.training
    model.eval()
    try:
        for x, *_ in _batches(data, max_batches):
            model(x.to(device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    out = {}
    for name, a in acc.items():
        if not a:
            raise ValueError(f"slot {name}: no activations were observed (empty data?)")
        n = a["n"]
        out[name] = ActivationStats(
            mean=(a["s"] / n).float(),
            abs_mean=(a["abs"] / n).float(),
            dormancy=(a["dorm"] / n).float(),
            gram=a["gram"].float(),
            count=n,
        )
    return out


def weight_norm_saliency(model: nn.Module, slot: SlotKey, p: float = 2.0) -> torch.Tensor:
    """``||a_u||_p`` over the fan-in weights (and biases excluded) of every producer of the slot.

    For a residual group the fan-ins of all producers writing into unit ``u`` are concatenated.
    """
    s = resolve_slot(model, slot)
    rows = []
    for m in s.producers:
        w = weight_param(m).detach()
        if hasattr(m, "weight_mask"):
            w = w * m.weight_mask
        rows.append(w.reshape(w.shape[0], -1))
    return torch.linalg.vector_norm(torch.cat(rows, dim=1), ord=p, dim=1)


def taylor_saliency(
    model: nn.Module,
    slot: SlotKey,
    data: Iterable,
    *,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    device: str | torch.device = "cpu",
    max_batches: int | None = None,
) -> torch.Tensor:
    """First-order Taylor saliency of each unit (Molchanov et al. 2017):
    ``E_x |(1/M) sum_m h_{u,m}(x) dL(x)/dh_{u,m}|``, ``M`` = spatial positions (1 for dense).

    Per-example gradients come from a loss summed over the batch (the default is
    ``cross_entropy(..., reduction="sum")``; a custom ``loss_fn`` should also sum).
    The model is run in evaluation mode; parameter ``.grad`` fields are reset afterwards.
    """
    s = resolve_slot(model, slot)
    return taylor_saliencies(
        model, [s], data, loss_fn=loss_fn, device=device, max_batches=max_batches
    )[s.name]


def taylor_saliencies(
    model: nn.Module,
    slots: Sequence[SlotKey],
    data: Iterable,
    *,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    device: str | torch.device = "cpu",
    max_batches: int | None = None,
) -> dict[str, torch.Tensor]:
    """:func:`taylor_saliency` for several slots in one pass over ``data``, keyed by name."""
    resolved = [resolve_slot(model, s) for s in slots]
    for s in resolved:
        if s.activation is None:
            raise ValueError(f"slot {s.name} has no activation module to observe")
    loss_fn = loss_fn or (lambda out, y: F.cross_entropy(out, y, reduction="sum"))
    captured: dict[str, torch.Tensor] = {}

    def make_hook(name):
        def hook(_m, _i, out):
            out.retain_grad()
            captured[name] = out

        return hook

    handles = [s.activation.register_forward_hook(make_hook(s.name)) for s in resolved]
    was_training = model.training
    model.eval()
    totals: dict[str, torch.Tensor] = {}
    count = 0
    try:
        for x, y in _batches(data, max_batches):
            captured.clear()
            model.zero_grad(set_to_none=True)
            loss = loss_fn(model(x.to(device)), y.to(device))
            loss.backward()
            for s in resolved:
                h = captured[s.name]
                prod = (h * h.grad).detach()
                per_example = prod.flatten(2).mean(2) if prod.dim() > 2 else prod
                contrib = per_example.abs().sum(0).double().cpu()
                totals[s.name] = totals[s.name] + contrib if s.name in totals else contrib
            count += int(x.shape[0])
    finally:
        for handle in handles:
            handle.remove()
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    if not count:
        raise ValueError("taylor_saliency needs at least one batch")
    return {name: (t / count).float() for name, t in totals.items()}


def cosine_similarity_matrix(h: torch.Tensor) -> torch.Tensor:
    """Cosine similarity between the columns (units) of post-activations ``h``
    (``(N, units)`` or ``(N, C, H, W)``); zero vectors have similarity 0 with everything."""
    v = _units_view(h).double()
    return _gram_to_cosine(v.t() @ v).float()


def redundancy_matrix(cosine: torch.Tensor, norms: torch.Tensor | None = None) -> torch.Tensor:
    """Row ``u``: how redundant unit ``u`` is with each other unit, ``|cos(h_u, h_v)|``, zero on
    the diagonal. A unit whose post-activation vector is zero (``norms == 0``: it never fires)
    counts as fully redundant (row of ones), since removing it changes nothing; it makes no other
    unit redundant (column of zeros)."""
    red = cosine.abs().clone()
    if norms is not None:
        dead = norms <= 0
        red[:, dead] = 0.0
        red[dead, :] = 1.0
    red.fill_diagonal_(0.0)
    return red


def greedy_redundant_units(redundancy: torch.Tensor, k: int) -> torch.Tensor:
    """Pick ``k`` units to remove, one at a time: the unit most similar to a surviving unit,
    then re-measure among the survivors (so of a duplicated pair only one goes)."""
    if not 0 <= k < redundancy.shape[0]:
        raise ValueError(f"k must lie in [0, {redundancy.shape[0]}), got {k}")
    keep = torch.ones(redundancy.shape[0], dtype=torch.bool)
    removed = []
    for _ in range(k):
        alive = torch.nonzero(keep).reshape(-1)
        sub = redundancy[alive][:, alive]
        worst = int(alive[int(torch.argmax(sub.max(dim=1).values))])
        keep[worst] = False
        removed.append(worst)
    return torch.tensor(sorted(removed), dtype=torch.long)


def unit_saliency(
    model: nn.Module,
    slot: SlotKey,
    method: str,
    *,
    data: Iterable | None = None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    device: str | torch.device = "cpu",
    max_batches: int | None = None,
    threshold: float = 0.0,
    p: float = 2.0,
    generator: torch.Generator | None = None,
    stats: ActivationStats | None = None,
) -> torch.Tensor:
    """Importance of every unit of ``slot`` by ``method`` (one of :data:`UNIT_SALIENCIES`);
    the lowest scores are the units to remove. Data-based methods need ``data`` (or precomputed
    ``stats`` from :func:`activation_statistics` for ``activation``, ``dormancy``,
    ``redundancy``)."""
    if method not in UNIT_SALIENCIES:
        raise ValueError(f"unknown unit saliency {method!r}; choose from {UNIT_SALIENCIES}")
    s = resolve_slot(model, slot)
    if method == "weight_norm":
        return weight_norm_saliency(model, s, p)
    if method == "random":
        return torch.rand(s.width, generator=generator)
    if method == "taylor":
        if data is None:
            raise ValueError("the 'taylor' saliency needs data")
        return taylor_saliency(
            model, s, data, loss_fn=loss_fn, device=device, max_batches=max_batches
        )
    if stats is None:
        if data is None:
            raise ValueError(f"the {method!r} saliency needs data or stats")
        stats = activation_statistics(
            model, [s], data, device=device, threshold=threshold, max_batches=max_batches
        )[s.name]
    if method == "activation":
        return stats.abs_mean
    if method == "dormancy":
        return 1.0 - stats.dormancy
    red = redundancy_matrix(stats.cosine, stats.gram.diagonal())
    return 1.0 - red.max(dim=1).values


def lowest_units(scores: torch.Tensor, n: int) -> torch.Tensor:
    """Indices of the ``n`` units with the lowest scores (ties broken by index)."""
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    if n > scores.numel():
        raise ValueError(f"cannot select {n} of {scores.numel()} units")
    return torch.sort(torch.argsort(scores.cpu(), stable=True)[:n]).values


def prune_units(
    model: nn.Module,
    slot: SlotKey,
    n: int,
    method: str,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    **saliency_kwargs,
) -> torch.Tensor:
    """Structured pruning: remove the ``n`` least important units of ``slot`` by ``method``.

    ``redundancy`` is applied greedily, one unit at a time, re-measuring after each removal, so
    that of two duplicated units only one is removed. Returns the removed indices (in the
    numbering before removal)."""
    s = resolve_slot(model, slot)
    if n < 0 or n >= s.width:
        raise ValueError(f"n must lie in [0, {s.width}), got {n}")
    if method != "redundancy" or n <= 1:
        idx = lowest_units(unit_saliency(model, s, method, **saliency_kwargs), n)
        remove_units(model, s, idx, optimizer=optimizer)
        return idx
    stats = saliency_kwargs.pop("stats", None)
    if stats is None:
        if saliency_kwargs.get("data") is None:
            raise ValueError("the 'redundancy' saliency needs data or stats")
        stats = activation_statistics(
            model, [s], saliency_kwargs["data"], device=saliency_kwargs.get("device", "cpu"),
            max_batches=saliency_kwargs.get("max_batches"),
        )[s.name]
    idx = greedy_redundant_units(redundancy_matrix(stats.cosine, stats.gram.diagonal()), n)
    remove_units(model, s, idx, optimizer=optimizer)
    return idx
