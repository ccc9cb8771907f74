"""VGG networks (the VGG-11 layout of the thesis §5.3.2 by default) with resizable layers."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from structlab.models.slots import Consumer, LayerSlot, ResizableModel, check_widths, scaled

__all__ = ["VGG", "VGG_CONFIGS"]

#: Convolution widths ("M" = 2x2 max-pooling) and hidden dense widths of the standard layouts.
#: VGG-11: 64, 128, 256, 256, 512, 512, 512, 512 channels, then 4096 and 4096 neurons (thesis
#: §5.3.2, "standard VGG-11 hidden layer widths").
VGG_CONFIGS: dict[str, tuple[list[int | str], list[int]]] = {
    "vgg11": ([64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"], [4096, 4096]),
    "vgg13": (
        [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
        [4096, 4096],
    ),
    "vgg16": (
        [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
        [4096, 4096],
    ),
}


class VGG(ResizableModel):
    """A VGG network: 3x3 convolutions (+ BatchNorm) + activation, max-pooling, dense classifier.

    Every convolution and every hidden dense layer is a slot (``conv0`` ... ``conv7``, ``dense0``,
    ``dense1`` for VGG-11). The first dense layer reads the flattened last feature map, so the last
    convolution slot has a consumer with ``spatial = H * W`` (1 for 32x32 inputs).

    Args:
        cfg: a name in :data:`VGG_CONFIGS` or an explicit list of widths and ``"M"`` entries.
        width_multiplier: scales every hidden width (convolutions and dense layers), rounded.
        in_channels, num_classes: input channels and outputs.
        batchnorm: a ``BatchNorm2d`` after every convolution (convolutions then have no bias).
        input_size: side of the (square) input; pools that would shrink the map below 1x1 are
            skipped, so 28x28 inputs keep four of VGG-11's five pools.
        activation: factory called once per hidden layer (default ``nn.ReLU``).
        dense: hidden dense widths before the multiplier; default: those of ``cfg`` if it is a
            name, else none (a single linear classifier).
    """

    def __init__(
        self,
        cfg: str | Sequence[int | str] = "vgg11",
        width_multiplier: float = 1.0,
        in_channels: int = 3,
        num_classes: int = 10,
        batchnorm: bool = True,
        input_size: int = 32,
        activation: Callable[[], nn.Module] = nn.ReLU,
        dense: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if isinstance(cfg, str):
            if cfg not in VGG_CONFIGS:
                raise ValueError(f"unknown VGG config {cfg!r}; known: {sorted(VGG_CONFIGS)}")
            layout, default_dense = VGG_CONFIGS[cfg]
        else:
            layout, default_dense = list(cfg), []
        dense = list(default_dense if dense is None else dense)
        if input_size < 1:
            raise ValueError(f"input_size must be positive, got {input_size}")
        check_widths([in_channels, num_classes], "in_channels and num_classes")
        widths = [scaled(w, width_multiplier) for w in layout if w != "M"]
        dense_widths = [scaled(w, width_multiplier) for w in dense]
        check_widths(widths + dense_widths, "VGG widths")
        if not widths:
            raise ValueError("a VGG needs at least one convolution")

        self.convs = nn.ModuleList()
        self.bns = nn.ModuleList()
        self.acts = nn.ModuleList()
        self.pool_after: list[bool] = []
        size, c_in = input_size, in_channels
        for entry in layout:
            if entry == "M":
                if not self.convs:
                    raise ValueError("cfg may not start with 'M'")
                if size >= 2:
                    size //= 2
                    self.pool_after[-1] = True
                continue
            c_out = widths[len(self.convs)]
            self.convs.append(nn.Conv2d(c_in, c_out, 3, padding=1, bias=not batchnorm))
            self.bns.append(nn.BatchNorm2d(c_out) if batchnorm else nn.Identity())
            self.acts.append(activation())
            self.pool_after.append(False)
            c_in = c_out
        self.pool = nn.MaxPool2d(2)
        self.spatial = size * size
        sizes = [c_in * self.spatial, *dense_widths, num_classes]
        self.dense = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.dense_acts = nn.ModuleList(activation() for _ in dense_widths)
        self.batchnorm = batchnorm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv, bn, act, pool in zip(self.convs, self.bns, self.acts, self.pool_after):
            x = act(bn(conv(x)))
            if pool:
                x = self.pool(x)
        x = x.flatten(1)
        for layer, act in zip(self.dense[:-1], self.dense_acts):
            x = act(layer(x))
        return self.dense[-1](x)

    def layer_slots(self) -> list[LayerSlot]:
        """``conv0`` ... ``conv{n-1}`` then ``dense0`` ...: every hidden layer, in order."""
        slots = []
        n = len(self.convs)
        for i in range(n):
            if i == n - 1:
                consumer = Consumer(self.dense[0], self.spatial)
            else:
                consumer = Consumer(self.convs[i + 1])
            slots.append(
                LayerSlot(
                    name=f"conv{i}",
                    producers=[self.convs[i]],
                    norms=[self.bns[i]] if self.batchnorm else [],
                    consumers=[consumer],
                    activation=self.acts[i],
                    kind="conv",
                )
            )
        for j in range(len(self.dense_acts)):
            slots.append(
                LayerSlot(
                    name=f"dense{j}",
                    producers=[self.dense[j]],
                    consumers=[Consumer(self.dense[j + 1])],
                    activation=self.dense_acts[j],
                    kind="dense",
                )
            )
        return slots
