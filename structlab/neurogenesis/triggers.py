"""Neurogenesis triggers: when, where and how many units to add (thesis §6.2.1).

A trigger looks at one layer ``l`` after a gradient step and returns a non-negative number of
units to add; :class:`~structlab.neurogenesis.growth.Neurogenesis` clips it at the layer's
maximum width.

* :class:`ActivationTrigger` (``T_act``, eq. 28; eq. 35 with ``running_max=True`` for
  convolutions): the orthogonality of the layer's post-activations against ``gamma_a`` times
  its value at initialization (or its running maximum).
* :class:`WeightTrigger` (``T_weight``, eq. 30-31): the same with the weight matrix.
* :class:`GradientTrigger` (``T_grad``, eq. 32): singular values of the auxiliary gradient
  ``dL/dZ_{l+1} H_{l-1}^T`` larger than the summed gradient norms of the existing units.

**Two corrections to the printed equations.** Eq. 28, 31 and 35 print
``min(0, floor(M (phi - gamma phi_0)))``, which is never positive: a non-negative count is meant,
``max(0, .)``. And the rounding is that of the authors' code: the *threshold* is rounded down,
``T = max(0, r - floor(gamma phi_0 M))`` with ``r = M phi`` the number of singular values above
``eps`` (an integer). With the printed ``floor(M (phi - gamma phi_0))`` a layer of 4 units whose
activations have full rank (``phi = phi_0 = 1``) would get ``floor(4 x 0.03) = 0`` units and a
network that starts at width 4 (Table 8, generated data) could never grow.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from structlab.models.slots import LayerSlot
from structlab.neurogenesis.metrics import (
    orthogonality_gap,
    sample_matrix,
    scaled_singular_values,
    unit_matrix,
    weight_matrix,
)

__all__ = [
    "threshold_count",
    "ActivationTrigger",
    "WeightTrigger",
    "GradientTrigger",
    "AuxiliaryGradient",
    "auxiliary_gradients",
]


def threshold_count(score: float, baseline: float, width: int, gamma: float) -> int:
    """``max(0, floor(score) - floor(gamma * baseline * width))``, the count of eq. 28 / 31 / 35.

    ``score`` is the metric times the width (the number of singular values above ``eps`` for
    phi_ED), ``baseline`` the metric's reference value (at initialization or its running
    maximum).
    """
    return max(0, int(math.floor(score + 1e-9)) - int(math.floor(gamma * baseline * width + 1e-9)))


def rank_count(H: torch.Tensor, eps: float) -> int:
    """Number of singular values of ``H / sqrt(n)`` above ``eps`` (``M phi_ED``, eq. 27)."""
    if H.shape[1] > 4 * H.shape[0]:
        sv = scaled_singular_values(H, method="gram")
    else:
        sv = scaled_singular_values(H)
    return int((sv > eps).sum())


class ActivationTrigger:
    """``T_act`` (eq. 28), or ``T_act^conv`` (eq. 35) with ``running_max=True``.

    Args:
        gamma: ``gamma_a`` (Table 8: 0.97 for the MLPs; 0.9-0.99 for the CNNs).
        metric: ``"ed"`` (phi_ED, eq. 27) or ``"og"`` (phi_OG, eq. 29; its count is
            ``ceil(M phi_OG)`` as in the authors' code).
        eps: threshold of eq. 27.
        running_max: compare with the running maximum of the metric instead of its value at
            initialization (eq. 35, used for convolutional layers).
    """

    source = "activations"

    def __init__(
        self,
        gamma: float = 0.97,
        *,
        metric: str = "ed",
        eps: float = 0.01,
        running_max: bool = False,
    ) -> None:
        if metric not in ("ed", "og"):
            raise ValueError(f"metric must be 'ed' or 'og', got {metric!r}")
        self.gamma, self.metric, self.eps, self.running_max = gamma, metric, eps, running_max
        self.baselines: dict[str, float] = {}
        self.last: dict[str, float] = {}

    def measure(self, acts: torch.Tensor) -> tuple[float, int]:
        """``(phi, score)`` of activations ``(n, M[, H, W])``: the metric and ``M phi``."""
        M = acts.shape[1]
        if self.metric == "ed":
            r = rank_count(unit_matrix(acts), self.eps)
            return r / M, r
        phi = orthogonality_gap(sample_matrix(acts))
        return phi, int(math.ceil(phi * M - 1e-9))

    def __call__(self, name: str, acts: torch.Tensor) -> int:
        """Units to add to layer ``name`` whose buffered activations are ``acts``."""
        M = acts.shape[1]
        phi, score = self.measure(acts)
        self.last[name] = phi
        if name not in self.baselines:  # the network at initialization, f_0
            self.baselines[name] = phi
        elif self.running_max:
            self.baselines[name] = max(self.baselines[name], phi)
        return threshold_count(score, self.baselines[name], M, self.gamma)


class WeightTrigger:
    """``T_weight`` (eq. 30-31): eq. 27-28 applied to the weight matrix ``W_l`` (one row per
    unit, fan-in and bias; a convolution's kernels flattened), scaled by ``1/sqrt(columns)``
    as in the authors' code (the ``n`` of eq. 30)."""

    source = "weights"

    def __init__(self, gamma: float = 0.99, *, eps: float = 0.01) -> None:
        self.gamma, self.eps = gamma, eps
        self.baselines: dict[str, float] = {}
        self.last: dict[str, float] = {}

    def __call__(self, name: str, module: nn.Module) -> int:
        W = weight_matrix(module)
        M = W.shape[0]
        r = int((scaled_singular_values(W) > self.eps).sum())
        self.last[name] = r / M
        if name not in self.baselines:
            self.baselines[name] = r / M
        return threshold_count(r, self.baselines[name], M, self.gamma)


@dataclass
class AuxiliaryGradient:
    """What one forward/backward pass tells about dense layer ``l`` (for eq. 32 and the
    gradient-based initializations).

    ``X``: inputs of the layer ``(n, in)`` (``H_{l-1}^T``); ``Z``: its pre-activations
    ``(n, M)``; ``dZ_next``: ``dL/dZ_{l+1}`` ``(n, M_next)``; ``G = dZ_next^T X``: the auxiliary
    gradient ``(M_next, in)`` of zero-weighted bridging connections from layer ``l-1`` to layer
    ``l+1``; ``unit_norms``: ``||dL/dw_m^in|| + ||dL/dw_m^out||`` for every existing unit.
    """

    X: torch.Tensor
    Z: torch.Tensor
    dZ_next: torch.Tensor
    G: torch.Tensor
    unit_norms: torch.Tensor


def auxiliary_gradients(
    model: nn.Module,
    slots: Sequence[LayerSlot],
    inputs: torch.Tensor,
    targets: torch.Tensor,
    loss_fn=None,
) -> dict[str, AuxiliaryGradient]:
    """One extra forward/backward pass on a mini-batch, recording for every dense slot the
    quantities of :class:`AuxiliaryGradient`. Parameter gradients are computed into fresh
    tensors (``torch.autograd.grad``), so the optimizer's ``.grad`` are left alone."""
    loss_fn = loss_fn or nn.functional.cross_entropy
    for s in slots:
        if s.kind != "dense" or len(s.producers) != 1 or len(s.consumers) != 1:
            raise NotImplementedError(
                f"slot {s.name}: gradient-based neurogenesis is implemented for dense layers "
                "with one producer and one consumer (thesis §6.2.3 leaves convolutions out)"
            )
        if s.consumers[0].spatial != 1:
            raise NotImplementedError(f"slot {s.name}: flatten boundary not supported")
    xs: dict[str, torch.Tensor] = {}
    zs: dict[str, torch.Tensor] = {}
    znext: dict[str, torch.Tensor] = {}
    handles = []
    for s in slots:
        prod, cons = s.producers[0], s.consumers[0].module

        def pre(module, args, _n=s.name):
            xs[_n] = args[0].detach()

        def post(module, args, out, _n=s.name):
            zs[_n] = out.detach()

        def nxt(module, args, out, _n=s.name):
            znext[_n] = out

        handles += [
            prod.register_forward_pre_hook(pre),
            prod.register_forward_hook(post),
            cons.register_forward_hook(nxt),
        ]
    try:
        loss = loss_fn(model(inputs), targets)
    finally:
        for h in handles:
            h.remove()
    params = []
    for s in slots:
        params += [s.producers[0].weight, s.consumers[0].module.weight]
        if s.producers[0].bias is not None:
            params.append(s.producers[0].bias)
    params = list(dict.fromkeys(params))  # unique, in order
    outs = [znext[s.name] for s in slots]
    grads = torch.autograd.grad(loss, params + outs, allow_unused=True)
    by_param = {id(p): g for p, g in zip(params, grads[: len(params)])}
    result = {}
    for s, dz in zip(slots, grads[len(params) :]):
        prod, cons = s.producers[0], s.consumers[0].module
        g_in = by_param[id(prod.weight)]
        g_in = torch.zeros_like(prod.weight) if g_in is None else g_in
        rows = g_in.pow(2).sum(1)
        if prod.bias is not None and by_param.get(id(prod.bias)) is not None:
            rows = rows + by_param[id(prod.bias)].pow(2)
        g_out = by_param[id(cons.weight)]
        g_out = torch.zeros_like(cons.weight) if g_out is None else g_out
        norms = rows.sqrt() + g_out.pow(2).sum(0).sqrt()
        dz = torch.zeros_like(znext[s.name]) if dz is None else dz.detach()
        X = xs[s.name].flatten(1)
        result[s.name] = AuxiliaryGradient(
            X=X, Z=zs[s.name], dZ_next=dz, G=dz.T @ X, unit_norms=norms.detach()
        )
    return result


class GradientTrigger:
    """``T_grad`` (eq. 32): the number of singular values of the auxiliary gradient larger than
    ``scale`` times the sum over the layer's units of their fan-in and fan-out gradient norms,
    at most ``min(M_{l+1}, M_{l-1})`` (GradMax cannot add more independent fan-outs).

    ``scale=1`` is eq. 32; the authors' code uses half the sum (``scale=0.5``).
    """

    source = "gradients"

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale
        self.last: dict[str, float] = {}

    def __call__(self, name: str, aux: AuxiliaryGradient) -> int:
        sv = torch.linalg.svdvals(aux.G.double())
        threshold = self.scale * float(aux.unit_norms.sum())
        self.last[name] = float(sv[0]) / max(threshold, 1e-300) if sv.numel() else 0.0
        return int((sv > threshold).sum())
