"""Small helpers shared by the operators (not part of the public API)."""

from __future__ import annotations

from torch import nn

from structlab.models.slots import LayerSlot, ResizableModel


def weight_param(module: nn.Module, name: str = "weight") -> nn.Parameter:
    """The trainable tensor behind ``module.<name>``: ``<name>_orig`` when a mask is applied."""
    orig = getattr(module, name + "_orig", None)
    return orig if orig is not None else getattr(module, name)


def is_masked(module: nn.Module, name: str = "weight") -> bool:
    """Whether ``module.<name>`` is computed from ``<name>_orig * <name>_mask``."""
    return hasattr(module, name + "_orig") and hasattr(module, name + "_mask")


def resolve_slot(model: nn.Module, slot: int | str | LayerSlot) -> LayerSlot:
    """Turn an index or a name into a :class:`LayerSlot` of ``model``."""
    if isinstance(slot, LayerSlot):
        return slot
    if isinstance(model, ResizableModel):
        return model.slot(slot)
    slots_fn = getattr(model, "layer_slots", None)
    if slots_fn is None:
        raise TypeError(f"{type(model).__name__} has no layer_slots(); cannot resolve {slot!r}")
    slots = slots_fn()
    if isinstance(slot, int):
        return slots[slot]
    for s in slots:
        if s.name == slot:
            return s
    raise KeyError(f"no slot named {slot!r}")
