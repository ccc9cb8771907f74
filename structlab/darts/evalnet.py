"""The evaluation network of a searched genotype, and its training aids (DARTS's evaluation
protocol: Liu et al. 2019, §3.3 and appendix A.2; thesis §5.3).

After the search, the discrete cells of a :class:`~structlab.darts.genotypes.Genotype` are
stacked into a deeper and wider network that is trained from scratch (DARTS: 20 cells, ``C = 36``
initial channels, 600 epochs on CIFAR-10). :class:`EvalNetwork` follows DARTS's
``NetworkCIFAR``:

* a stem ``Conv3x3(in_channels -> 3C) + BN``;
* ``layers`` cells, reduction cells at ``layers // 3`` and ``2 * layers // 3`` (doubling ``C``);
  each cell preprocesses its two inputs (1x1 ReLU-conv-BN, or
  :class:`~structlab.darts.operations.FactorizedReduce` after a reduction cell), computes each
  node as the sum of its two genes' operations and concatenates the nodes of ``*_concat``;
* global average pooling and a linear classifier;
* optionally an auxiliary classifier on the output of cell ``2 * layers // 3`` (the second
  reduction cell), trained with weight 0.4 in DARTS; in training mode the network then returns
  ``(logits, aux_logits)``, otherwise ``logits``;
* drop-path (Zoph et al. 2018): in training mode each non-identity operation's output is zeroed
  per sample with probability :attr:`EvalNetwork.drop_path_prob` and rescaled by
  ``1 / (1 - p)``; the trainer sets the attribute (DARTS raises it linearly from 0 to 0.2).

Every BatchNorm is affine and the pools have no BatchNorm (unlike the supernet).

The auxiliary head (DARTS's ``AuxiliaryHeadCIFAR``: ReLU, 5x5 average pooling with stride 3,
1x1 conv to 128 channels, BN, ReLU, 2x2 conv to 768 channels, BN, ReLU, linear) assumes an 8x8
map, which 32x32 inputs give. Here its pooling adapts to the map size: for maps of 8 to 10
pixels a side, DARTS's 5x5/3 pooling (which yields 2x2) is used exactly; for any other size an
adaptive average pooling to 2x2 (e.g. the 7x7 maps of 28x28 Fashion-MNIST inputs, where 5x5/3
pooling would give 1x1 and the 2x2 convolution would fail). The parameter count does not depend
on the size.

:func:`count_parameters` counts as DARTS reports (auxiliary head excluded): DARTS_V2 at C=36,
20 cells, 10 classes has 3,349,342 parameters ("3.3M"). :class:`Cutout` is DARTS's cutout
augmentation (DeVries & Taylor 2017), 16x16 on CIFAR-10.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from structlab.darts.genotypes import Genotype
from structlab.darts.operations import FactorizedReduce, Identity, ReLUConvBN, make_op, make_stem
from structlab.darts.supernet import reduction_positions

__all__ = ["drop_path", "EvalCell", "AuxiliaryHead", "EvalNetwork", "Cutout", "count_parameters"]


def drop_path(x: torch.Tensor, drop_prob: float) -> torch.Tensor:
    """Zero whole samples of ``x [B, ...]`` with probability ``drop_prob`` and scale the kept
    ones by ``1 / (1 - drop_prob)`` (expectation preserved). Not in place."""
    if drop_prob <= 0.0:
        return x
    keep = 1.0 - drop_prob
    mask = torch.empty((x.shape[0],) + (1,) * (x.dim() - 1), device=x.device, dtype=x.dtype)
    return x * mask.bernoulli_(keep) / keep


class EvalCell(nn.Module):
    """A discrete cell: ``(s0, s1) -> [B, len(concat) * C, H', W']``, genes
    ``[(op, source), ...]`` two per node (:class:`~structlab.darts.genotypes.Genotype`)."""

    def __init__(
        self,
        genes: Sequence[tuple[str, int]],
        concat: Sequence[int],
        C_prev_prev: int,
        C_prev: int,
        C: int,
        reduction: bool,
        reduction_prev: bool,
    ):
        super().__init__()
        self.reduction = reduction
        if reduction_prev:
            self.preprocess0 = FactorizedReduce(C_prev_prev, C)
        else:
            self.preprocess0 = ReLUConvBN(C_prev_prev, C, 1, 1, 0)
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0)
        if len(genes) % 2:
            raise ValueError("a cell needs two genes per node")
        self.steps = len(genes) // 2
        self.concat = list(concat)
        self.multiplier = len(self.concat)
        self.indices = [j for _, j in genes]
        for n, j in enumerate(self.indices):
            if not 0 <= j < n // 2 + 2:
                raise ValueError(f"gene {n} of node {n // 2} reads from invalid source {j}")
        self.ops = nn.ModuleList(
            [
                make_op(name, C, 2 if reduction and j < 2 else 1, True)
                for name, j in genes
            ]
        )

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float = 0.0) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for i in range(self.steps):
            node = None
            for n in (2 * i, 2 * i + 1):
                op = self.ops[n]
                h = op(states[self.indices[n]])
                if self.training and drop_prob > 0.0 and not isinstance(op, Identity):
                    h = drop_path(h, drop_prob)
                node = h if node is None else node + h
            states.append(node)
        return torch.cat([states[i] for i in self.concat], dim=1)


class AuxiliaryHead(nn.Module):
    """DARTS's CIFAR auxiliary classifier ``[B, C, H, W] -> [B, num_classes]`` with pooling that
    adapts to the map size (module docstring)."""

    def __init__(self, C: int, num_classes: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(C, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False),
            nn.BatchNorm2d(768),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)
        H, W = x.shape[-2:]
        if 8 <= H <= 10 and 8 <= W <= 10:
            x = F.avg_pool2d(x, 5, stride=3, padding=0, count_include_pad=False)
        else:
            x = F.adaptive_avg_pool2d(x, 2)
        return self.classifier(self.features(x).flatten(1))


class EvalNetwork(nn.Module):
    """DARTS's evaluation network (``NetworkCIFAR``) built from a genotype.

    Args:
        C: initial channels (DARTS: 36); num_classes; layers: cells (DARTS: 20);
        genotype: the cells; auxiliary: add the auxiliary head after cell ``2 * layers // 3``;
        in_channels: image channels; stem_multiplier: the stem outputs ``3 C`` channels;
        drop_path_prob: initial drop-path probability (the trainer updates the attribute);
        device: where to create the parameters.

    ``forward(x [B, in_channels, H, W])`` returns ``logits [B, num_classes]``, or
    ``(logits, aux_logits)`` in training mode when ``auxiliary`` is on.
    """

    def __init__(
        self,
        C: int,
        num_classes: int,
        layers: int,
        genotype: Genotype,
        *,
        auxiliary: bool = False,
        in_channels: int = 3,
        stem_multiplier: int = 3,
        drop_path_prob: float = 0.0,
        device: torch.device | str | None = None,
    ):
        super().__init__()
        self.layers = layers
        self.auxiliary = auxiliary
        self.drop_path_prob = drop_path_prob
        self.genotype = genotype
        self.reductions = reduction_positions(layers)
        self.aux_position = 2 * layers // 3

        C_curr = stem_multiplier * C
        self.stem = make_stem(in_channels, C_curr)
        C_prev_prev, C_prev, C_curr = C_curr, C_curr, C
        self.cells = nn.ModuleList()
        reduction_prev = False
        C_aux = C_prev
        for i in range(layers):
            reduction = i in self.reductions
            if reduction:
                C_curr *= 2
                genes, concat = genotype.reduce, genotype.reduce_concat
            else:
                genes, concat = genotype.normal, genotype.normal_concat
            cell = EvalCell(genes, concat, C_prev_prev, C_prev, C_curr, reduction, reduction_prev)
            self.cells.append(cell)
            reduction_prev = reduction
            C_prev_prev, C_prev = C_prev, cell.multiplier * C_curr
            if i == self.aux_position:
                C_aux = C_prev
        self.auxiliary_head = AuxiliaryHead(C_aux, num_classes) if auxiliary else None
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, num_classes)
        if device is not None:
            self.to(device)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        aux_logits = None
        s0 = s1 = self.stem(x)
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if i == self.aux_position and self.auxiliary_head is not None and self.training:
                aux_logits = self.auxiliary_head(s1)
        logits = self.classifier(self.global_pooling(s1).flatten(1))
        if aux_logits is not None:
            return logits, aux_logits
        return logits


class Cutout:
    """Zero a ``length x length`` square (clipped at the borders) centred at a uniformly random
    pixel: DARTS's cutout. Works on an image ``[C, H, W]`` or a batch ``[B, C, H, W]`` (one square
    per image); returns a new tensor. ``generator`` makes the squares reproducible."""

    def __init__(self, length: int, generator: torch.Generator | None = None):
        self.length = length
        self.generator = generator

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if img.dim() not in (3, 4):
            raise ValueError(f"expected [C, H, W] or [B, C, H, W], got {list(img.shape)}")
        batch = img if img.dim() == 4 else img.unsqueeze(0)
        B, _, H, W = batch.shape
        y = torch.randint(H, (B, 1), generator=self.generator)
        x = torch.randint(W, (B, 1), generator=self.generator)
        half = self.length // 2
        rows, cols = torch.arange(H).unsqueeze(0), torch.arange(W).unsqueeze(0)
        in_rows = (rows >= y - half) & (rows < y + half)  # [B, H]
        in_cols = (cols >= x - half) & (cols < x + half)  # [B, W]
        hole = in_rows[:, :, None] & in_cols[:, None, :]  # [B, H, W]
        out = batch * (~hole).to(device=batch.device, dtype=batch.dtype)[:, None]
        return out if img.dim() == 4 else out[0]


def count_parameters(model: nn.Module, exclude_auxiliary: bool = True) -> int:
    """Number of parameters, by default without those of the auxiliary head (parameter names
    containing ``"auxiliary"``, DARTS's ``count_parameters_in_MB`` rule)."""
    return sum(
        p.numel()
        for name, p in model.named_parameters()
        if not (exclude_auxiliary and "auxiliary" in name)
    )
