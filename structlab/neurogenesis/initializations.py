"""Neurogenesis initializations: how to set the weights of new units (thesis §6.2.2).

Every initialization returns a :class:`NewUnits` for ``k`` units of a slot: fan-in rows (shaped
like the producer's weight rows), fan-out columns (shaped like the consumer's weight columns),
biases (always 0, §6.3.1) and, for Firefly's splits, a change to existing units. As in §6.3.1,
non-zero fan-in and fan-out weights are rescaled to the *current* mean weight norm of the layer's
units (:func:`fan_in_norm`, :func:`fan_out_norm`); Firefly's noise is ``eps_Firefly`` times it.

=============  =====================================================  ==========================
name           fan-in                                                 fan-out
=============  =====================================================  ==========================
``select``     best of ``C`` random candidates by phi_ED of ``[H; h]``  0 (function-preserving)
``pre``        candidates with pre-activations orthogonal to Z (eq. 33) 0
``random``     random (NORTH-Random)                                   0
``weight``     random, projected onto ``ker W_l`` (eq. 34)            0
``gradmax``    0 (function-preserving)                                top-k left singular
                                                                      vectors of the auxiliary
                                                                      gradient
``firefly``    best of ``C`` splits / new units by gradient norm      half / ``eps``-small
``nest``       from the largest auxiliary-gradient entries            same, descent sign
=============  =====================================================  ==========================

``C`` is 1000 (dense) or 100 (convolution) plus ``k`` (§6.3.1).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from structlab.models.slots import LayerSlot
from structlab.neurogenesis.metrics import (
    candidate_ed_scores,
    candidate_og_scores,
    sample_matrix,
    unit_matrix,
)
from structlab.neurogenesis.triggers import AuxiliaryGradient

__all__ = [
    "NewUnits",
    "InitContext",
    "INITIALIZATIONS",
    "fan_in_norm",
    "fan_out_norm",
    "rescale_rows",
    "candidate_activations",
    "select_candidates",
]


@dataclass
class NewUnits:
    """Weights of ``k`` new units (``fan_out`` of ``None`` means zeros) and an optional change to
    existing units, applied after the units are added."""

    fan_in: torch.Tensor
    fan_out: torch.Tensor | None = None
    bias: torch.Tensor | None = None
    after: Callable[[], None] | None = None


@dataclass
class InitContext:
    """What an initialization may use: the slot, buffered producer inputs ``X`` and activations
    ``H`` (sample-major) for the activation-based methods, the auxiliary gradient for the
    gradient-based ones, and its settings."""

    slot: LayerSlot
    generator: torch.Generator
    X: torch.Tensor | None = None
    H: torch.Tensor | None = None
    aux: AuxiliaryGradient | None = None
    candidates: int | None = None
    metric: str = "ed"
    eps: float = 0.01
    firefly_eps: float = 1e-4
    nest_quantile: float = 0.4
    extra: dict = field(default_factory=dict)

    @property
    def producer(self) -> nn.Module:
        return self.slot.producers[0]

    @property
    def n_candidates(self) -> int:
        if self.candidates is not None:
            return self.candidates
        return 100 if self.slot.kind == "conv" else 1000


def _weight(module: nn.Module) -> torch.Tensor:
    return getattr(module, "weight_orig", module.weight)


def fan_in_norm(slot: LayerSlot) -> float:
    """Mean norm of the fan-in weights (rows of the first producer) of the slot's units."""
    w = _weight(slot.producers[0]).detach()
    return float(w.reshape(w.shape[0], -1).norm(dim=1).mean())


def fan_out_norm(slot: LayerSlot) -> float:
    """Mean norm of the fan-out weights (columns of the first consumer, ``spatial`` columns and
    kernels together) of the slot's units."""
    c = slot.consumers[0]
    w = _weight(c.module).detach()
    per_unit = w.reshape(w.shape[0], slot.width, c.spatial, -1).transpose(0, 1)
    return float(per_unit.reshape(slot.width, -1).norm(dim=1).mean())


def rescale_rows(rows: torch.Tensor, norm: float) -> torch.Tensor:
    """Each row (first dimension) rescaled to ``norm``; zero rows stay zero."""
    flat = rows.reshape(rows.shape[0], -1)
    n = flat.norm(dim=1, keepdim=True)
    out = torch.where(n > 0, flat * (norm / n.clamp_min(1e-30)), flat)
    return out.reshape(rows.shape)


def _rand(shape, ctx: InitContext, like: torch.Tensor) -> torch.Tensor:
    """Uniform in [-1, 1] (Xavier-uniform directions; the norm is set afterwards)."""
    t = torch.rand(tuple(shape), generator=ctx.generator) * 2 - 1
    return t.to(device=like.device, dtype=like.dtype)


def _random_fan_in(ctx: InitContext, n: int) -> torch.Tensor:
    w = _weight(ctx.producer)
    return rescale_rows(_rand((n, *w.shape[1:]), ctx, w), fan_in_norm(ctx.slot))


@torch.no_grad()
def candidate_activations(slot: LayerSlot, X: torch.Tensor, fan_in: torch.Tensor) -> torch.Tensor:
    """Post-activations ``(n, C[, H, W])`` of candidate units with fan-in ``fan_in`` and zero
    bias on producer inputs ``X`` (a slot's normalisation layers are not applied)."""
    prod = slot.producers[0]
    if isinstance(prod, nn.Conv2d):
        z = F.conv2d(X, fan_in, None, prod.stride, prod.padding, prod.dilation)
    else:
        z = X.flatten(1) @ fan_in.T
    return slot.activation(z) if slot.activation is not None else z


def select_candidates(
    H: torch.Tensor, cand_acts: torch.Tensor, k: int, *, metric: str = "ed", eps: float = 0.01
) -> torch.Tensor:
    """Indices of the ``k`` candidates that, each added alone to the layer, give the highest
    orthogonality metric (phi_ED with the sum of singular values as tie-breaker, or phi_OG).

    ``H``: ``(n, M[, h, w])`` activations of the layer; ``cand_acts``: ``(n, C[, h, w])``.
    """
    if metric == "ed":
        rows = unit_matrix(cand_acts)
        ed, gain = candidate_ed_scores(unit_matrix(H), rows, eps)
        order = torch.argsort(gain, descending=True, stable=True)
        order = order[torch.argsort(ed[order], descending=True, stable=True)]
    elif metric == "og":
        n = H.shape[0]
        blocks = cand_acts.reshape(n, cand_acts.shape[1], -1).permute(1, 2, 0)
        og = candidate_og_scores(sample_matrix(H), blocks)
        order = torch.argsort(og, descending=True, stable=True)
    else:
        raise ValueError(f"unknown metric {metric!r}")
    return order[:k]


def _fan_out_layout(slot: LayerSlot, vectors: torch.Tensor) -> torch.Tensor:
    """``k`` fan-out vectors ``(k, P)`` (one unit's fan-out flattened in the consumer's layout:
    ``(C_{l+1}, k_h, k_w)`` for a convolution, ``(out, spatial)`` at a flatten boundary,
    ``(out,)`` for a dense layer) as the consumer's new columns for :func:`add_units`."""
    c = slot.consumers[0]
    w = _weight(c.module)
    k = vectors.shape[0]
    cols = vectors.reshape(k, w.shape[0], -1).transpose(0, 1)  # (out, k, R)
    return cols.reshape(w.shape[0], k * c.spatial, *w.shape[2:])


def _need(ctx: InitContext, *names: str) -> None:
    for n in names:
        if getattr(ctx, n) is None:
            raise ValueError(f"this initialization needs {n} (slot {ctx.slot.name})")


def init_random(ctx: InitContext, k: int) -> NewUnits:
    """NORTH-Random's RandomInit: random fan-in at the layer's weight norm, zero fan-out."""
    return NewUnits(fan_in=_random_fan_in(ctx, k))


def init_select(ctx: InitContext, k: int) -> NewUnits:
    """NORTH-Select: ``C + k`` random candidates, keep the ``k`` best by the metric."""
    _need(ctx, "X", "H")
    cands = _random_fan_in(ctx, ctx.n_candidates + k)
    acts = candidate_activations(ctx.slot, ctx.X, cands)
    idx = select_candidates(ctx.H, acts, k, metric=ctx.metric, eps=ctx.eps)
    return NewUnits(fan_in=cands[idx])


def init_pre(ctx: InitContext, k: int) -> NewUnits:
    """NORTH-Pre (eq. 33): ``w = (H_{l-1}^T)^+ V a`` with ``V`` spanning the kernel of the
    pre-activations ``Z_l`` (vectors of ``R^n`` orthogonal to every unit's pre-activations) and
    ``a`` random; the candidates are then selected as in NORTH-Select. Dense layers only.

    A Gaussian ``a`` on an orthonormal basis of the kernel has the same law as the projection
    of a Gaussian vector of ``R^n`` onto the kernel, which is what is computed (no full SVD).
    """
    _need(ctx, "X", "H")
    if ctx.slot.kind != "dense":
        raise NotImplementedError("NORTH-Pre has no closed form for convolutions (§6.2.3)")
    prod = ctx.producer
    w = _weight(prod).detach()
    X = ctx.X.flatten(1).to(w.dtype)
    Z = X @ w.T
    if prod.bias is not None:
        Z = Z + prod.bias.detach()
    U, S, _ = torch.linalg.svd(Z, full_matrices=False)
    Q = U[:, S > S.max() * 1e-6] if S.numel() else U[:, :0]
    n, C = X.shape[0], ctx.n_candidates + k
    A = torch.randn(n, C, generator=ctx.generator).to(X)
    V = A - Q @ (Q.T @ A)
    # least-squares solution of X w = v for every candidate: the pseudoinverse of H_{l-1}^T
    # applied through the (ridge-stabilised) normal equations
    gram = X.T @ X
    ridge = 1e-6 * float(gram.diagonal().mean().clamp_min(1e-12))
    eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    W = torch.linalg.solve(gram + ridge * eye, X.T @ V).T
    cands = rescale_rows(W, fan_in_norm(ctx.slot))
    acts = candidate_activations(ctx.slot, ctx.X, cands)
    idx = select_candidates(ctx.H, acts, k, metric=ctx.metric, eps=ctx.eps)
    return NewUnits(fan_in=cands[idx])


def init_weight(ctx: InitContext, k: int) -> NewUnits:
    """NORTH-Weight (eq. 34): random fan-in projected onto the kernel of ``W_l`` (and made
    mutually orthogonal), zero fan-out. When the kernel has fewer than ``k`` dimensions (the
    layer is as wide as its input) the remaining units keep random directions."""
    w = _weight(ctx.producer).detach()
    W = w.reshape(w.shape[0], -1).double()
    d = W.shape[1]
    # an orthonormal basis of the row space of W from the eigenvectors of W W^T (float64):
    # the right singular vectors with S > 1e-6 S_max, three to six times cheaper than an SVD
    lam, U = torch.linalg.eigh(W @ W.T)
    keep = lam > lam.max() * 1e-12 if lam.numel() else lam > 0
    Q = (U[:, keep].T @ W) / lam[keep].sqrt()[:, None]
    R = _rand((k, d), ctx, W)
    P = R - (R @ Q.T) @ Q
    free = d - Q.shape[0]
    if 0 < free:
        m = min(k, free)
        q, _ = torch.linalg.qr(P[:m].T)
        P = torch.cat([q.T, P[m:]])
    rows = rescale_rows(P.to(w.dtype).reshape(k, *w.shape[1:]), fan_in_norm(ctx.slot))
    return NewUnits(fan_in=rows)


def init_gradmax(ctx: InitContext, k: int) -> NewUnits:
    """GradMax: zero fan-in, fan-out = the top ``k`` left singular vectors of the auxiliary
    gradient ``dL/dZ_{l+1} H_{l-1}^T`` (maximal gradient norm of the new weights), at the layer's
    fan-out norm. ``k`` is at most ``min(P, Q)`` (``min(M_{l+1}, M_{l-1})`` for a dense layer).

    For a convolution ``G`` is :func:`~structlab.neurogenesis.triggers.conv_auxiliary_matrix`
    ``(C_{l+1} k_{l+1}^2, C_{l-1} k_l^2)`` and each singular vector is reshaped into the
    consumer's ``C_{l+1} x k_{l+1} x k_{l+1}`` kernel (or its ``out x spatial`` columns at the
    flatten boundary); the fan-in kernels are zero, so the network's function is unchanged (in
    evaluation mode with BatchNorm: the new BN entries map 0 to 0)."""
    _need(ctx, "aux")
    G = ctx.aux.G.double()
    U, _, _ = torch.linalg.svd(G, full_matrices=False)
    if k > U.shape[1]:
        raise ValueError(f"GradMax can add at most {U.shape[1]} units here, asked for {k}")
    w = _weight(ctx.producer)
    vecs = rescale_rows(U[:, :k].T, fan_out_norm(ctx.slot))  # (k, P)
    out = _fan_out_layout(ctx.slot, vecs).to(w.dtype)
    return NewUnits(
        fan_in=torch.zeros(k, *w.shape[1:], dtype=w.dtype, device=w.device), fan_out=out
    )


def init_firefly(ctx: InitContext, k: int) -> NewUnits:
    """Firefly: candidates that split an existing unit (fan-in plus noise, half its fan-out; the
    original keeps fan-in minus noise and the other half) or are new (random fan-in,
    ``eps``-small fan-out); keep the ``k`` with the largest gradient norm on the mini-batch.
    The split copy keeps the original's bias. Convolutions: :func:`_firefly_conv`."""
    _need(ctx, "aux")
    if ctx.slot.kind != "dense":
        return _firefly_conv(ctx, k)
    prod, cons = ctx.producer, ctx.slot.consumers[0].module
    W, b = _weight(prod).detach(), prod.bias
    U = _weight(cons).detach()
    M, C = W.shape[0], ctx.n_candidates + k
    n_split = C // 2
    nin, nout = fan_in_norm(ctx.slot), fan_out_norm(ctx.slot)
    src = torch.randint(0, M, (n_split,), generator=ctx.generator).to(W.device)
    noise = rescale_rows(_rand((n_split, W.shape[1]), ctx, W), ctx.firefly_eps * nin)
    new_in = _random_fan_in(ctx, C - n_split)
    new_out = rescale_rows(_rand((C - n_split, U.shape[0]), ctx, U), ctx.firefly_eps * nout)
    fin = torch.cat([W[src] + noise, new_in])
    fout = torch.cat([U[:, src].T / 2, new_out])  # (C, M_next)
    bias = torch.zeros(C, dtype=W.dtype, device=W.device)
    if b is not None:
        bias[:n_split] = b.detach()[src]
    X, dZ = ctx.aux.X, ctx.aux.dZ_next
    z = X @ fin.T + bias
    h = ctx.slot.activation(z) if ctx.slot.activation is not None else z
    dh = (z >= 0).to(z.dtype)  # derivative of the (modified) ReLU
    g_out = dZ.T @ h  # (M_next, C)
    delta = (dZ @ fout.T) * dh  # (n, C)
    g_in = X.T @ delta
    score = g_out.pow(2).sum(0) + g_in.pow(2).sum(0) + delta.sum(0).pow(2)
    order = torch.argsort(score, descending=True).tolist()
    chosen, used = [], set()
    for i in order:
        if i < n_split:
            m = int(src[i])
            if m in used:
                continue
            used.add(m)
        chosen.append(i)
        if len(chosen) == k:
            break
    idx = torch.tensor(chosen, device=W.device)
    splits = [(int(src[i]), noise[i]) for i in chosen if i < n_split]

    def after() -> None:
        with torch.no_grad():
            w_, u_ = _weight(prod), _weight(cons)
            for m, nz in splits:
                w_[m] -= nz
                u_[:, m] /= 2

    return NewUnits(
        fan_in=fin[idx], fan_out=fout[idx].T, bias=bias[idx], after=after if splits else None
    )


def _firefly_conv(ctx: InitContext, k: int) -> NewUnits:
    """Firefly for a convolutional slot: the dense candidates with kernels. A split copies an
    existing channel's fan-in kernel plus noise and takes half its fan-out (kernels or
    flatten-boundary columns); a new candidate has a random fan-in kernel and an
    ``eps``-small random fan-out. Each candidate is scored by the squared norm of the gradient
    of its fan-in, bias and fan-out for the mini-batch, first order with ``dL/dZ_{l+1}`` held
    fixed (as for dense layers): ``L ~ <dL/dZ_{l+1}, consumer(pool(sigma(conv(H_{l-1}, w))))>``,
    differentiated by autograd with the slot's activation, BatchNorm left out as in the dense
    code and the pooling between producer and consumer taken as ``r x r`` max-pooling (the only
    pooling of :class:`~structlab.models.VGG`)."""
    from structlab.neurogenesis.triggers import _read_map_shape, pool_ratio

    slot, aux = ctx.slot, ctx.aux
    prod, cons = ctx.producer, slot.consumers[0]
    W, b = _weight(prod).detach(), prod.bias
    Uw = _weight(cons.module).detach()
    M, C = W.shape[0], ctx.n_candidates + k
    out = Uw.shape[0]
    U = Uw.reshape(out, M, -1)  # (out, M, R): one unit's fan-out
    n_split = C // 2
    nin, nout = fan_in_norm(slot), fan_out_norm(slot)
    src = torch.randint(0, M, (n_split,), generator=ctx.generator).to(W.device)
    noise = rescale_rows(_rand((n_split, *W.shape[1:]), ctx, W), ctx.firefly_eps * nin)
    new_in = _random_fan_in(ctx, C - n_split)
    new_out = rescale_rows(_rand((C - n_split, out, U.shape[2]), ctx, U), ctx.firefly_eps * nout)
    fin = torch.cat([W[src] + noise, new_in])
    fout = torch.cat([U[:, src] / 2, new_out.transpose(0, 1)], 1)  # (out, C, R)
    bias = torch.zeros(C, dtype=W.dtype, device=W.device)
    if b is not None:
        bias[:n_split] = b.detach()[src]
    X, dZ = aux.X.to(W.dtype), aux.dZ_next.to(W.dtype)
    read = _read_map_shape(slot, aux.Z.shape, aux.consumer_input)
    r = pool_ratio(aux.Z.shape[-2:], read, slot.name)
    fin_p, fout_p, b_p = (t.clone().requires_grad_(True) for t in (fin, fout, bias))
    with torch.enable_grad():
        z = F.conv2d(X, fin_p, b_p, prod.stride, prod.padding, prod.dilation)
        h = slot.activation(z) if slot.activation is not None else z
        if r > 1:
            h = F.max_pool2d(h, r)
        if isinstance(cons.module, nn.Conv2d):
            m = cons.module
            kern = fout_p.reshape(out, C, *Uw.shape[2:])
            contrib = F.conv2d(h, kern, None, m.stride, m.padding, m.dilation)
        else:
            contrib = h.reshape(h.shape[0], -1) @ fout_p.reshape(out, -1).T
        g_in, g_out, g_b = torch.autograd.grad((contrib * dZ).sum(), [fin_p, fout_p, b_p])
    score = (g_out.pow(2).sum((0, 2)) + g_in.reshape(C, -1).pow(2).sum(1) + g_b.pow(2)).detach()
    order = torch.argsort(score, descending=True).tolist()
    chosen, used = [], set()
    for i in order:
        if i < n_split:
            m_ = int(src[i])
            if m_ in used:
                continue
            used.add(m_)
        chosen.append(i)
        if len(chosen) == k:
            break
    idx = torch.tensor(chosen, device=W.device)
    splits = [(int(src[i]), noise[i]) for i in chosen if i < n_split]
    module = cons.module

    def after() -> None:
        with torch.no_grad():
            w_, u_ = _weight(prod), _weight(module)
            cols = u_.view(u_.shape[0], slot.width, -1)
            for m_, nz in splits:
                w_[m_] -= nz
                cols[:, m_] /= 2

    fan_out = _fan_out_layout(slot, fout[:, idx].transpose(0, 1))
    return NewUnits(
        fan_in=fin[idx], fan_out=fan_out, bias=bias[idx], after=after if splits else None
    )


def init_nest(ctx: InitContext, k: int) -> NewUnits:
    """NeST: connect the input-output pairs whose auxiliary-gradient entries are in the top
    ``nest_quantile`` by magnitude; fan-in ``sqrt(sum_j G_ji^2)`` and fan-out
    ``sqrt(sum_i G_ji^2)`` over those pairs, with a random sign per unit for the fan-in and the
    descent sign for the fan-out.

    For a convolution the same is done on ``G`` of
    :func:`~structlab.neurogenesis.triggers.conv_auxiliary_matrix`, whose entries connect one
    input channel's kernel tap to one output channel's kernel tap: the fan-in becomes a
    ``C_{l-1} x k_l x k_l`` kernel and the fan-out a ``C_{l+1} x k_{l+1} x k_{l+1}`` kernel
    (``out x spatial`` columns at the flatten boundary)."""
    _need(ctx, "aux")
    G = ctx.aux.G
    w = _weight(ctx.producer)
    thr = torch.quantile(G.abs().flatten().float().cpu(), 1 - ctx.nest_quantile)
    S = (G.abs() >= thr.to(G.device)).to(G.dtype)
    G2 = G.pow(2) * S
    a = G2.sum(0).sqrt()  # (in,)
    c = G2.sum(1).sqrt()  # (M_next,)
    signs = torch.randint(0, 2, (k,), generator=ctx.generator).to(G.device, G.dtype) * 2 - 1
    fan_in = signs[:, None] * a[None, :]
    direction = torch.sign((G * S) @ a)  # sign of the gradient of each output through the unit
    fan_out = -(signs[:, None] * direction[None, :] * c[None, :])
    fan_in = rescale_rows(fan_in, fan_in_norm(ctx.slot)).to(w.dtype).reshape(k, *w.shape[1:])
    fan_out = _fan_out_layout(ctx.slot, rescale_rows(fan_out, fan_out_norm(ctx.slot)))
    return NewUnits(fan_in=fan_in, fan_out=fan_out.to(w.dtype))


#: Initializations by name (Table 7).
INITIALIZATIONS: dict[str, Callable[[InitContext, int], NewUnits]] = {
    "select": init_select,
    "pre": init_pre,
    "random": init_random,
    "weight": init_weight,
    "gradmax": init_gradmax,
    "firefly": init_firefly,
    "nest": init_nest,
}
