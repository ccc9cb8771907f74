"""Group convolutions on the pixel grid, the relaxation morphism and [G]-mixed layers (§4.2-4.3).

**Feature maps.** Every feature map between layers is stored in one *canonical layout* over a
reference group ``T`` (D4 by default, the largest group of the search space): a tensor of shape
``(B, C * |T|, H, W)`` whose channel ``c * |T| + i`` is the response of base channel ``c`` at
group element ``T.elements[i]`` — the field ``f_c(g)`` of eq. 2. A layer parameterized over a
subgroup ``G <= T`` sees the same tensor through the relaxed layout of eq. 4,
``f~_(c, s)(g') = f_c(g' s)``, with ``s`` running over the representatives ``R`` of ``G \\ T``. The
symmetry ``u`` in ``G`` acts on a canonical map by the spatial action and
``(c, g) -> (c, u g)`` on the group axis, whichever subgroup the layer was built on, so a relaxed
layer reads and writes the same tensors as the layer it came from and the next layer needs no
change.

**Layers.** :class:`GroupConv2d` stores its kernel ``psi`` of shape
``(C_out |R|, C_in |R|, |G|, k, k)`` (for a lifting layer ``(C_out |R|, C_in, 1, k, k)``) and
expands it with the group's actions into one ``conv2d`` kernel of shape
``(C_out |T|, C_in |T|, k, k)``, as §4.3.1 describes:

    W[(d, g), (c, h)] = g . psi[d, c, g^-1 h]          (eq. 2; eq. 3 for lifting)

**Morphism.** :func:`relax` re-reads a layer's expanded kernel as a layer over a subgroup
``G' <= G``: ``psi~[(d, t), (c, s), g'] = t . psi[d, c, t^-1 g' s]`` (eq. 5). The expanded kernel,
and with it the layer's output, is unchanged exactly (a reindexing of the same numbers).

**Mixing.** :class:`MixedGroupConv` sums the expanded kernels of one branch per group with
architecture weights ``z = softmax(alpha)`` (eq. 11-12), each branch weight-normalized with its
norm frozen after initialization (§4.4.2); :class:`ResidualPathwayConv` is RPP's D4 + C1 layer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cache

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrizations

from structlab.equivariance.groups import Element, Group, get_group

__all__ = [
    "FieldLayout",
    "GroupConv2d",
    "GroupBatchNorm2d",
    "GroupPool",
    "MixedGroupConv",
    "ResidualPathwayConv",
    "relax",
    "relax_norm",
    "relax_pool_and_linear",
    "mixing_weights",
]


def _group(g: Group | str) -> Group:
    return get_group(g)


class FieldLayout:
    """How a subgroup ``G`` of the reference group ``T`` sees a canonical feature map (eq. 4).

    ``C`` base channels over ``T`` become ``C |R|`` relaxed channels over ``G``. The *natural*
    order of a ``G``-layer is ``(relaxed channel, element of G)``; :attr:`natural_to_canonical`
    maps natural index ``n = c~ |G| + j`` to the canonical channel that holds it.
    """

    def __init__(self, channels: int, group: Group | str, reference: Group | str) -> None:
        self.channels = int(channels)
        self.group = _group(group)
        self.reference = _group(reference)
        if not self.group.is_subgroup_of(self.reference):
            raise ValueError(
                f"{self.group.name} is not a subgroup of the reference group {self.reference.name}"
            )
        self.representatives: list[Element] = self.reference.coset_representatives(self.group)
        self.natural_to_canonical = _natural_to_canonical(
            self.channels, self.group.name, self.reference.name
        )
        self.canonical_to_natural = torch.argsort(self.natural_to_canonical)

    @property
    def relaxed_channels(self) -> int:
        """``C |R|``: the number of independent channels of a ``G``-layer (§4.5)."""
        return self.channels * len(self.representatives)


@cache
def _natural_to_canonical(channels: int, group: str, reference: str) -> torch.Tensor:
    G, T = get_group(group), get_group(reference)
    reps = T.coset_representatives(G)
    out = []
    for c in range(channels):
        for r in reps:
            for h in G.elements:
                out.append(c * T.order + T.index(T.product(h, r)))
    return torch.tensor(out, dtype=torch.long)


def _cached_expansion(layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(layer.expanded_weight(), layer.expanded_bias())``, reused while autograd is off and no
    parameter of ``layer`` has changed (evaluation and inference pay for the expansion once).

    The cache is keyed by the storage and version counter of every parameter (the originals of
    a weight-norm parametrization included), so an optimizer step, ``load_state_dict``, a copy
    or a move to another device invalidates it. With autograd on, the expansion is recomputed so
    that gradients reach ``psi``.
    """
    if torch.is_grad_enabled():
        layer.__dict__.pop("_expansion_cache", None)
        return layer.expanded_weight(), layer.expanded_bias()
    params = tuple(layer.parameters())
    state = tuple((p.data_ptr(), p._version) for p in params)
    cached = layer.__dict__.get("_expansion_cache")
    if (
        cached is None
        or len(cached[0]) != len(params)
        or any(a is not b for a, b in zip(cached[0], params))
        or cached[1] != state
    ):
        cached = (params, state, layer.expanded_weight(), layer.expanded_bias())
        layer.__dict__["_expansion_cache"] = cached
    return cached[2], cached[3]


def _spatial_stack(kernels: Sequence[torch.Tensor], elements: Sequence[Element]) -> torch.Tensor:
    """Stack ``g . kernels[i]`` (spatial action on the last two dims) along a new dim 1."""
    return torch.stack([Group.act_on_kernel(k, g) for k, g in zip(kernels, elements)], dim=1)


class GroupConv2d(nn.Module):
    """A lifting (eq. 3) or group (eq. 2) convolution over ``G <= T``, computed as one conv2d.

    Args:
        in_channels: base input channels ``C_in`` (image channels for a lifting layer).
        out_channels: base output channels ``C_out``, counted for the reference group ``T``.
        kernel_size: odd ``k``; padding keeps the spatial size.
        group: the group ``G`` of the layer's weight sharing.
        reference: the reference group ``T`` of the canonical layout (default D4).
        lifting: input is a plain image ``(B, C_in, H, W)`` instead of a field over ``T``.

    Shapes: input ``(B, C_in |T|, H, W)`` (lifting: ``(B, C_in, H, W)``), output
    ``(B, C_out |T|, H, W)``; stored ``weight`` ``(C_out |R|, C_in |R|, |G|, k, k)`` (lifting:
    ``(C_out |R|, C_in, 1, k, k)``) and ``bias`` ``(C_out |R|,)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        group: Group | str = "D4",
        *,
        reference: Group | str = "D4",
        lifting: bool = False,
        bias: bool = True,
    ) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            if int(value) < 1:
                raise ValueError(f"{name} must be a positive integer, got {value}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}")
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size, self.lifting = int(kernel_size), bool(lifting)
        self.out_layout = FieldLayout(out_channels, group, reference)
        self.group, self.reference = self.out_layout.group, self.out_layout.reference
        self.in_layout = None if lifting else FieldLayout(in_channels, self.group, self.reference)
        n_in = self.in_channels if lifting else self.in_layout.relaxed_channels
        shape = (self.out_layout.relaxed_channels, n_in, 1 if lifting else self.group.order)
        self.weight = nn.Parameter(torch.empty(*shape, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(shape[0])) if bias else None
        # He initialisation for the fan-in of the expanded kernel.
        fan_in = (self.in_channels * (1 if lifting else self.reference.order)) * kernel_size**2
        nn.init.normal_(self.weight, std=math.sqrt(2.0 / fan_in))
        self.register_buffer("_row_order", self._rows(), persistent=False)
        if not lifting:
            self.register_buffer("_col_source", self._col_sources(), persistent=False)
        self.register_buffer("_gather", self._gather_indices(), persistent=False)
        self.register_buffer("_bias_gather", self._bias_indices(), persistent=False)

    # -- index bookkeeping ------------------------------------------------------------------
    def _rows(self) -> torch.Tensor:
        """Canonical output row -> natural row ``(d~, g)`` of the stacked expanded kernel."""
        return self.out_layout.canonical_to_natural.clone()

    def _col_sources(self) -> torch.Tensor:
        """``(|G|, C_in |T|)``: for element ``g`` and canonical input column ``(c~, h)``, the index
        ``c~ |G| + index(g^-1 h)`` into the stored kernel flattened over (channel, group)."""
        G = self.group
        nat = self.in_layout.canonical_to_natural  # canonical column -> natural (c~, h)
        c_rel, j = nat // G.order, nat % G.order
        table = G.cayley_table  # table[a, b] = index(g_a g_b)
        inv = torch.tensor([G.index(G.inverse(g)) for g in G.elements])
        # index(g^-1 h) for every g (rows) and h (cols)
        prod = table[inv][:, j]
        return c_rel.unsqueeze(0) * G.order + prod

    # -- the expanded kernel ----------------------------------------------------------------
    def _expand_by_actions(self, w: torch.Tensor) -> torch.Tensor:
        """The expansion of eq. 2-3 written out: ``|G|`` channel gathers, the spatial action of
        each element, a stack and a row permutation. Applied once, at construction, to the
        indices of ``psi`` (``w`` = ``arange``) to build the single gather :meth:`expanded_weight`
        uses; kept as the reference the tests compare that gather with."""
        G, k = self.group, self.kernel_size
        if self.lifting:
            per_g = [w[:, :, 0]] * G.order
        else:
            flat = w.reshape(w.shape[0], -1, k, k)
            per_g = [flat[:, self._col_source[i]] for i in range(G.order)]
        stacked = _spatial_stack(per_g, G.elements)  # (C~_out, |G|, C_in_total, k, k)
        natural = stacked.reshape(-1, stacked.shape[2], k, k)
        return natural[self._row_order]

    def _gather_indices(self) -> torch.Tensor | None:
        """For every entry of the expanded kernel, the flat index of the entry of ``psi`` it
        copies; ``None`` when that is the identity (a C1 layer: the expansion is a view)."""
        positions = torch.arange(self.weight.numel()).reshape(self.weight.shape)
        index = self._expand_by_actions(positions).reshape(-1)
        if index.numel() == positions.numel() and torch.equal(index, positions.reshape(-1)):
            return None
        return index

    def _bias_indices(self) -> torch.Tensor | None:
        index = torch.arange(self.out_layout.relaxed_channels)
        index = index.repeat_interleave(self.group.order)[self._row_order]
        return None if torch.equal(index, torch.arange(index.numel())) else index

    def expanded_shape(self) -> tuple[int, int, int, int]:
        """``(C_out |T|, C_in |T|, k, k)`` (lifting: ``(C_out |T|, C_in, k, k)``)."""
        T, k = self.reference.order, self.kernel_size
        n_in = self.in_channels if self.lifting else self.in_channels * T
        return (self.out_channels * T, n_in, k, k)

    def expanded_weight(self) -> torch.Tensor:
        """The conv2d kernel ``(C_out |T|, C_in |T|, k, k)`` in canonical order (eq. 2-3): one
        precomputed gather of ``psi`` (a view for C1)."""
        w = self.weight.reshape(-1)
        if self._gather is not None:
            w = w.index_select(0, self._gather)
        return w.view(self.expanded_shape())

    def expanded_bias(self) -> torch.Tensor | None:
        """The conv2d bias ``(C_out |T|,)``: one value per relaxed channel, shared over ``G``."""
        if self.bias is None:
            return None
        return self.bias if self._bias_gather is None else self.bias.index_select(
            0, self._bias_gather
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = _cached_expansion(self)
        return F.conv2d(x, weight, bias, padding=self.kernel_size // 2)

    # -- reading a kernel back ----------------------------------------------------------------
    @torch.no_grad()
    def load_expanded(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> GroupConv2d:
        """Set ``psi`` (and the bias) to the values read off an expanded canonical kernel.

        Reads the rows of the identity element: ``psi[d~, c~, h] = W[(d~, e), (c~, h)]``. This
        is exact when ``weight`` is ``G``-equivariant — the expansion of a layer over ``G`` or
        over any group containing ``G`` (that is the relaxation morphism, eq. 5).
        """
        G, k = self.group, self.kernel_size
        e_rows = self.out_layout.natural_to_canonical[:: G.order]  # (d~, e) for every d~
        rows = weight[e_rows]
        if self.lifting:
            psi = rows.unsqueeze(2)
        else:
            cols = self.in_layout.natural_to_canonical  # natural (c~, h) -> canonical column
            psi = rows[:, cols].reshape(rows.shape[0], -1, G.order, k, k)
        self.weight.copy_(psi)
        if self.bias is not None:
            if bias is None:
                raise ValueError("this layer has a bias; pass the expanded bias too")
            self.bias.copy_(bias[e_rows])
        return self

    def to_conv2d(self) -> nn.Conv2d:
        """A plain ``nn.Conv2d`` with the same outputs (the expanded kernel, frozen as weights)."""
        w, b = self.expanded_weight().detach(), self.expanded_bias()
        conv = nn.Conv2d(
            w.shape[1],
            w.shape[0],
            self.kernel_size,
            padding=self.kernel_size // 2,
            bias=b is not None,
        ).to(w.device, w.dtype)
        with torch.no_grad():
            conv.weight.copy_(w)
            if b is not None:
                conv.bias.copy_(b.detach())
        return conv

    def extra_repr(self) -> str:
        kind = "lifting" if self.lifting else "group"
        return (
            f"{kind}, {self.in_channels}->{self.out_channels} base channels, "
            f"group={self.group.name}, reference={self.reference.name}, "
            f"k={self.kernel_size}, stored={tuple(self.weight.shape)}"
        )


def relax(layer: GroupConv2d, group: Group | str) -> GroupConv2d:
    """The equivariance relaxation morphism (eq. 4-10): ``layer`` re-parameterized over ``group``.

    ``group`` must be a subgroup of ``layer.group``; the returned layer has ``|G \\ G'|`` times
    as many stored parameters and exactly the same expanded kernel, hence the same outputs on
    every input. The next layer reads the same canonical feature map and is left unchanged.
    """
    new_group = _group(group)
    if not new_group.is_subgroup_of(layer.group):
        raise ValueError(
            f"cannot relax a {layer.group.name} layer to {new_group.name}: {new_group.name} is "
            f"not a subgroup of {layer.group.name} (its subgroups: "
            + ", ".join(g.name for g in layer.group.subgroups())
            + ")"
        )
    new = GroupConv2d(
        layer.in_channels,
        layer.out_channels,
        layer.kernel_size,
        new_group,
        reference=layer.reference,
        lifting=layer.lifting,
        bias=layer.bias is not None,
    ).to(layer.weight.device, layer.weight.dtype)
    with torch.no_grad():
        new.load_expanded(layer.expanded_weight(), layer.expanded_bias())
    return new


class GroupBatchNorm2d(nn.Module):
    """Batch normalization whose statistics are shared over the group axis of each relaxed
    channel, so that it commutes with the group's action in training and evaluation modes.

    Shapes: input and output ``(B, C |T|, H, W)`` (canonical). ``C |R|`` affine parameters and
    running statistics, one per relaxed channel of ``group``.
    """

    def __init__(
        self,
        channels: int,
        group: Group | str = "D4",
        *,
        reference: Group | str = "D4",
        eps: float = 1e-5,
        momentum: float = 0.1,
    ) -> None:
        super().__init__()
        self.layout = FieldLayout(channels, group, reference)
        self.group = self.layout.group
        self.bn = nn.BatchNorm3d(self.layout.relaxed_channels, eps=eps, momentum=momentum)
        # the two channel permutations; None where the natural order is the canonical one
        # (a layer over the reference group, or C1): then the layer is two reshapes and a BN
        order = self.layout.natural_to_canonical
        identity = torch.equal(order, torch.arange(order.numel()))
        self.register_buffer("_to_nat", None if identity else order.clone(), persistent=False)
        self.register_buffer(
            "_to_can",
            None if identity else self.layout.canonical_to_natural.clone(),
            persistent=False,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, H, W = x.shape
        if self._to_nat is not None:
            x = x[:, self._to_nat]
        nat = x.reshape(B, self.layout.relaxed_channels, self.group.order, H, W)
        out = self.bn(nat).reshape(B, -1, H, W)
        return out if self._to_can is None else out[:, self._to_can]

    def to_batchnorm2d(self) -> nn.BatchNorm2d:
        """A plain ``nn.BatchNorm2d`` over the canonical channels that equals this layer in
        evaluation mode: each canonical channel takes the running statistics and affine
        parameters of its relaxed channel."""
        src = self.layout.canonical_to_natural.to(self.bn.weight.device) // self.group.order
        out = nn.BatchNorm2d(src.numel(), eps=self.bn.eps, momentum=self.bn.momentum)
        out = out.to(self.bn.weight.device, self.bn.weight.dtype).eval()
        with torch.no_grad():
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(out, name).copy_(getattr(self.bn, name)[src])
        return out

    def extra_repr(self) -> str:
        return f"{self.layout.channels} base channels, group={self.group.name}"


def _old_relaxed_channel(old: FieldLayout, new: FieldLayout) -> torch.Tensor:
    """For every relaxed channel of ``new``, the relaxed channel of ``old`` it is a part of."""
    e_rows = new.natural_to_canonical[:: new.group.order]
    return old.canonical_to_natural[e_rows] // old.group.order


def relax_norm(norm: GroupBatchNorm2d, group: Group | str) -> GroupBatchNorm2d:
    """The batch norm after a relaxed layer: each new relaxed channel copies the parameters and
    running statistics of the channel it splits off from (exact in evaluation mode; in training
    mode the batch statistics are then taken over the smaller group)."""
    new = GroupBatchNorm2d(
        norm.layout.channels,
        group,
        reference=norm.layout.reference,
        eps=norm.bn.eps,
        momentum=norm.bn.momentum,
    )
    new = new.to(norm.bn.weight.device, norm.bn.weight.dtype).train(norm.training)
    src = _old_relaxed_channel(norm.layout, new.layout)
    with torch.no_grad():
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(new.bn, name).copy_(getattr(norm.bn, name)[src])
        new.bn.num_batches_tracked.copy_(norm.bn.num_batches_tracked)
    return new


class GroupPool(nn.Module):
    """Average over the group axis of each relaxed channel and over all positions.

    Shapes: ``(B, C |T|, H, W) -> (B, C |R|)``. Invariant under ``group`` acting on the input.
    """

    def __init__(
        self, channels: int, group: Group | str = "D4", *, reference: Group | str = "D4"
    ) -> None:
        super().__init__()
        self.layout = FieldLayout(channels, group, reference)
        self.register_buffer("_to_nat", self.layout.natural_to_canonical.clone(), persistent=False)

    @property
    def features(self) -> int:
        return self.layout.relaxed_channels

    def averaging_matrix(self) -> torch.Tensor:
        """``(C |R|, C |T|)``: the linear map from the spatial means of the canonical channels
        to this pool's features (each relaxed channel averages its ``|G|`` canonical ones)."""
        src = self.layout.canonical_to_natural // self.layout.group.order
        onehot = F.one_hot(src, self.layout.relaxed_channels).T.to(torch.get_default_dtype())
        return onehot / self.layout.group.order

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B = x.shape[0]
        pooled = x.mean(dim=(2, 3))[:, self._to_nat]
        return pooled.reshape(B, self.layout.relaxed_channels, -1).mean(dim=2)


def relax_pool_and_linear(
    pool: GroupPool, linear: nn.Linear, group: Group | str
) -> tuple[GroupPool, nn.Linear]:
    """Relax the head after the last group layer: the new pool keeps ``|G|/|G'|`` features where
    the old one had one (their mean), so the linear layer takes each old column divided by
    ``|G|/|G'|`` for each of its parts. The logits are unchanged."""
    new_pool = GroupPool(pool.layout.channels, group, reference=pool.layout.reference)
    src = _old_relaxed_channel(pool.layout, new_pool.layout)
    parts = pool.layout.group.order // new_pool.layout.group.order
    new_linear = nn.Linear(new_pool.features, linear.out_features, bias=linear.bias is not None)
    new_linear = new_linear.to(linear.weight.device, linear.weight.dtype)
    with torch.no_grad():
        new_linear.weight.copy_(linear.weight[:, src] / parts)
        if linear.bias is not None:
            new_linear.bias.copy_(linear.bias)
    return new_pool.to(linear.weight.device), new_linear


def mixing_weights(alpha: torch.Tensor) -> torch.Tensor:
    """Architecture weights ``z = softmax(alpha)``: positive and summing to 1 (eq. 11)."""
    return torch.softmax(alpha, dim=-1)


class MixedGroupConv(nn.Module):
    """The [G]-mixed equivariant layer (eq. 11-12).

    One :class:`GroupConv2d` branch per group of ``groups`` (all subgroups of ``reference``),
    combined by ``z = softmax(alpha)`` as one convolution with the kernel
    ``sum_G z_G W^G`` (eq. 12, with ``G' = C1``: every branch expanded to a plain conv).
    With ``weight_norm`` each branch kernel is ``g v / ||v||`` per output channel with ``g``
    frozen at its initial value, so that the branches' scales do not confound ``z`` (§4.4.2).

    Shapes as :class:`GroupConv2d`; ``alpha`` has shape ``(len(groups),)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        groups: Sequence[Group | str] = ("C1", "D1", "C2", "D2", "C4", "D4"),
        *,
        reference: Group | str = "D4",
        lifting: bool = False,
        bias: bool = True,
        weight_norm: bool = True,
    ) -> None:
        super().__init__()
        if len(groups) == 0:
            raise ValueError("a mixed layer needs at least one group")
        self.groups = [_group(g) for g in groups]
        if len({g.name for g in self.groups}) != len(self.groups):
            raise ValueError(f"repeated group in {[g.name for g in self.groups]}")
        self.kernel_size, self.weight_norm = kernel_size, weight_norm
        self.in_channels, self.out_channels, self.lifting = in_channels, out_channels, lifting
        self.reference = _group(reference)
        self.branches = nn.ModuleList()
        for g in self.groups:
            branch = GroupConv2d(
                in_channels,
                out_channels,
                kernel_size,
                g,
                reference=reference,
                lifting=lifting,
                bias=bias,
            )
            if weight_norm:
                parametrizations.weight_norm(branch, name="weight", dim=0)
                branch.parametrizations.weight.original0.requires_grad_(False)
            self.branches.append(branch)
        self.alpha = nn.Parameter(torch.zeros(len(self.groups)))

    @property
    def z(self) -> torch.Tensor:
        """The architecture weights ``z`` (eq. 11), summing to 1."""
        return mixing_weights(self.alpha)

    def expanded_weight(self) -> torch.Tensor:
        z = self.z
        return sum(z[i] * b.expanded_weight() for i, b in enumerate(self.branches))

    def expanded_bias(self) -> torch.Tensor | None:
        if self.branches[0].bias is None:
            return None
        z = self.z
        return sum(z[i] * b.expanded_bias() for i, b in enumerate(self.branches))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = _cached_expansion(self)
        return F.conv2d(x, weight, bias, padding=self.kernel_size // 2)

    def forward_branches(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each branch's output ``[f * psi~^G]`` separately (the terms of eq. 11)."""
        return [b(x) for b in self.branches]

    @torch.no_grad()
    def collapse(self, group: Group | str = "C1") -> GroupConv2d:
        """One layer over ``group`` with the outputs of the mixture (eq. 12). ``group`` must be a
        subgroup of every branch's group: C1 (a plain convolution) always is."""
        group = _group(group)
        bad = [g.name for g in self.groups if not group.is_subgroup_of(g)]
        if bad:
            raise ValueError(f"{group.name} is not a subgroup of {', '.join(bad)}: cannot collapse")
        w = self.expanded_weight()
        out = GroupConv2d(
            self.in_channels,
            self.out_channels,
            self.kernel_size,
            group,
            reference=self.reference,
            lifting=self.lifting,
            bias=self.branches[0].bias is not None,
        ).to(w.device, w.dtype)
        return out.load_expanded(w, self.expanded_bias())

    def extra_repr(self) -> str:
        return f"groups={[g.name for g in self.groups]}, weight_norm={self.weight_norm}"


class ResidualPathwayConv(nn.Module):
    """Residual pathway prior (RPP, Finzi et al. 2021) as in §4.5: a ``D4`` layer plus a ``C1``
    layer on the same input, summed; the ``C1`` path carries an L2 penalty (``l2``, applied as
    weight decay on its parameters by :meth:`param_groups`)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        *,
        equivariant: Group | str = "D4",
        reference: Group | str = "D4",
        lifting: bool = False,
        l2: float = 1e-6,
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.lifting = in_channels, out_channels, lifting
        self.kernel_size, self.l2, self.reference = kernel_size, l2, _group(reference)
        self.equivariant = GroupConv2d(
            in_channels,
            out_channels,
            kernel_size,
            equivariant,
            reference=reference,
            lifting=lifting,
        )
        self.residual = GroupConv2d(
            in_channels, out_channels, kernel_size, "C1", reference=reference, lifting=lifting
        )

    def expanded_weight(self) -> torch.Tensor:
        return self.equivariant.expanded_weight() + self.residual.expanded_weight()

    def expanded_bias(self) -> torch.Tensor | None:
        return self.equivariant.expanded_bias() + self.residual.expanded_bias()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = _cached_expansion(self)
        return F.conv2d(x, weight, bias, padding=self.kernel_size // 2)

    def param_groups(self) -> list[dict]:
        return [
            {"params": list(self.equivariant.parameters())},
            {"params": list(self.residual.parameters()), "weight_decay": self.l2},
        ]

    @torch.no_grad()
    def collapse(self) -> GroupConv2d:
        w = self.expanded_weight()
        out = GroupConv2d(
            self.in_channels,
            self.out_channels,
            self.kernel_size,
            "C1",
            reference=self.reference,
            lifting=self.lifting,
        ).to(w.device, w.dtype)
        return out.load_expanded(w, self.expanded_bias())
