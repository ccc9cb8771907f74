"""The DARTS convolutional search supernet, with softmax or CRB activation of the architecture
weights (thesis §5.1 and §5.2.5; Liu et al. 2019, §2.2).

The supernet stacks ``layers`` cells. Every cell reads the outputs ``s0 = c_{k-2}`` and
``s1 = c_{k-1}`` of the two previous cells (the stem output twice for the first cell),
preprocesses them to ``C`` channels (1x1 :class:`~structlab.darts.operations.ReLUConvBN`, or
:class:`~structlab.darts.operations.FactorizedReduce` for ``s0`` when the previous cell halved
the resolution) and computes ``steps`` intermediate nodes,

``x_i = sum_{j < i + 2} sum_p a_{ijp} o_p(x_j)``   (the continuous relaxation of §5.1),

where ``x_0, x_1`` are the preprocessed inputs, ``o_p`` runs over the primitives and ``a`` are
the *activated* architecture weights. The cell's output concatenates its last ``multiplier``
nodes (``multiplier * C`` channels). Cells at positions ``layers // 3`` and ``2 * layers // 3``
are reduction cells: their edges from the two inputs have stride 2 and they double ``C``. All
normal cells share one weight matrix ``alpha_normal [E, P]`` and all reduction cells
``alpha_reduce [E, P]`` (``E = 14`` edges for 4 nodes, in the order of
:func:`~structlab.darts.genotypes.cell_edges`).

Two activations (``activation=``):

* ``"softmax"`` (DARTS): ``a_{ij.} = softmax(alpha_{ij.})`` over the 8 primitives of an edge,
  ``none`` included; alphas start at ``1e-3 * N(0, 1)`` as in DARTS.
* ``"crb"`` (Clipped ReLU Batchnorm, §5.2.5): ``a = clamp(alpha, 0, 1)``, ``none`` removed (7
  primitives), and a non-affine BatchNorm after the sum of each node's incoming edges, so that
  edge outputs stay normalised although the weights of an edge no longer sum to 1. Alphas start
  at ``1/P + 1e-4 * N(0, 1)`` (``1/7`` for DARTS's space) as in the DARTS-PRIME authors' code:
  every weight starts well inside ``(0, 1]``, at the value the softmax gives a uniform edge, so
  both activations start from comparable mixtures. An operation whose raw alpha becomes
  non-positive is removed by :meth:`Supernet.prune_nonpositive` (progressive pruning): its
  module is deleted (no compute, no parameters) and a mask buffer keeps its activated weight at
  exactly 0 from then on, whatever the optimiser later does to its raw alpha.

Which operations a forward pass computes. ``none`` contributes ``w * 0`` and is never computed.
An operation whose weight is exactly 0 is skipped when that is exact for both the output and the
gradients: when no gradient flows to the weights (they do not require grad, or grad mode is off,
e.g. projected binary weights or evaluation) or, with CRB, when its raw alpha is negative (the
clamp's derivative is then 0 as well). Skipped operations leave their parameters with no
gradient (``None``) where a computed one would leave zeros; an optimiser then leaves them alone
(no momentum or weight-decay step), as DARTS-PRIME's own code does.

Small ``layers``: the reduction positions ``{layers // 3, 2 * layers // 3}`` follow DARTS for
every ``layers >= 1``. For ``layers = 3`` the cells are normal, reduce, reduce; for ``layers = 2``
both cells reduce and for ``layers = 1`` the single cell reduces, so ``alpha_normal`` is then
unused (it receives no gradient) and its projection is arbitrary; ``layers >= 3`` searches both
cell types. Two reductions of a 28x28 input leave 7x7, of a 32x32 input 8x8.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from structlab.darts.genotypes import (
    Genotype,
    cell_edges,
    genotype_from_projection,
    num_edges,
    project_cell,
)
from structlab.darts.operations import (
    CRB_PRIMITIVES,
    PRIMITIVES,
    FactorizedReduce,
    ReLUConvBN,
    make_op,
    make_stem,
)

__all__ = ["ACTIVATIONS", "MixedOp", "SearchCell", "Supernet", "reduction_positions"]

ACTIVATIONS = ("softmax", "crb")


def reduction_positions(layers: int) -> list[int]:
    """Indices of the reduction cells among ``layers`` cells: ``layers // 3`` and
    ``2 * layers // 3`` (one cell when they coincide), as in DARTS."""
    if layers < 1:
        raise ValueError(f"a network needs at least one cell, got layers={layers}")
    return sorted({layers // 3, 2 * layers // 3})


class MixedOp(nn.Module):
    """All primitives on one edge: ``x [B, C, H, W] -> sum_p w_p o_p(x)``,
    ``[B, C, H/s, W/s]``.

    ``ops[p]`` is ``None`` once primitive ``p`` is pruned (:meth:`prune`); ``none`` is never
    instantiated (it contributes 0). Pools carry a non-affine BatchNorm, every BatchNorm is
    non-affine (DARTS's supernet)."""

    def __init__(self, C: int, stride: int, primitives: Sequence[str]):
        super().__init__()
        self.stride = stride
        self.primitives = list(primitives)
        self.ops = nn.ModuleList(
            [
                None if name == "none" else make_op(name, C, stride, False, pool_bn=True)
                for name in self.primitives
            ]
        )

    def prune(self, p: int) -> None:
        """Remove primitive ``p`` from the edge (idempotent)."""
        self.ops[p] = None

    def forward(
        self, x: torch.Tensor, weights: torch.Tensor, compute: Sequence[bool] | None = None
    ) -> torch.Tensor | None:
        """``sum_p weights[p] * ops[p](x)`` over the instantiated primitives with
        ``compute[p]`` true (all when ``compute`` is ``None``); ``None`` when nothing is
        computed (the edge contributes exactly 0)."""
        out = None
        for p, op in enumerate(self.ops):
            if op is None or (compute is not None and not compute[p]):
                continue
            term = weights[p] * op(x)
            out = term if out is None else out + term
        return out


class SearchCell(nn.Module):
    """A supernet cell: ``(s0 [B, C_pp, H0, W0], s1 [B, C_p, H, W]) -> [B, multiplier*C, H', W']``
    with ``H' = H / 2`` for a reduction cell.

    ``edges[e]`` is the :class:`MixedOp` of edge ``e`` (order of
    :func:`~structlab.darts.genotypes.cell_edges`). With ``node_bn=True`` (CRB) every node is
    followed by a non-affine ``BatchNorm2d(C)``."""

    def __init__(
        self,
        steps: int,
        multiplier: int,
        C_prev_prev: int,
        C_prev: int,
        C: int,
        reduction: bool,
        reduction_prev: bool,
        primitives: Sequence[str],
        node_bn: bool = False,
    ):
        super().__init__()
        self.reduction = reduction
        self.steps = steps
        self.multiplier = multiplier
        self.C = C
        if reduction_prev:
            self.preprocess0 = FactorizedReduce(C_prev_prev, C, affine=False)
        else:
            self.preprocess0 = ReLUConvBN(C_prev_prev, C, 1, 1, 0, affine=False)
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0, affine=False)
        self.edges = nn.ModuleList(
            [
                MixedOp(C, 2 if reduction and j < 2 else 1, primitives)
                for _, j in cell_edges(steps)
            ]
        )
        self.node_bns = (
            nn.ModuleList([nn.BatchNorm2d(C, affine=False) for _ in range(steps)])
            if node_bn
            else None
        )

    def forward(
        self,
        s0: torch.Tensor,
        s1: torch.Tensor,
        weights: torch.Tensor,
        compute: Sequence[Sequence[bool]] | None = None,
    ) -> torch.Tensor:
        """``weights [E, P]`` activated; ``compute[e][p]`` says which operations to evaluate."""
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        stride = 2 if self.reduction else 1
        offset = 0
        for i in range(self.steps):
            node = None
            for j, h in enumerate(states):
                e = offset + j
                term = self.edges[e](h, weights[e], None if compute is None else compute[e])
                if term is not None:
                    node = term if node is None else node + term
            if node is None:  # every incoming operation skipped: the node is exactly 0
                ref = states[1]
                B, _, H, W = ref.shape
                node = ref.new_zeros(B, self.C, -(-H // stride), -(-W // stride))
            if self.node_bns is not None:
                node = self.node_bns[i](node)
            offset += len(states)
            states.append(node)
        return torch.cat(states[-self.multiplier :], dim=1)


class Supernet(nn.Module):
    """DARTS's search network (``Network`` of quark0/darts ``model_search.py``) implementing the
    supernet protocol of :mod:`structlab.darts`.

    Args:
        C: channels of the first cells (doubled at each reduction cell).
        num_classes: outputs of the classifier.
        layers: number of cells (DARTS searches with 8; reduction cells at ``layers // 3`` and
            ``2 * layers // 3``, see the module docstring for small values).
        in_channels: image channels (3 for CIFAR, 1 for Fashion-MNIST).
        steps: intermediate nodes per cell; multiplier: how many of the last nodes a cell
            concatenates; stem_multiplier: the stem outputs ``stem_multiplier * C`` channels.
        activation: ``"softmax"`` (DARTS, 8 primitives) or ``"crb"`` (7 primitives, no ``none``).
        device: where to create the parameters.

    ``forward(x [B, in_channels, H, W]) -> logits [B, num_classes]`` (any ``H, W`` from 4 on).
    """

    def __init__(
        self,
        C: int,
        num_classes: int,
        layers: int,
        *,
        in_channels: int = 3,
        steps: int = 4,
        multiplier: int = 4,
        stem_multiplier: int = 3,
        activation: str = "softmax",
        device: torch.device | str | None = None,
    ):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        if not 1 <= multiplier <= steps:
            raise ValueError(f"multiplier must be in 1..steps={steps}, got {multiplier}")
        self.activation = activation
        self.primitives = list(CRB_PRIMITIVES if activation == "crb" else PRIMITIVES)
        self.C, self.num_classes, self.layers = C, num_classes, layers
        self.steps, self.multiplier = steps, multiplier
        self.reductions = reduction_positions(layers)

        C_curr = stem_multiplier * C
        self.stem = make_stem(in_channels, C_curr)
        C_prev_prev, C_prev, C_curr = C_curr, C_curr, C
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(layers):
            reduction = i in self.reductions
            if reduction:
                C_curr *= 2
            self.cells.append(
                SearchCell(
                    steps,
                    multiplier,
                    C_prev_prev,
                    C_prev,
                    C_curr,
                    reduction,
                    reduction_prev,
                    self.primitives,
                    node_bn=activation == "crb",
                )
            )
            reduction_prev = reduction
            C_prev_prev, C_prev = C_prev, multiplier * C_curr
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, num_classes)

        E, P = num_edges(steps), len(self.primitives)
        if activation == "crb":
            init = [1.0 / P + 1e-4 * torch.randn(E, P) for _ in range(2)]
        else:
            init = [1e-3 * torch.randn(E, P) for _ in range(2)]
        self.alphas_normal = nn.Parameter(init[0])
        self.alphas_reduce = nn.Parameter(init[1])
        self.register_buffer("mask_normal", torch.ones(E, P))
        self.register_buffer("mask_reduce", torch.ones(E, P))
        if device is not None:
            self.to(device)

    # ------------------------------------------------------------------ protocol
    def arch_parameters(self) -> list[nn.Parameter]:
        """``[alpha_normal [E, P], alpha_reduce [E, P]]`` (raw architecture weights)."""
        return [self.alphas_normal, self.alphas_reduce]

    def weight_parameters(self) -> list[nn.Parameter]:
        """Every other trainable parameter (pruned operations have none left)."""
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if p.requires_grad and id(p) not in arch]

    def masks(self) -> list[torch.Tensor]:
        """``[mask_normal, mask_reduce]``: 1 for live operations, 0 for pruned ones."""
        return [self.mask_normal, self.mask_reduce]

    def activate(self, alpha: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Softmax over the primitives of each edge, or CRB's ``clamp(alpha, 0, 1) * mask``."""
        if self.activation == "softmax":
            return F.softmax(alpha, dim=-1)
        out = alpha.clamp(0.0, 1.0)
        return out if mask is None else out * mask

    def activated_weights(self) -> list[torch.Tensor]:
        """Activated ``[a_normal, a_reduce]`` (differentiable w.r.t. the alphas; pruned
        operations exactly 0)."""
        return [self.activate(a, m) for a, m in zip(self.arch_parameters(), self.masks())]

    @torch.no_grad()
    def project(self, weights: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """``Pi_S`` (eqs. 13-16) of each cell's weights: binary tensors of the same shapes."""
        return [project_cell(w, self.primitives, self.steps) for w in weights]

    def genotype(self) -> Genotype:
        """The discrete architecture ``Pi_S(activated_weights())`` as a genotype. (CRB: a node
        with fewer than two edges holding a live operation still gets two genes; the extra edge
        has strength 0 and, by the tie rule, its first primitive, which may be pruned.)"""
        normal, reduce = self.project(self.activated_weights())
        return genotype_from_projection(
            normal, reduce, self.primitives, self.steps, self.multiplier
        )

    @torch.no_grad()
    def prune_nonpositive(self) -> list[tuple[int, int, int]]:
        """CRB progressive pruning (§5.2.5): remove every live operation whose raw alpha is
        ``<= 0`` from all cells of its type; return the newly pruned ``(alpha index, edge, op)``
        (0 = normal, 1 = reduce), sorted. Idempotent; softmax supernets return ``[]``. The raw
        alphas are left as they are; their masks keep the activated weights at 0."""
        if self.activation != "crb":
            return []
        pruned = []
        for a, (alpha, mask) in enumerate(zip(self.arch_parameters(), self.masks())):
            new = (alpha <= 0) & (mask > 0)
            for e, p in new.nonzero().tolist():
                pruned.append((a, e, p))
            mask[new] = 0.0
        self._remove_masked_ops()
        return sorted(pruned)

    def _remove_masked_ops(self) -> None:
        for cell in self.cells:
            mask = self.mask_reduce if cell.reduction else self.mask_normal
            for e, p in (mask == 0).nonzero().tolist():
                cell.edges[e].prune(p)

    def arch_state(self) -> dict:
        """A copy of the architecture state: activation, primitives, raw alphas and masks."""
        return {
            "activation": self.activation,
            "primitives": list(self.primitives),
            "alphas": [a.detach().clone() for a in self.arch_parameters()],
            "masks": [m.detach().clone() for m in self.masks()],
        }

    @torch.no_grad()
    def load_arch_state(self, state: dict) -> None:
        """Restore :meth:`arch_state` output: copies alphas and masks and removes the masked
        operations (a pruned operation cannot be revived). To restore a pruned supernet, call
        this before ``load_state_dict`` so that the module structures match."""
        if state["activation"] != self.activation or list(state["primitives"]) != self.primitives:
            raise ValueError("architecture state of a different search space")
        for mine, theirs in zip(self.masks(), state["masks"]):
            if bool(((theirs > 0) & (mine == 0)).any()):
                raise ValueError("cannot revive operations this supernet has already pruned")
        for dst, src in zip(self.arch_parameters(), state["alphas"]):
            dst.copy_(src)
        for dst, src in zip(self.masks(), state["masks"]):
            dst.copy_(src)
        self._remove_masked_ops()

    # ------------------------------------------------------------------ forward
    def _compute_flags(
        self, weights: torch.Tensor, alpha: torch.Tensor | None, mask: torch.Tensor
    ) -> list[list[bool]]:
        """Which operations a forward pass must evaluate (see the module docstring)."""
        needs_grad = torch.is_grad_enabled() and weights.requires_grad
        zero = weights.detach() == 0
        if not needs_grad:
            skip = zero
        elif alpha is not None and self.activation == "crb":
            skip = zero & (alpha.detach() < 0)
        else:
            skip = torch.zeros_like(zero)
        return (~skip & (mask > 0)).tolist()

    def forward(
        self, x: torch.Tensor, weights: Sequence[torch.Tensor] | None = None
    ) -> torch.Tensor:
        """``x [B, in_channels, H, W] -> logits [B, num_classes]``, mixing the operations with
        ``weights = [w_normal, w_reduce]`` (default: :meth:`activated_weights`; pass e.g. the
        projected weights to evaluate the discrete architecture inside the supernet). Weights on
        pruned operations are ignored: those operations no longer exist."""
        if weights is None:
            weights, alphas = self.activated_weights(), self.arch_parameters()
        else:
            weights, alphas = list(weights), [None, None]
        flags = {}
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            k = 1 if cell.reduction else 0
            if k not in flags:
                flags[k] = self._compute_flags(weights[k], alphas[k], self.masks()[k])
            s0, s1 = s1, cell(s0, s1, weights[k], flags[k])
        out = self.global_pooling(s1)
        return self.classifier(out.flatten(1))
