"""Wide residual networks (WRN-d-k, Zagoruyko and Komodakis 2016) with resizable layers.

The thesis (§5.3.2) uses WideResNet-28-1: a 16-channel stem convolution, three groups of 16, 32
and 64 channels with four residual blocks each, and a dense layer on global mean pooling. Blocks
are pre-activation ``BN -> act -> conv3x3 -> BN -> act -> conv3x3`` with an identity shortcut, or
a 1x1 convolution shortcut (on the activated input) where the width or the stride changes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from structlab.models.slots import Consumer, LayerSlot, ResizableModel, scaled

__all__ = ["WideResNet", "WideBlock"]


class WideBlock(nn.Module):
    """One pre-activation residual block. ``shortcut`` is a 1x1 convolution or ``None`` (identity).

    ``residual`` switches the shortcut branch on or off (the model sets it for every block).
    """

    def __init__(
        self, c_in: int, c_mid: int, c_out: int, stride: int, activation: Callable[[], nn.Module]
    ) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.act1 = activation()
        self.conv1 = nn.Conv2d(c_in, c_mid, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_mid)
        self.act2 = activation()
        self.conv2 = nn.Conv2d(c_mid, c_out, 3, padding=1, bias=False)
        needs_conv = c_in != c_out or stride != 1
        self.shortcut = nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False) if needs_conv else None
        self.residual = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.act1(self.bn1(x))
        out = self.conv2(self.act2(self.bn2(self.conv1(a))))
        if not self.residual:
            return out
        return out + (x if self.shortcut is None else self.shortcut(a))


class WideResNet(ResizableModel):
    """WRN-``depth``-``widen_factor`` for small images, with one slot per resizable layer.

    Slots: the inner width of every block (``group{g}.block{b}``, between its two convolutions,
    independently resizable) and one slot per residual stream (``group{g}``): all blocks of a group
    add into the same channels, so the shortcut convolution, every ``conv2`` of the group, the
    BatchNorms that read the stream and the convolutions (or the final dense layer) that read it
    change together. The stem convolution is its own slot ``stem`` when the first group starts
    with a shortcut convolution, else it belongs to the ``group0`` stream.

    Args:
        depth: ``6 n + 4`` (28 gives four blocks per group).
        widen_factor: multiplies the group widths 16, 32, 64 (may be fractional, e.g. 0.25 for the
            thesis's quarter-width backbone).
        num_classes, in_channels: outputs and input channels.
        activation: factory called once per activation module (default ``nn.ReLU``).
        stem_channels: width of the stem convolution; default 16, or ``16 * widen_factor`` when
            ``widen_factor < 1`` (so the quarter-width network is a quarter everywhere).

    Set ``model.residual_enabled = False`` to switch every shortcut off (the thesis does so when it
    evaluates activation- and weight-based metrics of WideResNets, §5.3.2).
    """

    def __init__(
        self,
        depth: int = 28,
        widen_factor: float = 1.0,
        num_classes: int = 10,
        in_channels: int = 3,
        activation: Callable[[], nn.Module] = nn.ReLU,
        stem_channels: int | None = None,
    ) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n + 4 with n >= 1, got {depth}")
        if num_classes < 1 or in_channels < 1:
            raise ValueError("num_classes and in_channels must be positive")
        n = (depth - 4) // 6
        widths = [scaled(w, widen_factor) for w in (16, 32, 64)]
        if stem_channels is None:
            stem_channels = 16 if widen_factor >= 1 else scaled(16, widen_factor)
        if stem_channels < 1:
            raise ValueError(f"stem_channels must be positive, got {stem_channels}")
        self.stem = nn.Conv2d(in_channels, stem_channels, 3, padding=1, bias=False)
        self.groups = nn.ModuleList()
        c_in = stem_channels
        for g, w in enumerate(widths):
            blocks = nn.ModuleList()
            for b in range(n):
                stride = 2 if (g > 0 and b == 0) else 1
                blocks.append(WideBlock(c_in, w, w, stride, activation))
                c_in = w
            self.groups.append(blocks)
        self.bn = nn.BatchNorm2d(c_in)
        self.act = activation()
        self.fc = nn.Linear(c_in, num_classes)
        self.depth, self.widen_factor = depth, widen_factor
        self._residual = True

    @property
    def residual_enabled(self) -> bool:
        """Whether the shortcut branches are added (settable)."""
        return self._residual

    @residual_enabled.setter
    def residual_enabled(self, value: bool) -> None:
        self._residual = bool(value)
        for blocks in self.groups:
            for block in blocks:
                block.residual = self._residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for blocks in self.groups:
            for block in blocks:
                x = block(x)
        x = self.act(self.bn(x))
        return self.fc(x.mean(dim=(2, 3)))

    def _readers(self, g: int) -> tuple[list[nn.Module], list[Consumer], nn.Module]:
        """Norms, consumers and activation reading the stream *entering* group ``g`` (3 = head)."""
        if g == len(self.groups):
            return [self.bn], [Consumer(self.fc)], self.act
        first = self.groups[g][0]
        consumers = [Consumer(first.conv1)]
        if first.shortcut is not None:
            consumers.append(Consumer(first.shortcut))
        return [first.bn1], consumers, first.act1

    def layer_slots(self) -> list[LayerSlot]:
        """Slots in forward order: ``stem`` (if separate), then per group its blocks and stream."""
        slots: list[LayerSlot] = []
        pending: LayerSlot | None = None  # a stream slot that an identity shortcut extends
        norms, consumers, act = self._readers(0)
        stem = LayerSlot("stem", [self.stem], norms, consumers, act, kind="conv")
        if self.groups[0][0].shortcut is None:
            pending = stem
        else:
            slots.append(stem)
        for g, blocks in enumerate(self.groups):
            for b, block in enumerate(blocks):
                slots.append(
                    LayerSlot(
                        f"group{g}.block{b}",
                        [block.conv1],
                        [block.bn2],
                        [Consumer(block.conv2)],
                        block.act2,
                        kind="conv",
                    )
                )
            producers = [] if blocks[0].shortcut is None else [blocks[0].shortcut]
            producers += [block.conv2 for block in blocks]
            stream_norms = [block.bn1 for block in blocks[1:]]
            stream_consumers = [Consumer(block.conv1) for block in blocks[1:]]
            norms, consumers, act = self._readers(g + 1)
            slot = LayerSlot(
                f"group{g}",
                producers,
                stream_norms + norms,
                stream_consumers + consumers,
                act,
                kind="conv",
            )
            if pending is not None:  # identity shortcut at the start of this group: same channels
                slot.producers = pending.producers + slot.producers
                slot.norms = pending.norms + slot.norms
                slot.consumers = pending.consumers + slot.consumers
                pending = None
            if g + 1 < len(self.groups) and self.groups[g + 1][0].shortcut is None:
                pending = slot
            else:
                slots.append(slot)
        return slots
