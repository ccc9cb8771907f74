"""The equivariant backbone of thesis §4.5 and operations on whole networks.

:class:`EquivariantCNN` is a lifting layer and seven group layers (16 base channels for four
layers, then 32, counted for D4; a layer over a smaller group ``G`` has ``|G \\ D4|`` times as
many independent channels so that every layer expands to the same width), each followed by a
batch norm and a ReLU, average pooling after every other layer, group pooling over the group
axis and all remaining positions, and two linear layers. A layer is given as

* a group name (``"D4"``, ``"C4"``, ...): a :class:`~structlab.equivariance.layers.GroupConv2d`;
* a tuple of group names: a [G]-mixed layer
  (:class:`~structlab.equivariance.layers.MixedGroupConv`);
* ``"rpp"``: a residual-pathway-prior layer (D4 plus a penalized C1 path).

The output of a mixed layer is a field over the common subgroup ``G'`` of its groups (eq. 11-12;
C1 for the six groups of the search space) and so is that of an RPP layer: their batch norms,
and the group pooling after a last such layer, act over ``G'``.

With all layers over ``G`` (and inputs whose size survives the poolings exactly, e.g. 32x32) the
logits are exactly invariant under ``G``; 28x28 images are padded to 32x32 by
:func:`structlab.data.pad_images` before they reach the network.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from structlab.equivariance.groups import Group, get_group
from structlab.equivariance.layers import (
    GroupBatchNorm2d,
    GroupConv2d,
    GroupPool,
    MixedGroupConv,
    ResidualPathwayConv,
    relax,
    relax_norm,
    relax_pool_and_linear,
)

__all__ = [
    "EquivariantCNN",
    "LayerSpec",
    "ALL_GROUPS",
    "valid_relaxations",
    "is_monotone",
    "architecture_name",
    "common_subgroup",
]

LayerSpec = str | tuple[str, ...]
#: The search space of §4.5: every group of the pixel grid, smallest first.
ALL_GROUPS: tuple[str, ...] = ("C1", "D1", "C2", "D2", "C4", "D4")


def _check_spec(spec: LayerSpec, reference: Group) -> LayerSpec:
    if isinstance(spec, str) and spec.lower() == "rpp":
        return "rpp"
    if isinstance(spec, (tuple, list)):
        groups = tuple(get_group(g).name for g in spec)
        for g in groups:
            if not get_group(g).is_subgroup_of(reference):
                raise ValueError(f"{g} is not a subgroup of the reference group {reference.name}")
        return groups
    name = get_group(spec).name
    if not get_group(name).is_subgroup_of(reference):
        raise ValueError(f"{name} is not a subgroup of the reference group {reference.name}")
    return name


def common_subgroup(groups: Sequence[str]) -> Group:
    """The largest group of :data:`ALL_GROUPS` that is a subgroup of every group in ``groups``."""
    common = [
        get_group(h) for h in ALL_GROUPS if all(get_group(h).is_subgroup_of(g) for g in groups)
    ]
    return max(common, key=lambda g: g.order)


def architecture_name(groups: Sequence[LayerSpec]) -> str:
    """A short name: ``"D4 D4 C4 C4 C4 C2 C1 C1"``; mixed layers are ``"mix"``."""
    return " ".join(g if isinstance(g, str) else "mix" for g in groups)


def is_monotone(groups: Sequence[str]) -> bool:
    """Whether each layer's group is a subgroup of every preceding layer's (§4.4.1)."""
    gs = [get_group(g) for g in groups]
    return all(gs[i + 1].is_subgroup_of(gs[i]) for i in range(len(gs) - 1))


def valid_relaxations(groups: Sequence[str]) -> list[tuple[int, str]]:
    """The mutations of EquiNAS_E: relax one layer ``i`` to a proper subgroup ``H`` of its group
    that still contains the next layer's group, so the network stays monotone (§4.4.1)."""
    out = []
    for i, g in enumerate(groups):
        G = get_group(g)
        nxt = get_group(groups[i + 1]) if i + 1 < len(groups) else get_group("C1")
        for name in ALL_GROUPS:
            H = get_group(name)
            if H.name != G.name and H.is_subgroup_of(G) and nxt.is_subgroup_of(H):
                out.append((i, H.name))
    return out


class EquivariantCNN(nn.Module):
    """The backbone of §4.5.

    Args:
        layers: one :data:`LayerSpec` per convolution (the thesis uses 8).
        in_channels: image channels.
        num_classes: outputs.
        channels: base channels counted for the reference group: a pair ``(first, second)``
            for the two halves of the network, or one value per layer.
        kernel_size: odd convolution size.
        reference: the group of the canonical layout (must contain every layer's group).
        pool_after: 1-based indices of layers followed by 2x2 average pooling.
        hidden: width of the first linear layer.
        weight_norm: weight normalization with frozen norms in mixed layers (§4.4.2).
        rpp_l2: the L2 penalty of the C1 path of RPP layers.

    Shapes: ``(B, in_channels, S, S) -> (B, num_classes)``.
    """

    def __init__(
        self,
        layers: Sequence[LayerSpec],
        *,
        in_channels: int = 1,
        num_classes: int = 10,
        channels: Sequence[int] = (16, 32),
        kernel_size: int = 3,
        reference: str = "D4",
        pool_after: Sequence[int] = (2, 4, 6, 8),
        hidden: int = 64,
        weight_norm: bool = True,
        rpp_l2: float = 1e-6,
    ) -> None:
        super().__init__()
        if len(layers) < 1:
            raise ValueError("an EquivariantCNN needs at least one layer")
        self.reference = get_group(reference)
        self.specs: list[LayerSpec] = [_check_spec(s, self.reference) for s in layers]
        n = len(self.specs)
        channels = list(channels)
        if len(channels) == 2 and n != 2:
            half = n // 2
            channels = [channels[0]] * half + [channels[1]] * (n - half)
        if len(channels) != n:
            raise ValueError(
                f"channels must be a pair or have one entry per layer ({n}), got {len(channels)}"
            )
        if any(int(c) < 1 for c in channels):
            raise ValueError(f"channels must be positive, got {channels}")
        bad = [p for p in pool_after if not 1 <= p <= n]
        if bad:
            raise ValueError(f"pool_after entries must be between 1 and {n}, got {bad}")
        self.channels = [int(c) for c in channels]
        self.in_channels, self.num_classes = in_channels, num_classes
        self.kernel_size, self.pool_after = kernel_size, tuple(pool_after)
        self.weight_norm, self.rpp_l2 = weight_norm, rpp_l2
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        c_in = in_channels
        for i, (spec, c_out) in enumerate(zip(self.specs, self.channels)):
            self.convs.append(self._make_conv(spec, c_in, c_out, lifting=i == 0))
            self.norms.append(
                GroupBatchNorm2d(c_out, self._norm_group(spec), reference=self.reference)
            )
            c_in = c_out
        self.pool = GroupPool(
            self.channels[-1], self._norm_group(self.specs[-1]), reference=self.reference
        )
        self.fc1 = nn.Linear(self.pool.features, hidden)
        self.bn1 = nn.BatchNorm1d(hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    def _norm_group(self, spec: LayerSpec) -> Group:
        """The group over which a layer's output is a field: its own group for a group layer;
        for a mixed layer the largest common subgroup ``G'`` of its groups (eq. 11-12: the
        mixture is computed over ``G'``); C1 for RPP (D4 plus C1)."""
        if spec == "rpp":
            return get_group("C1")
        if isinstance(spec, tuple):
            return common_subgroup(spec)
        return get_group(spec)

    def _make_conv(self, spec: LayerSpec, c_in: int, c_out: int, *, lifting: bool) -> nn.Module:
        k, ref = self.kernel_size, self.reference
        if spec == "rpp":
            return ResidualPathwayConv(
                c_in, c_out, k, reference=ref, lifting=lifting, l2=self.rpp_l2
            )
        if isinstance(spec, tuple):
            return MixedGroupConv(
                c_in, c_out, k, spec, reference=ref, lifting=lifting, weight_norm=self.weight_norm
            )
        return GroupConv2d(c_in, c_out, k, spec, reference=ref, lifting=lifting)

    # -- forward --------------------------------------------------------------------------
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The canonical feature map after the last convolution block."""
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms), start=1):
            x = torch.relu(norm(conv(x)))
            if i in self.pool_after:
                x = nn.functional.avg_pool2d(x, 2)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pool(self.features(x))
        return self.fc2(torch.relu(self.bn1(self.fc1(h))))

    # -- architecture ---------------------------------------------------------------------
    @property
    def groups(self) -> list[str]:
        """The group of each layer (``"mix"`` or ``"rpp"`` for the others)."""
        return [s if isinstance(s, str) else "mix" for s in self.specs]

    @property
    def name(self) -> str:
        return architecture_name(self.specs)

    def relax(self, layer: int, group: str) -> EquivariantCNN:
        """Apply the equivariance relaxation morphism to layer ``layer`` (0-based), in place.

        The layer, its batch norm and (for the last layer) the group pooling and first linear
        layer are re-parameterized over ``group``; the network's function is unchanged (exactly
        in evaluation mode). Returns ``self``.
        """
        if not 0 <= layer < len(self.specs):
            raise IndexError(f"layer must be between 0 and {len(self.specs) - 1}, got {layer}")
        spec = self.specs[layer]
        if not isinstance(spec, str) or spec == "rpp":
            raise ValueError(
                f"layer {layer} is a {self.groups[layer]} layer; only group layers can be relaxed"
            )
        new = get_group(group).name
        self.convs[layer] = relax(self.convs[layer], new)
        self.norms[layer] = relax_norm(self.norms[layer], new)
        if layer == len(self.specs) - 1:
            self.pool, self.fc1 = relax_pool_and_linear(self.pool, self.fc1, new)
        self.specs[layer] = new
        return self

    def mixed_layers(self) -> list[MixedGroupConv]:
        return [c for c in self.convs if isinstance(c, MixedGroupConv)]

    def architecture_parameters(self) -> list[nn.Parameter]:
        """The mixing logits ``alpha`` of every mixed layer (``Z``)."""
        return [m.alpha for m in self.mixed_layers()]

    def weight_parameters(self) -> list[nn.Parameter]:
        """Every trainable parameter that is not an architecture weight (``Psi``)."""
        arch = {id(p) for p in self.architecture_parameters()}
        return [p for p in self.parameters() if p.requires_grad and id(p) not in arch]

    def mixing_table(self) -> torch.Tensor:
        """``(mixed layers, groups)``: the current ``z`` of every mixed layer."""
        return torch.stack([m.z.detach().cpu() for m in self.mixed_layers()])

    def param_groups(self, weight_decay: float = 0.0) -> list[dict]:
        """Optimizer parameter groups: RPP's C1 paths get their L2 penalty as weight decay."""
        special, groups = set(), []
        for conv in self.convs:
            if isinstance(conv, ResidualPathwayConv):
                params = list(conv.residual.parameters())
                special.update(id(p) for p in params)
                groups.append({"params": params, "weight_decay": conv.l2})
        rest = [p for p in self.weight_parameters() if id(p) not in special]
        return [{"params": rest, "weight_decay": weight_decay}, *groups]

    @torch.no_grad()
    def collapse(self) -> EquivariantCNN:
        """A copy whose mixed and RPP layers are single C1 layers with the same outputs (eq. 12);
        group layers are kept. The copy is what one stores and deploys after search."""
        out = copy.deepcopy(self)
        for i, conv in enumerate(out.convs):
            if isinstance(conv, (MixedGroupConv, ResidualPathwayConv)):
                out.convs[i] = conv.collapse()
        out.specs = [s if isinstance(s, str) and s != "rpp" else "C1" for s in out.specs]
        return out

    @torch.no_grad()
    def export(self) -> nn.Sequential:
        """A plain ``nn.Sequential`` for inference with the outputs of this network in
        evaluation mode: every layer's expanded kernel frozen into an ``nn.Conv2d`` (mixed and
        RPP layers collapsed first, eq. 12), every group batch norm as an ``nn.BatchNorm2d``
        over the canonical channels, and the group pooling folded into the first linear layer.
        The result runs at the speed of the plain CNN of the same widths (escnn's ``export``)."""
        net = self.collapse().eval()
        device = next(net.parameters()).device
        layers: list[nn.Module] = []
        for i, (conv, norm) in enumerate(zip(net.convs, net.norms), start=1):
            layers += [conv.to_conv2d(), norm.to_batchnorm2d(), nn.ReLU()]
            if i in net.pool_after:
                layers.append(nn.AvgPool2d(2))
        pool = net.pool.averaging_matrix().to(device, net.fc1.weight.dtype)
        fc1 = nn.Linear(pool.shape[1], net.fc1.out_features).to(device, net.fc1.weight.dtype)
        fc1.weight.copy_(net.fc1.weight @ pool)
        fc1.bias.copy_(net.fc1.bias)
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), fc1, net.bn1, nn.ReLU(), net.fc2]
        return nn.Sequential(*layers).eval()

    def stored_parameters(self) -> int:
        """Parameters of :meth:`collapse`'s network, as in the thesis's Fig. 10 and 14."""
        return sum(p.numel() for p in self.collapse().parameters())

    def extra_repr(self) -> str:
        return f"layers=[{self.name}], channels={self.channels}, reference={self.reference.name}"
