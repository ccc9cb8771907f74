"""Tables of fine-tuning runs (:func:`~structlab.growprune.transfer.finetune_run` results) in the
shape of the thesis's Figure 35: one row per run, per-layer change relative to the original
width, and FLOPs over training.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import torch
from torch import nn

from structlab.growprune.buffers import DynamicBuffers
from structlab.growprune.triggers import SCALINGS, phi_from_gram, scaled_spectrum

__all__ = ["layer_spectra", "evaluation_changes", "layer_effective_dimensions", "runs_frame",
           "summary_frame", "layer_changes", "flops_trace", "total_change"]


def runs_frame(results: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per run: ``task``, ``method``, ``seed``, test ``accuracy`` (%), final inference
    ``flops``, ``flops_ratio`` (final / the pretrained network's on the same input) and the total
    units ``grown`` and ``pruned`` over all layers."""
    rows = []
    for r in results:
        rows.append({"task": r["task"], "method": r["method"], "seed": r["seed"],
                     "accuracy": 100 * r["accuracy"], "flops": r["flops"],
                     "flops_ratio": r["flops"] / r["flops_initial"],
                     "grown": sum(r["grown"].values()), "pruned": sum(r["pruned"].values())})
    return pd.DataFrame(rows)


def summary_frame(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over seeds of accuracy, FLOPs ratio, units grown and pruned,
    per task and method (in the order they first appear)."""
    grouped = runs.groupby(["task", "method"], sort=False)
    cols = ["accuracy", "flops_ratio", "grown", "pruned"]
    mean, std = grouped[cols].mean(), grouped[cols].std(ddof=1).fillna(0.0)
    return mean.join(std, rsuffix="_std")


def layer_changes(results: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Units grown and pruned per layer relative to the layer's original width (Figure 35, third
    and fourth columns): one row per run and layer, with ``layer_index`` in forward order."""
    rows = []
    for r in results:
        for i, (layer, width) in enumerate(r["initial_widths"].items()):
            rows.append({"task": r["task"], "method": r["method"], "seed": r["seed"],
                         "layer": layer, "layer_index": i, "width": width,
                         "grown": r["grown"][layer] / width, "pruned": r["pruned"][layer] / width,
                         "final": r["widths"][layer] / width})
    return pd.DataFrame(rows)


def total_change(changes: pd.DataFrame) -> pd.DataFrame:
    """Per task, method and layer: the mean over seeds of (grown + pruned) / original width, the
    structural turnover of that layer."""
    turnover = changes.assign(change=changes.grown + changes.pruned)
    return (turnover.groupby(["task", "method", "layer_index", "layer"], sort=False)["change"]
            .mean().reset_index())


def flops_trace(results: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Inference FLOPs over training relative to the pretrained network (Figure 35, second
    column): one row per run and traced step."""
    rows = []
    for r in results:
        for t in r["trace"]:
            rows.append({"task": r["task"], "method": r["method"], "seed": r["seed"],
                         "step": t["step"], "flops_ratio": t["flops"] / r["flops_initial"]})
    return pd.DataFrame(rows)


@torch.no_grad()
def layer_effective_dimensions(model: nn.Module, inputs: torch.Tensor, *, eps: float = 1e-2,
                               ratio: float = 2.0, min_samples: int = 64) -> dict[str, float]:
    """phi_ED (eq. 37) of every hidden layer's post-activations on ``inputs`` (evaluation mode),
    measured the way DYNO measures it: each layer's last ``n_l`` samples of ``inputs``
    (:class:`~structlab.growprune.buffers.DynamicBuffers`). ``inputs`` must hold enough samples
    for the widest layer; a layer without enough is reported as NaN."""
    slots = model.layer_slots()
    buffers = DynamicBuffers(model, slots, ratio=ratio, min_samples=min_samples)
    try:
        buffers.observe(inputs)
        buffers.refill()
        return {s.name: (phi_from_gram(buffers[s.name].gram(), buffers[s.name].columns, eps)
                         if buffers.ready(s) else float("nan")) for s in slots}
    finally:
        buffers.remove()


@torch.no_grad()
def layer_spectra(model: nn.Module, inputs: torch.Tensor, *, scalings: Sequence[str] = SCALINGS,
                  ratio: float = 2.0, min_samples: int = 64, seed: int = 0) -> pd.DataFrame:
    """The singular values phi_ED thresholds (eq. 37), per hidden layer, on the samples DYNO's
    buffer would hold (:class:`~structlab.growprune.buffers.DynamicBuffers` on ``inputs``): one
    row per layer, scaling and singular value, with ``rank`` (0 = largest), ``position``
    (``(rank + 0.5) / M``) and ``sigma``."""
    slots = model.layer_slots()
    buffers = DynamicBuffers(model, slots, ratio=ratio, min_samples=min_samples)
    rows = []
    try:
        buffers.observe(inputs)
        buffers.refill()
        for s in slots:
            acts = buffers[s.name].H
            for scaling in scalings:
                sv = scaled_spectrum(acts, scaling=scaling,
                                     generator=torch.Generator().manual_seed(seed))
                M = sv.numel()
                rows += [{"layer": s.name, "width": M, "scaling": scaling, "rank": i,
                          "position": (i + 0.5) / M, "sigma": float(v)}
                         for i, v in enumerate(sv.tolist())]
    finally:
        buffers.remove()
    return pd.DataFrame(rows)


def evaluation_changes(results: Sequence[Mapping[str, Any]], every: int, steps: int
                       ) -> pd.DataFrame:
    """Units grown and pruned at every trigger evaluation of every DYNO run (zeros where
    nothing changed): one row per run, evaluation step and layer, relative to the layer's
    original width as well (``grown_rel``, ``pruned_rel``)."""
    rows = []
    for r in results:
        if "dyno" not in r["method"]:
            continue
        by_key = {(e["step"], e["layer"]): e for e in r["events"]}
        for step in range(every, steps + 1, every):
            for i, (layer, width) in enumerate(r["initial_widths"].items()):
                e = by_key.get((step, layer), {"grown": 0, "pruned": 0})
                rows.append({"task": r["task"], "method": r["method"], "seed": r["seed"],
                             "step": step, "layer": layer, "layer_index": i,
                             "grown": e["grown"], "pruned": e["pruned"],
                             "grown_rel": e["grown"] / width, "pruned_rel": e["pruned"] / width})
    return pd.DataFrame(rows)
