"""The resizable-unit interface shared by every model in :mod:`structlab.models`.

Thesis §3.1 defines structural learning through four operators that act on *units*: a dense neuron,
a convolutional channel (the "Filter/channel" level of Fig. 2c) or a larger structure. A
:class:`LayerSlot` names one group of units that can be resized together and lists every tensor
that carries one entry per unit, so that the operators in :mod:`structlab.operators` can add or
remove units without knowing the model's architecture:

* ``producers``: ``nn.Linear`` / ``nn.Conv2d`` modules whose *output* units are the slot's units
  (rows ``weight[i]`` and ``bias[i]``); a residual group has several, because every block of the
  group writes into the same channels of the residual stream;
* ``norms``: ``BatchNorm`` modules normalising these units (``weight``, ``bias``,
  ``running_mean``, ``running_var``);
* ``consumers``: modules that *read* the units (columns ``weight[:, i]``), each with the
  ``spatial`` factor of the conv-to-dense flatten boundary: a dense consumer of a flattened
  ``(C, H, W)`` map has ``H * W`` input columns per channel, ``c * H * W ... (c + 1) * H * W - 1``;
* ``activation``: the module whose output is the post-activation ``H`` of the units, for forward
  hooks (activation statistics, redundancy, first-order Taylor saliency).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from torch import nn

__all__ = ["Consumer", "LayerSlot", "ResizableModel", "UNIT_LAYERS", "NORM_LAYERS"]

#: Layer types whose output units (dim 0 of ``weight``) may be a slot's units.
UNIT_LAYERS = (nn.Linear, nn.Conv2d)
#: Normalisation layers that carry one entry per unit.
NORM_LAYERS = (nn.BatchNorm1d, nn.BatchNorm2d)


@dataclass(frozen=True)
class Consumer:
    """A module reading a slot's units through the input dimension (dim 1) of its weight.

    ``spatial`` is 1 except at the conv-to-dense flatten boundary, where it is the number of
    spatial positions ``H * W`` flattened per channel (channel-major, as ``torch.flatten``).
    """

    module: nn.Module
    spatial: int = 1


@dataclass
class LayerSlot:
    """One resizable group of units of a model (a hidden layer or a residual group).

    The slot holds references to modules, not copies: after the operators resize those modules,
    ``width`` reports the new size and the slot stays valid.
    """

    name: str
    producers: list[nn.Module]
    norms: list[nn.Module] = field(default_factory=list)
    consumers: list[Consumer] = field(default_factory=list)
    activation: nn.Module | None = None
    kind: str = "dense"  # "dense" (neurons) or "conv" (channels)

    @property
    def width(self) -> int:
        """The current number of units (output size of the first producer)."""
        return int(_param(self.producers[0], "weight").shape[0])

    @property
    def is_group(self) -> bool:
        """True when several producers write into the same units (a residual group)."""
        return len(self.producers) > 1

    def check(self) -> None:
        """Raise ``ValueError`` if the tensors of the slot disagree on the number of units."""
        width = self.width
        for module in self.producers:
            if not isinstance(module, UNIT_LAYERS):
                raise ValueError(f"slot {self.name}: producer {type(module).__name__} unsupported")
            if _param(module, "weight").shape[0] != width:
                raise ValueError(f"slot {self.name}: producers disagree on width")
        for norm in self.norms:
            if norm.num_features != width:
                raise ValueError(f"slot {self.name}: norm has {norm.num_features} != {width}")
        for consumer in self.consumers:
            cols = _param(consumer.module, "weight").shape[1]
            if cols != width * consumer.spatial:
                raise ValueError(
                    f"slot {self.name}: consumer reads {cols} inputs, expected "
                    f"{width} x {consumer.spatial}"
                )

    def __repr__(self) -> str:
        return (
            f"LayerSlot({self.name!r}, width={self.width}, kind={self.kind!r}, "
            f"producers={len(self.producers)}, norms={len(self.norms)}, "
            f"consumers={len(self.consumers)})"
        )


def _param(module: nn.Module, name: str):
    """The trainable tensor behind ``module.<name>`` (``<name>_orig`` when a mask is applied)."""
    return (
        getattr(module, name + "_orig")
        if hasattr(module, name + "_orig")
        else getattr(module, name)
    )


class ResizableModel(nn.Module):
    """Base class of the models in :mod:`structlab.models`.

    Subclasses implement :meth:`layer_slots`; this class adds lookup helpers.
    """

    def layer_slots(self) -> list[LayerSlot]:  # pragma: no cover - abstract
        raise NotImplementedError

    def slot(self, key: int | str | LayerSlot) -> LayerSlot:
        """The slot with index or name ``key`` (a ``LayerSlot`` is returned unchanged)."""
        if isinstance(key, LayerSlot):
            return key
        slots = self.layer_slots()
        if isinstance(key, int) and not isinstance(key, bool):
            if not -len(slots) <= key < len(slots):
                raise IndexError(f"slot index {key} out of range for {len(slots)} slots")
            return slots[key]
        if isinstance(key, str):
            for s in slots:
                if s.name == key:
                    return s
            raise KeyError(f"no slot named {key!r}; slots are {[s.name for s in slots]}")
        raise TypeError(f"slot must be an int, a name or a LayerSlot, got {type(key).__name__}")

    def widths(self) -> dict[str, int]:
        """The current width of every slot, by name, in order."""
        return {s.name: s.width for s in self.layer_slots()}


def scaled(width: int | float, multiplier: float) -> int:
    """``round(width * multiplier)``, at least 1 (widths of models built with a multiplier)."""
    if multiplier <= 0:
        raise ValueError(f"width multiplier must be positive, got {multiplier}")
    return max(1, int(round(width * multiplier)))


def check_widths(widths: Sequence[int], what: str) -> None:
    for w in widths:
        if not isinstance(w, int) or w < 1:
            raise ValueError(f"{what} must be positive integers, got {list(widths)}")
