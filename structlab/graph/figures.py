"""Tables and figures of the chapter "Your own model" (:mod:`structlab.graph` on torchvision)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import torch
from torch import nn

from structlab import plotting
from structlab.models.slots import LayerSlot

__all__ = ["slot_frame", "family_frame", "plot_slot_widths", "plot_growth",
           "zero_fan_out_check"]


def slot_frame(slots: Sequence[LayerSlot]) -> pd.DataFrame:
    """One row per slot: name, kind, width, producers, norms, consumers, the spatial factor of
    a flatten boundary and the activation chain its tap runs."""
    rows = []
    for s in slots:
        rows.append({
            "slot": s.name,
            "kind": s.kind,
            "width": s.width,
            "producers": len(s.producers),
            "norms": len(s.norms),
            "consumers": len(s.consumers),
            "spatial": max(c.spatial for c in s.consumers),
            "activation": s.activation.extra_repr() if s.activation is not None else "",
        })
    return pd.DataFrame(rows).set_index("slot")


def family_frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """The rows of :func:`structlab.graph.families.survey` as a table."""
    out = []
    for r in rows:
        out.append({
            "family": r["family"],
            "model": r["model"],
            "result": "accepted" if r["accepted"] else "refused",
            "slots (groups)": f"{r['slots']} ({r['groups']})" if r["accepted"] else "",
            "refused at": r["reason"],
        })
    return pd.DataFrame(out).set_index("family")


def plot_slot_widths(widths: Mapping[str, Mapping[str, int]], *, ax: Any = None) -> Any:
    """Grouped bars of every slot's width at several stages (``{stage: {slot: width}}``)."""
    stages = list(widths)
    names = list(widths[stages[0]])
    if ax is None:
        fig, ax = plotting.subplots(width=7.0, row_height=3.2)
    else:
        fig = ax.figure
    n = len(stages)
    for i, stage in enumerate(stages):
        xs = [j + (i - (n - 1) / 2) * 0.8 / n for j in range(len(names))]
        ax.bar(xs, [widths[stage].get(s, 0) for s in names], width=0.8 / n,
               color=plotting.color_for(i), label=stage)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("units (channels)")
    ax.legend(fontsize=8)
    return fig


def plot_growth(width_log: Sequence[Mapping[str, int]], names: Sequence[str], *,
                ax: Any = None) -> Any:
    """Width of each grown slot against the training step (``history.extra["widths"]``)."""
    if ax is None:
        fig, ax = plotting.subplots(width=6.4, row_height=3.0)
    else:
        fig = ax.figure
    steps = [w["step"] for w in width_log]
    for i, name in enumerate(names):
        ax.step(steps, [w[name] for w in width_log], where="post",
                color=plotting.color_for(i), label=name)
    ax.set_xlabel("training step")
    ax.set_ylabel("units (channels)")
    ax.legend(fontsize=7, ncol=2)
    return fig


@torch.no_grad()
def zero_fan_out_check(model: nn.Module, slot: LayerSlot, x: torch.Tensor, k: int = 4,
                       seed: int = 0) -> float:
    """Largest change of the outputs of ``model`` (evaluation mode) on ``x`` when ``k`` units
    with random fan-in and zero fan-out are added to ``slot`` and removed again; the model is
    left as it was."""
    from structlab.operators import add_units, remove_units

    was = model.training
    model.eval()
    ref = model(x)
    add_units(model, slot, k, fan_in="default", generator=torch.Generator().manual_seed(seed))
    out = model(x)
    remove_units(model, slot, list(range(slot.width - k, slot.width)))
    model.train(was)
    return float((out - ref).abs().max())
