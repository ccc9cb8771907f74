"""SELECT_PRUNE and INIT_GROW of DYNO (thesis §7.2).

* :func:`select_prune`: every completely dormant neuron of a ReLU layer first (its
  post-activations are zero on every buffered sample), then, until ``k`` neurons are chosen,
  greedily the neuron whose cosine similarities with the remaining neurons have the largest norm
  (cosine similarity of the normalised post-activation rows of the unit matrix ``H``). Both read
  only the Gram matrix ``H H^T`` the trigger of eq. 37 already computed.
* :func:`init_grow`: NORTH-Select (§6.2.2, reused by §7.2): ``100 k`` candidates with random
  fan-in scaled to the layer's mean fan-in norm, zero bias and zero fan-out; the ``k`` that, each
  added alone, give the largest phi_ED of ``[H; h_c]`` (ties broken by the sum of singular values)
  are kept. Scoring reuses :func:`structlab.neurogenesis.metrics.candidate_ed_scores`; candidates
  are scored in chunks so that a convolutional layer's candidate maps never all sit in memory.
"""

from __future__ import annotations

import torch
from torch import nn

from structlab.models.slots import LayerSlot
from structlab.neurogenesis.initializations import (
    candidate_activations,
    fan_in_norm,
    rescale_rows,
)
from structlab.neurogenesis.metrics import candidate_ed_scores, unit_matrix

__all__ = ["cosine_matrix", "dormant_units", "select_prune", "init_grow", "is_relu_layer"]


def is_relu_layer(slot: LayerSlot) -> bool:
    """Whether the slot's activation is a ReLU (where SELECT_PRUNE removes dormant units first)."""
    return isinstance(slot.activation, nn.ReLU | nn.ReLU6)


def dormant_units(gram: torch.Tensor) -> torch.Tensor:
    """Indices of completely dormant units: zero diagonal of ``H H^T`` (every post-activation of
    the unit is 0 on the buffered samples)."""
    return torch.nonzero(torch.diagonal(gram) <= 0).reshape(-1)


def cosine_matrix(gram: torch.Tensor) -> torch.Tensor:
    """Cosine similarities ``<h_i, h_j> / (|h_i| |h_j|)`` of the units' post-activation rows, from
    ``H H^T`` (float64, zero diagonal; rows of dormant units are 0)."""
    g = gram.double()
    norms = torch.diagonal(g).clamp_min(0).sqrt()
    inv = torch.where(norms > 0, 1.0 / norms.clamp_min(1e-300), torch.zeros_like(norms))
    C = g * inv[:, None] * inv[None, :]
    C.fill_diagonal_(0.0)
    return C


def select_prune(
    gram: torch.Tensor, k: int, *, dormant_first: bool = True, min_keep: int = 1
) -> torch.Tensor:
    """SELECT_PRUNE (§7.2): the units to remove from a layer whose unit matrix has Gram ``gram``.

    Args:
        gram: ``H H^T`` (``M x M``) of the layer's buffered post-activations.
        k: TRIG_PRUNE, the number of units to prune.
        dormant_first: remove every completely dormant unit first (ReLU layers); they are all
            removed even when there are more than ``k`` of them.
        min_keep: units that always survive (at most ``M - min_keep`` are returned).

    Returns:
        ``int64`` indices of the units to remove, in the order they were chosen: dormant units
        (ascending), then greedily the unit with the largest norm of cosine similarities with
        the units not yet removed (lowest index on ties).
    """
    M = int(gram.shape[0])
    budget = max(0, M - int(min_keep))
    chosen: list[int] = []
    if dormant_first:
        chosen = dormant_units(gram).tolist()[:budget]
    target = min(max(int(k), len(chosen)), budget)
    if len(chosen) >= target:
        return torch.tensor(chosen, dtype=torch.long)
    C2 = cosine_matrix(gram).pow(2)
    alive = torch.ones(M, dtype=torch.bool, device=C2.device)
    for i in chosen:
        alive[i] = False
    # squared norm of each unit's cosine similarities with the remaining units
    score = (C2 * alive[None, :]).sum(1)
    while len(chosen) < target:
        masked = torch.where(alive, score, torch.full_like(score, -1.0))
        j = int(torch.argmax(masked))
        chosen.append(j)
        alive[j] = False
        score -= C2[:, j]
    return torch.tensor(chosen, dtype=torch.long)


@torch.no_grad()
def init_grow(
    slot: LayerSlot,
    X: torch.Tensor,
    H: torch.Tensor,
    k: int,
    *,
    generator: torch.Generator,
    candidates: int | None = None,
    eps: float = 1e-2,
    max_elements: int = 1 << 24,
) -> tuple[torch.Tensor, torch.Tensor]:
    """INIT_GROW (§7.2): NORTH-Select fan-in for ``k`` new units of ``slot``.

    Args:
        slot: the layer (its first producer gets the new rows).
        X: ``(n, ...)`` buffered inputs of the producer; ``H``: ``(n, M[, h, w])`` the layer's
            post-activations on the same samples.
        k: TRIG_GROW.
        generator: random generator of the candidates (CPU).
        candidates: candidates generated (default ``100 k``, §7.3).
        eps: threshold of eq. 37.
        max_elements: bound on the candidate activations scored at once (memory).

    Returns:
        ``(fan_in, acts)``: the ``k`` fan-in rows shaped like the producer's weight rows, and
        their post-activations ``(n, k[, h, w])`` on ``X`` (zero bias, no normalisation). Their
        fan-out is zero (the network's function is unchanged).
    """
    if k < 1:
        raise ValueError(f"k must be positive, got {k}")
    C = 100 * k if candidates is None else int(candidates)
    if C < k:
        raise ValueError(f"need at least k={k} candidates, got {C}")
    prod = slot.producers[0]
    w = getattr(prod, "weight_orig", prod.weight)
    raw = torch.rand((C, *w.shape[1:]), generator=generator) * 2 - 1
    cands = rescale_rows(raw.to(device=w.device, dtype=w.dtype), fan_in_norm(slot))
    X = X.to(device=w.device, dtype=w.dtype)
    Hu = unit_matrix(H)
    probe = candidate_activations(slot, X[:1], cands[:1])
    per_candidate = max(1, probe[0, 0].numel() * X.shape[0])
    chunk = max(1, int(max_elements) // per_candidate)
    eds, gains = [], []
    for start in range(0, C, chunk):
        acts = candidate_activations(slot, X, cands[start : start + chunk])
        ed, gain = candidate_ed_scores(Hu, unit_matrix(acts), eps, chunk=chunk)
        eds.append(ed)
        gains.append(gain)
    ed, gain = torch.cat(eds), torch.cat(gains)
    order = torch.argsort(gain, descending=True, stable=True)
    order = order[torch.argsort(ed[order], descending=True, stable=True)]
    idx = order[:k].to(cands.device)
    fan_in = cands[idx]
    return fan_in, candidate_activations(slot, X, fan_in)
