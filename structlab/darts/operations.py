"""The candidate operations of the DARTS convolutional search space (Liu et al. 2019, §2.1 and
appendix A.1; thesis §5.1).

Every edge of a DARTS cell carries one operation from a fixed list of *primitives*. Each
primitive maps a feature map ``[B, C, H, W]`` to ``[B, C, H/s, W/s]`` (``s`` = the edge's
stride: 2 on the edges that leave the two inputs of a reduction cell, 1 elsewhere), so any
subset of them can be summed on an edge (the mixed operation of the continuous relaxation of
§5.1, :class:`~structlab.darts.supernet.MixedOp`) and any one of them can be kept after
discretisation:

=================  ==========================================================================
``none``           :class:`Zero`: the absence of an edge (outputs zeros; never selected by
                   :math:`\\Pi_S`, eqs. 13-16)
``max_pool_3x3``   3x3 max pooling (padding 1)
``avg_pool_3x3``   3x3 average pooling (padding 1, padding excluded from the average)
``skip_connect``   :class:`Identity`; on a stride-2 edge :class:`FactorizedReduce`
``sep_conv_3x3``   :class:`SepConv`: (ReLU, depthwise 3x3, pointwise 1x1, BN) applied twice
``sep_conv_5x5``   the same with 5x5 depthwise kernels
``dil_conv_3x3``   :class:`DilConv`: ReLU, depthwise 3x3 with dilation 2, pointwise 1x1, BN
``dil_conv_5x5``   the same with a 5x5 kernel (receptive field 9x9)
=================  ==========================================================================

Convolutions have no bias (a BatchNorm follows each). In the search supernet every BatchNorm is
non-affine (``affine=False``): a learnable scale would let an operation rescale its output and
so undo its architecture weight. For the same reason DARTS follows the two parameter-free pooling
operations with a non-affine BatchNorm in the supernet only (``make_op(..., pool_bn=True)``);
the evaluation network keeps the bare pooling. Parameter counts, for ``C`` channels and affine
BatchNorms (``2C`` parameters each):

* ``sep_conv_kxk``: ``2 (C k^2 + C^2) + 4C``;  ``dil_conv_kxk``: ``C k^2 + C^2 + 2C``;
* ``skip_connect``: 0 with stride 1, ``C^2 + 2C`` with stride 2 (:class:`FactorizedReduce`);
* ``none`` and the pools: 0.

One deviation from DARTS's code, which never changes a result it can compute:
:class:`FactorizedReduce` also accepts odd spatial sizes (its two shifted halves are padded to the
same size ``ceil(H/2)`` as every other stride-2 operation), where DARTS's code fails.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "PRIMITIVES",
    "CRB_PRIMITIVES",
    "Zero",
    "Identity",
    "ReLUConvBN",
    "make_stem",
    "SepConv",
    "DilConv",
    "FactorizedReduce",
    "OPS",
    "make_op",
]

#: DARTS's eight primitives, in DARTS's order (the column order of every alpha matrix).
PRIMITIVES: list[str] = [
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
]

#: The primitives of a CRB-activated search (thesis §5.2.5): ``none`` is dropped, since the
#: clipped weights of an edge no longer compete and an edge can switch itself off by itself.
CRB_PRIMITIVES: list[str] = [p for p in PRIMITIVES if p != "none"]


class Zero(nn.Module):
    """The ``none`` operation: zeros of the output shape ``[B, C, ceil(H/s), ceil(W/s)]``."""

    def __init__(self, stride: int = 1):
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            return x.mul(0.0)
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


class Identity(nn.Module):
    """The stride-1 ``skip_connect``: returns its input (a class of its own so that the
    evaluation network can recognise it and spare it drop-path, as DARTS does)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def make_stem(in_channels: int, channels: int) -> nn.Sequential:
    """The stem of DARTS's search and evaluation networks: a 3x3 convolution (no bias) and
    BatchNorm, ``[B, in_channels, H, W] -> [B, channels, H, W]``."""
    return nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1, bias=False),
                         nn.BatchNorm2d(channels))


class ReLUConvBN(nn.Module):
    """ReLU, convolution (no bias), BatchNorm: ``[B, C_in, H, W] -> [B, C_out, H', W']``.
    With a 1x1 kernel it is the preprocessing of a cell's inputs."""

    def __init__(
        self,
        C_in: int,
        C_out: int,
        kernel_size: int,
        stride: int,
        padding: int,
        affine: bool = True,
    ):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_out, kernel_size, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class DilConv(nn.Module):
    """Dilated depthwise-separable convolution: ReLU, depthwise ``k x k`` convolution with
    dilation ``d`` (stride ``s``), pointwise 1x1 convolution, BatchNorm."""

    def __init__(
        self,
        C_in: int,
        C_out: int,
        kernel_size: int,
        stride: int,
        padding: int,
        dilation: int,
        affine: bool = True,
    ):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(
                C_in,
                C_in,
                kernel_size,
                stride=stride,
                padding=padding,
                dilation=dilation,
                groups=C_in,
                bias=False,
            ),
            nn.Conv2d(C_in, C_out, 1, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class SepConv(nn.Module):
    """Depthwise-separable convolution applied twice (the NASNet convention DARTS follows):
    (ReLU, depthwise ``k x k`` with stride ``s``, pointwise 1x1, BN), then the same block with
    stride 1 and ``C_out`` output channels."""

    def __init__(
        self,
        C_in: int,
        C_out: int,
        kernel_size: int,
        stride: int,
        padding: int,
        affine: bool = True,
    ):
        super().__init__()
        self.op = nn.Sequential(
            DilConv(C_in, C_in, kernel_size, stride, padding, 1, affine=affine),
            DilConv(C_in, C_out, kernel_size, 1, padding, 1, affine=affine),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class FactorizedReduce(nn.Module):
    """Halve the spatial size without discarding a pixel: ReLU, then two 1x1 stride-2
    convolutions with ``C_out / 2`` channels each, one on the input and one on the input shifted
    by one pixel in both directions, concatenated along channels, then BatchNorm.
    ``[B, C_in, H, W] -> [B, C_out, ceil(H/2), ceil(W/2)]``.

    It is the stride-2 ``skip_connect`` and the preprocessing of a cell's older input when the
    previous cell was a reduction cell. (Odd sizes: the shifted half is zero-padded at the end so
    that both halves have ``ceil(H/2)`` rows; for even sizes this is DARTS's operation exactly.)
    """

    def __init__(self, C_in: int, C_out: int, affine: bool = True):
        super().__init__()
        if C_out % 2:
            raise ValueError(f"FactorizedReduce needs an even number of channels, got {C_out}")
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(C_out, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        shifted = x[:, :, 1:, 1:]
        pad_w, pad_h = x.shape[-1] % 2, x.shape[-2] % 2
        if pad_w or pad_h:
            shifted = F.pad(shifted, (0, pad_w, 0, pad_h))
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(shifted)], dim=1))


#: ``OPS[name](C, stride, affine)`` builds primitive ``name`` on ``C`` channels (DARTS's table).
OPS = {
    "none": lambda C, stride, affine: Zero(stride),
    "max_pool_3x3": lambda C, stride, affine: nn.MaxPool2d(3, stride=stride, padding=1),
    "avg_pool_3x3": lambda C, stride, affine: nn.AvgPool2d(
        3, stride=stride, padding=1, count_include_pad=False
    ),
    "skip_connect": lambda C, stride, affine: (
        Identity() if stride == 1 else FactorizedReduce(C, C, affine=affine)
    ),
    "sep_conv_3x3": lambda C, stride, affine: SepConv(C, C, 3, stride, 1, affine=affine),
    "sep_conv_5x5": lambda C, stride, affine: SepConv(C, C, 5, stride, 2, affine=affine),
    "dil_conv_3x3": lambda C, stride, affine: DilConv(C, C, 3, stride, 2, 2, affine=affine),
    "dil_conv_5x5": lambda C, stride, affine: DilConv(C, C, 5, stride, 4, 2, affine=affine),
}


def make_op(name: str, C: int, stride: int, affine: bool, *, pool_bn: bool = False) -> nn.Module:
    """Build primitive ``name`` on ``C`` channels with the given stride (1 or 2).

    ``pool_bn=True`` follows the pooling primitives with a non-affine ``BatchNorm2d(C)``, as in
    DARTS's search supernet (the evaluation network uses ``pool_bn=False``)."""
    if name not in OPS:
        raise KeyError(f"unknown DARTS primitive {name!r}; known: {sorted(OPS)}")
    if stride not in (1, 2):
        raise ValueError(f"stride must be 1 or 2, got {stride}")
    op = OPS[name](C, stride, affine)
    if pool_bn and "pool" in name:
        op = nn.Sequential(op, nn.BatchNorm2d(C, affine=False))
    return op
