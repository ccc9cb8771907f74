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
import torch.nn.functional as F
from torch import nn

from structlab.models.slots import LayerSlot
from structlab.neurogenesis.buffers import ActivationBuffer
from structlab.neurogenesis.metrics import (
    gram_orthogonality_gap,
    orthogonality_gap,
    sample_matrix,
    scaled_singular_values,
    small_gram,
    unit_matrix,
    weight_matrix,
)

__all__ = [
    "threshold_count",
    "ActivationTrigger",
    "WeightTrigger",
    "GradientTrigger",
    "AuxiliaryGradient",
    "GradientRecorder",
    "auxiliary_gradients",
    "conv_auxiliary_matrix",
    "fan_out_basis_gradient",
    "pool_ratio",
]


def threshold_count(score: float, baseline: float, width: int, gamma: float) -> int:
    """``max(0, floor(score) - floor(gamma * baseline * width))``, the count of eq. 28 / 31 / 35.

    ``score`` is the metric times the width (the number of singular values above ``eps`` for
    phi_ED), ``baseline`` the metric's reference value (at initialization or its running
    maximum).
    """
    return max(0, int(math.floor(score + 1e-9)) - int(math.floor(gamma * baseline * width + 1e-9)))


def gram_rank_count(gram: torch.Tensor, eps: float) -> int:
    """Number of eigenvalues of the scaled Gram matrix ``H H^T / n`` above ``eps^2``: the
    singular values of ``H / sqrt(n)`` above ``eps`` (``M phi_ED``, eq. 27).

    Counted without eigenvalues, by Sylvester's law of inertia: the number of positive
    eigenvalues of ``H H^T / n - eps^2 I`` is that of the block-diagonal ``D`` of its
    Bunch-Kaufman factorisation ``L D L^T`` (``torch.linalg.ldl_factor``; 1 x 1 blocks by their
    sign, 2 x 2 blocks by their determinant and trace), about six times cheaper than
    ``eigvalsh``. The count equals the eigenvalue count up to rounding at the threshold.
    """
    A = gram.double() - (eps * eps) * torch.eye(gram.shape[0], dtype=torch.float64,
                                                   device=gram.device)
    LD, pivots, _ = torch.linalg.ldl_factor_ex(A)
    d = LD.diagonal()
    pivots = pivots.cpu()
    if not bool((pivots < 0).any()):
        return int((d > 0).sum())
    # a 2 x 2 block occupies two consecutive negative pivots (LAPACK sytrf, lower storage)
    starts = (pivots < 0).nonzero().flatten()[::2].to(d.device)
    a, c, b = d[starts], d[starts + 1], LD.diagonal(-1)[starts]
    det, trace = a * c - b * b, a + c
    blocks = torch.where(det < 0, 1, torch.where(trace > 0, 2, 0)).sum()
    single = torch.ones_like(d, dtype=torch.bool)
    single[starts] = False
    single[starts + 1] = False
    return int((d[single] > 0).sum() + blocks)


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

    def measure(self, acts: torch.Tensor | ActivationBuffer) -> tuple[float, int]:
        """``(phi, score)`` of activations ``(n, M[, H, W])``: the metric and ``M phi``.

        Given an :class:`~structlab.neurogenesis.buffers.ActivationBuffer`, phi_ED is read from
        the eigenvalues of its running Gram matrix ``H H^T / n`` (``M x M``; the same count as
        the SVD of ``H / sqrt(n)`` up to rounding), as is phi_OG of a dense layer
        (``||H H^T||_F^2 / tr(H H^T)^2``)."""
        if isinstance(acts, ActivationBuffer):
            gram = acts.gram()
            M, n = gram.shape[0], acts.columns
            if self.metric == "ed":
                r = gram_rank_count(gram / n, self.eps)
                return r / M, r
            if n == len(acts):  # one column per sample: the unit Gram matrix is eq. 29's
                phi = gram_orthogonality_gap(gram, n)
                return phi, int(math.ceil(phi * M - 1e-9))
            acts = acts.H
        M = acts.shape[1]
        if self.metric == "ed":
            r = rank_count(unit_matrix(acts), self.eps)
            return r / M, r
        phi = orthogonality_gap(sample_matrix(acts))
        return phi, int(math.ceil(phi * M - 1e-9))

    def __call__(self, name: str, acts: torch.Tensor | ActivationBuffer) -> int:
        """Units to add to layer ``name`` whose buffered activations are ``acts`` (a tensor
        ``(n, M[, H, W])`` or the buffer itself)."""
        M = acts.units if isinstance(acts, ActivationBuffer) else acts.shape[1]
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
        # the inertia of the min(M, columns)-sided Gram matrix in float64: the same count as
        # svdvals up to rounding, and several times cheaper
        r = gram_rank_count(small_gram(W) / W.shape[1], self.eps)
        self.last[name] = r / M
        if name not in self.baselines:
            self.baselines[name] = r / M
        return threshold_count(r, self.baselines[name], M, self.gamma)


@dataclass
class AuxiliaryGradient:
    """What one forward/backward pass tells about layer ``l`` (for eq. 32 and the
    gradient-based initializations).

    Dense slot: ``X``: inputs of the layer ``(n, in)`` (``H_{l-1}^T``); ``Z``: its
    pre-activations ``(n, M)``; ``dZ_next``: ``dL/dZ_{l+1}`` ``(n, M_next)``;
    ``G = dZ_next^T X``: the auxiliary gradient ``(M_next, in)`` of zero-weighted bridging
    connections from layer ``l-1`` to layer ``l+1``.

    Convolutional slot: ``X`` is the producer's input map ``(n, C_{l-1}, H, W)``, ``Z`` its
    output ``(n, M, H', W')``, ``dZ_next`` the consumer's output gradient (a map, or
    ``(n, out)`` for a dense consumer at the flatten boundary) and ``G`` the matrix
    ``(P, Q)`` of :func:`conv_auxiliary_matrix`: ``P`` entries of one unit's fan-out in the
    consumer's layout (``C_{l+1} k_{l+1}^2``, or ``out * spatial``), ``Q`` entries of one
    unit's fan-in (``C_{l-1} k_l^2``). ``consumer_input`` is the shape of the map the
    consumer reads (after any pooling), used to undo pooling.

    ``unit_norms``: ``||dL/dw_m^in|| + ||dL/dw_m^out||`` for every existing unit (fan-in with
    bias, fan-out over all of the unit's columns / kernel taps).
    """

    X: torch.Tensor
    Z: torch.Tensor
    dZ_next: torch.Tensor
    G: torch.Tensor
    unit_norms: torch.Tensor
    consumer_input: tuple[int, ...] | None = None


def _check_gradient_slot(s: LayerSlot) -> None:
    if len(s.producers) != 1 or len(s.consumers) != 1:
        raise NotImplementedError(
            f"slot {s.name}: gradient-based neurogenesis needs a slot with one producer and one "
            "consumer (a residual stream has several: grow it with its group, measured on the "
            "group's first block, see growth.wrn_groups)"
        )
    prod, cons = s.producers[0], s.consumers[0]
    if s.kind == "dense":
        if cons.spatial != 1:
            raise NotImplementedError(f"slot {s.name}: flatten boundary on a dense slot")
        return
    if not isinstance(prod, nn.Conv2d):
        raise NotImplementedError(f"slot {s.name}: conv slot with a {type(prod).__name__}")
    if isinstance(prod.padding, str):
        raise NotImplementedError(f"slot {s.name}: string padding {prod.padding!r}")
    if isinstance(cons.module, nn.Conv2d):
        if isinstance(cons.module.padding, str) or cons.spatial != 1:
            raise NotImplementedError(f"slot {s.name}: unsupported consumer convolution")
    elif not isinstance(cons.module, nn.Linear):
        raise NotImplementedError(f"slot {s.name}: consumer {type(cons.module).__name__}")


def pool_ratio(produced: Sequence[int], read: Sequence[int], name: str = "") -> int:
    """The integer factor ``r`` by which the ``(H, W)`` map a producer writes is pooled down to
    the ``(h, w)`` map its consumer reads (1: no pooling). Raises if it is not ``r x r``
    pooling of a map whose sides are multiples of ``r``."""
    (H, W), (h, w) = tuple(produced), tuple(read)
    if (H, W) == (h, w):
        return 1
    r = H // h if h else 0
    if r < 2 or H != r * h or W != r * w:
        raise NotImplementedError(
            f"slot {name}: cannot relate the {H}x{W} map of the producer to the {h}x{w} map "
            "its consumer reads (only r x r pooling of sides divisible by r is supported)"
        )
    return r


def _read_map_shape(slot: LayerSlot, z_shape, cons_in_shape) -> tuple[int, int]:
    """``(h, w)`` of the map of the slot's units that its consumer reads."""
    cons = slot.consumers[0]
    if isinstance(cons.module, nn.Conv2d):
        return tuple(cons_in_shape[-2:])
    H, W = z_shape[-2:]
    S = cons.spatial
    r = math.isqrt(max(1, (H * W) // max(S, 1)))
    if r * r * S != H * W:
        raise NotImplementedError(f"slot {slot.name}: {H}x{W} map flattened into {S} positions")
    return H // r, W // r


def fan_out_basis_gradient(
    slot: LayerSlot, dz: torch.Tensor, read_shape: Sequence[int], out_shape: Sequence[int]
) -> torch.Tensor:
    """``(n, P, H', W')``: for every entry ``e`` of one new unit's fan-out (in the consumer's
    layout), ``dL/dh`` of that unit's post-activation map when its fan-out is the one-hot
    ``e`` (the adjoint of the consumer applied to ``dL/dZ_{l+1}``), mapped back through the
    pooling between producer and consumer with the adjoint of ``r x r`` average pooling
    (``H' x W'`` is the producer's output map)."""
    cons = slot.consumers[0]
    module = cons.module
    w = getattr(module, "weight_orig", module.weight)
    n = dz.shape[0]
    h, wd = read_shape
    if isinstance(module, nn.Conv2d):
        out, kh, kw = w.shape[0], w.shape[2], w.shape[3]
        P = out * kh * kw
        eye = torch.eye(P, dtype=dz.dtype, device=dz.device)
        basis = eye.reshape(P, out, kh, kw).transpose(0, 1)  # (out, P, kh, kw)
        d = torch.nn.grad.conv2d_input(
            (n, P, h, wd), basis, dz, module.stride, module.padding, module.dilation, 1
        )
    else:  # dense consumer reading the flattened (C, h, w) map, channel-major
        out, S = w.shape[0], cons.spatial
        eye = torch.eye(S, dtype=dz.dtype, device=dz.device).reshape(1, 1, S, h, wd)
        d = (dz[:, :, None, None, None] * eye).reshape(n, out * S, h, wd)
    r = pool_ratio(out_shape, (h, wd), slot.name)
    if r > 1:
        d = d.repeat_interleave(r, 2).repeat_interleave(r, 3) / (r * r)
    return d


def conv_auxiliary_matrix(
    slot: LayerSlot,
    X: torch.Tensor,
    dz: torch.Tensor,
    out_shape: Sequence[int],
    read_shape: Sequence[int],
    chunk: int = 1 << 24,
) -> torch.Tensor:
    """The auxiliary gradient ``G`` ``(P, Q)`` of a convolutional slot (GradMax, Evci et al.
    2022, for convolutions).

    A new channel with fan-in kernel ``w`` (``Q = C_{l-1} k_l^2`` entries) and fan-out ``u``
    (``P`` entries: a ``C_{l+1} x k_{l+1} x k_{l+1}`` kernel, or the ``out x spatial`` columns of
    a dense consumer at the flatten boundary) adds ``u * pool(sigma(BN(conv(H_{l-1}, w))))`` to
    ``Z_{l+1}``. Linearised at ``w = 0`` with ``sigma'(0) = 1`` (the modified ReLU of §6.3.1,
    as the dense ``G = dZ_{l+1}^T H_{l-1}^T`` assumes), the new channel's BatchNorm scale left
    out (a positive constant per channel, it does not change singular vectors) and max-pooling
    of the all-zero map replaced by the adjoint of average pooling (its ties split evenly),
    ``dL/dw = G^T u`` with

        ``G = sum_{samples, positions p} D(p) patch_l(H_{l-1}, p)^T``

    where ``patch_l`` is the producer's ``k_l x k_l`` receptive field at output position ``p``
    (``F.unfold``, with the producer's stride, padding and dilation) and ``D(p)`` (``P``
    values) the :func:`fan_out_basis_gradient` of ``dL/dZ_{l+1}`` at ``p`` (for a ``'same'``
    stride-1 consumer, the ``k_{l+1} x k_{l+1}`` patch of ``dL/dZ_{l+1}`` around ``p``, flipped).
    This full ``k_l x k_{l+1}`` bridging is used rather than the 1x1 centre-tap simplification
    (``G = sum_p dZ_{l+1}(p) H_{l-1}(p)^T``) because, up to the three linearisation choices
    above, it is the gradient the new channel's fan-in actually receives in the network (no
    pooling, ``sigma'(0) = 1``, evaluation-mode BatchNorm: exactly, up to the BN scale), so the
    GradMax fan-out maximises the real gradient norm and the fan-out keeps the consumer's
    kernel layout.
    Samples are processed in chunks of about ``chunk`` values.
    """
    prod = slot.producers[0]
    patches_all = F.unfold(
        X, prod.kernel_size, dilation=prod.dilation, padding=prod.padding, stride=prod.stride
    )  # (n, Q, L)
    n, Q, L = patches_all.shape
    cw = getattr(slot.consumers[0].module, "weight_orig", slot.consumers[0].module.weight)
    P = cw.numel() // slot.width  # entries of one unit's fan-out
    G = patches_all.new_zeros(P, Q)
    step = max(1, chunk // max(1, L * (P + Q)))
    for i in range(0, n, step):
        j = min(n, i + step)
        D = fan_out_basis_gradient(slot, dz[i:j], read_shape, out_shape).flatten(2)
        G += torch.einsum("npl,nql->pq", D.to(G.dtype), patches_all[i:j])
    return G


class GradientRecorder:
    """Forward hooks that record, for every slot, what one forward/backward pass tells
    :class:`AuxiliaryGradient`: the producer's input and output, the shape of the consumer's
    input, the consumer's output and (with ``capture_dz``) its gradient, caught by a tensor hook
    when the backward pass reaches it.

    It serves the extra pass of :func:`auxiliary_gradients` and, armed before a training step
    (:class:`~structlab.neurogenesis.growth.Neurogenesis` does so), lets a gradient trigger
    reuse the forward and backward pass that training has already run: :meth:`aux` then reads
    the parameter gradients from ``.grad``.
    """

    def __init__(self, slots: Sequence[LayerSlot], *, capture_dz: bool = True) -> None:
        for s in slots:
            _check_gradient_slot(s)
        self.names = [s.name for s in slots]
        self.capture_dz = capture_dz
        self.armed = True
        self.xs: dict[str, torch.Tensor] = {}
        self.zs: dict[str, torch.Tensor] = {}
        self.znext: dict[str, torch.Tensor] = {}
        self.cin: dict[str, tuple[int, ...]] = {}
        self.dz: dict[str, torch.Tensor] = {}
        self._handles = []
        for s in slots:
            prod, cons = s.producers[0], s.consumers[0].module
            self._handles += [
                prod.register_forward_pre_hook(self._pre(s.name)),
                prod.register_forward_hook(self._post(s.name)),
                cons.register_forward_pre_hook(self._cpre(s.name)),
                cons.register_forward_hook(self._next(s.name)),
            ]

    def _pre(self, name: str):
        def hook(module, args):
            if self.armed:
                self.xs[name] = args[0].detach()

        return hook

    def _post(self, name: str):
        def hook(module, args, out):
            if self.armed:
                self.zs[name] = out.detach()

        return hook

    def _cpre(self, name: str):
        def hook(module, args):
            if self.armed:
                self.cin[name] = tuple(args[0].shape)

        return hook

    def _next(self, name: str):
        def keep(grad: torch.Tensor) -> None:
            self.dz[name] = grad.detach()

        def hook(module, args, out):
            if self.armed:
                self.znext[name] = out
                if self.capture_dz and out.requires_grad:
                    out.register_hook(keep)

        return hook

    @property
    def complete(self) -> bool:
        """Whether a whole forward and backward pass was recorded for every slot."""
        need = (self.xs, self.zs, self.cin) + ((self.dz,) if self.capture_dz else ())
        return all(name in d for d in need for name in self.names)

    def clear(self) -> None:
        for d in (self.xs, self.zs, self.znext, self.cin, self.dz):
            d.clear()

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def aux(self, slots: Sequence[LayerSlot], grads=None) -> dict[str, AuxiliaryGradient]:
        """:class:`AuxiliaryGradient` of every slot from the recorded pass. ``grads`` maps a
        parameter to its gradient (default: its ``.grad``, as left by a training step)."""
        grad_of = (lambda p: p.grad) if grads is None else grads
        result = {}
        for s in slots:
            prod, cons = s.producers[0], s.consumers[0].module
            M = s.width
            g_in = grad_of(prod.weight)
            g_in = torch.zeros_like(prod.weight) if g_in is None else g_in
            rows = g_in.reshape(M, -1).pow(2).sum(1)
            g_bias = None if prod.bias is None else grad_of(prod.bias)
            if g_bias is not None:
                rows = rows + g_bias.pow(2)
            g_out = grad_of(cons.weight)
            g_out = torch.zeros_like(cons.weight) if g_out is None else g_out
            cols = g_out.reshape(g_out.shape[0], M, -1).pow(2).sum((0, 2))
            norms = rows.sqrt() + cols.sqrt()
            dz = self.dz.get(s.name)
            dz = torch.zeros_like(self.znext[s.name]) if dz is None else dz
            if s.kind == "dense":
                X = self.xs[s.name].flatten(1)
                G = dz.T @ X
                shape = None
            else:
                X = self.xs[s.name]
                shape = self.cin[s.name]
                read = _read_map_shape(s, self.zs[s.name].shape, shape)
                G = conv_auxiliary_matrix(s, X, dz, self.zs[s.name].shape[-2:], read)
            result[s.name] = AuxiliaryGradient(
                X=X,
                Z=self.zs[s.name],
                dZ_next=dz,
                G=G,
                unit_norms=norms.detach(),
                consumer_input=shape,
            )
        return result


def auxiliary_gradients(
    model: nn.Module,
    slots: Sequence[LayerSlot],
    inputs: torch.Tensor,
    targets: torch.Tensor,
    loss_fn=None,
) -> dict[str, AuxiliaryGradient]:
    """One extra forward/backward pass on a mini-batch, recording for every slot the
    quantities of :class:`AuxiliaryGradient`. Parameter gradients are computed into fresh
    tensors (``torch.autograd.grad``), so the optimizer's ``.grad`` are left alone, and
    BatchNorm running statistics are restored after the pass.

    Dense slots and convolutional slots with one producer and one consumer are supported
    (channel-wise BatchNorm, activation and ``r x r`` pooling may sit between them; the last
    convolution of a VGG, read by a dense layer through ``flatten``, too). A slot with several
    producers or consumers (a residual stream) raises ``NotImplementedError``."""
    loss_fn = loss_fn or nn.functional.cross_entropy
    recorder = GradientRecorder(slots, capture_dz=False)
    # the extra pass must not move BatchNorm running statistics (nor the function in eval mode)
    saved = [
        (m, name, buf.clone())
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
        for name, buf in m.named_buffers(recurse=False)
        if buf is not None
    ]
    try:
        loss = loss_fn(model(inputs), targets)
    finally:
        recorder.remove()
    params = []
    for s in slots:
        params += [s.producers[0].weight, s.consumers[0].module.weight]
        if s.producers[0].bias is not None:
            params.append(s.producers[0].bias)
    params = list(dict.fromkeys(params))  # unique, in order
    outs = [recorder.znext[s.name] for s in slots]
    try:
        grads = torch.autograd.grad(loss, params + outs, allow_unused=True)
    finally:
        with torch.no_grad():
            for m, name, buf in saved:
                getattr(m, name).copy_(buf)
    by_param = {id(p): g for p, g in zip(params, grads[: len(params)])}
    for s, dz in zip(slots, grads[len(params) :]):
        if dz is not None:
            recorder.dz[s.name] = dz.detach()
    return recorder.aux(slots, lambda p: by_param.get(id(p)))


class GradientTrigger:
    """``T_grad`` (eq. 32): the number of singular values of the auxiliary gradient larger than
    ``scale`` times the sum over the layer's units of their fan-in and fan-out gradient norms
    (eq. 32; for a convolution, per channel ``||dL/dW_in[c]|| + ||dL/dW_out[:, c]||`` over the
    whole kernels). The count is a non-negative integer at most ``min(P, Q)``, the number of
    singular values of ``G`` ``(P, Q)``: ``min(M_{l+1}, M_{l-1})`` for a dense layer,
    ``min(C_{l+1} k_{l+1}^2, C_{l-1} k_l^2)`` for a convolution (``out * spatial`` replacing
    ``C_{l+1} k_{l+1}^2`` at the flatten boundary); GradMax cannot add more independent
    fan-outs (:func:`~structlab.neurogenesis.growth.gradmax_capacity`).

    ``scale=1`` is eq. 32; the authors' code uses half the sum (``scale=0.5``).
    """

    source = "gradients"

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale
        self.last: dict[str, float] = {}

    def __call__(self, name: str, aux: AuxiliaryGradient) -> int:
        # singular values of G from the eigenvalues of its smaller Gram matrix (float64): the
        # same numbers up to rounding, several times cheaper than an SVD of G
        sv = torch.linalg.eigvalsh(small_gram(aux.G)).clamp_min(0).sqrt()
        threshold = self.scale * float(aux.unit_norms.sum())
        self.last[name] = float(sv[-1]) / max(threshold, 1e-300) if sv.numel() else 0.0
        return int((sv > threshold).sum())
