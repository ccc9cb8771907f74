"""Helpers that hand the slots of a :class:`~structlab.graph.GraphModel` to the structural
methods of the library in the form they take, and compare slot declarations."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from structlab.models.slots import LayerSlot

__all__ = ["growth_groups", "dyno_layers", "same_slots", "slot_signature"]


def _slots(model) -> list[LayerSlot]:
    return list(model.layer_slots())


def growth_groups(model, *, gradient: bool = False) -> list[list[str]]:
    """``groups=`` for :class:`structlab.neurogenesis.Neurogenesis`: every slot with one
    producer (and, with ``gradient=True``, for GradMax and the gradient trigger, one consumer),
    each growing alone."""
    out = []
    for s in _slots(model):
        if len(s.producers) != 1 or (gradient and len(s.consumers) != 1):
            continue
        out.append([s.name])
    return out


def dyno_layers(model) -> list[str]:
    """``layers=`` for :class:`structlab.growprune.DYNO`: the slots with one producer (its
    INIT_GROW draws candidate fan-ins for that producer)."""
    return [s.name for s in _slots(model) if len(s.producers) == 1]


def slot_signature(slot: LayerSlot) -> tuple:
    """What makes two slot declarations the same: kind, producers, norms and consumers (by
    module identity, in order) with their spatial factors. Names and activation modules are
    left out (inferred slots read their activation through taps)."""
    return (
        slot.kind,
        tuple(id(m) for m in slot.producers),
        tuple(id(m) for m in slot.norms),
        tuple((id(c.module), c.spatial) for c in slot.consumers),
    )


def same_slots(a: Sequence[LayerSlot], b: Sequence[LayerSlot]) -> bool:
    """Whether two lists of slots declare the same unit groups, in any order (an unordered
    comparison of :func:`slot_signature`; producers, norms and consumers compared as sets)."""

    def key(s: LayerSlot) -> tuple:
        kind, prods, norms, cons = slot_signature(s)
        return kind, frozenset(prods), frozenset(norms), frozenset(cons)

    return Counter(map(key, a)) == Counter(map(key, b))
