"""Figures and tables of the DARTS-PRIME chapter: the FIMT schedule (Fig. 20), alpha trajectories
per edge (Figs. 18 and 21), derived cells, error against size (Fig. 26) and skip-connections in
long searches (Fig. 19)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from structlab import plotting
from structlab.darts.drawing import draw_genotype
from structlab.darts.experiments import genotype_from_record
from structlab.darts.genotypes import cell_edges

warnings.filterwarnings("ignore", message="The figure layout has changed to tight")

__all__ = ["PARAMETER_FREE", "search_frame", "summary_frame", "plot_fimt_schedule",
           "plot_alpha_trajectories", "plot_genotypes", "plot_error_vs_size", "plot_skip_collapse"]

_MARKERS = "osD^v<>P*"

#: The operations without weights: what the alternating schedule favours early (§5.4.1).
PARAMETER_FREE = ("skip_connect", "max_pool_3x3", "avg_pool_3x3")


def search_frame(searches: Sequence[Mapping[str, Any]],
                 evaluations: Sequence[Mapping[str, Any]] | None = None) -> pd.DataFrame:
    """One row per search (variant, seed): w- and alpha steps, final edge entropy,
    skip-connections per cell, parameter-free operations (:data:`PARAMETER_FREE`) of the normal
    cell, operators pruned (CRB), search time, and the evaluation's test error and parameters
    when ``evaluations`` (same order) are given."""
    rows = []
    for i, s in enumerate(searches):
        row = {"variant": s["variant"], "seed": s["seed"], "w_steps": s["n_w_steps"],
               "alpha_steps": s["n_alpha_steps"], "entropy": s["final_entropy"],
               "skip_normal": s["skip_normal"], "skip_reduce": s["skip_reduce"],
               "free_normal": sum(op in PARAMETER_FREE for op, _ in s["genotype"]["normal"]),
               "pruned": len(s["pruned"]), "search_time": s["search_time"]}
        if evaluations is not None:
            row.update(test_error=evaluations[i]["test_error"], params=evaluations[i]["params"])
        rows.append(row)
    return pd.DataFrame(rows)


def summary_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over seeds per variant (columns ``<metric>`` and
    ``<metric>_std``), in the order the variants first appear."""
    order = list(dict.fromkeys(frame.variant))
    numeric = frame.drop(columns=["seed"]).groupby("variant", sort=False)
    mean, std = numeric.mean(), numeric.std(ddof=1).fillna(0.0)
    out = mean.join(std.add_suffix("_std"))
    return out.loc[order]


def plot_fimt_schedule(record: Mapping[str, Any], steps: int | None = None):
    """Figure 20: the FIMT sample (eq. 18), its moving average (eq. 19) and the adaptive
    threshold over the first ``steps`` w-steps of a FIMT search, with a tick at every alpha
    step."""
    n = len(record["fimt_samples"]) if steps is None else min(steps, len(record["fimt_samples"]))
    t = np.arange(1, n + 1)
    fig, ax = plotting.subplots(1, 1, width=7.5, row_height=3.2)
    ax.plot(t, record["fimt_samples"][:n], lw=0.8, alpha=0.45, color="0.4",
            label=r"$\mathrm{tr}(GG^\top)$ per batch (eq. 18)")
    ax.plot(t, record["fimt_ema"][:n], lw=1.8, color=plotting.color_for(0),
            label=r"FIMT $\bar F_n$ (eq. 19)")
    ax.plot(t, record["thresholds"][:n], lw=1.4, ls="--", color=plotting.color_for(1),
            label="threshold $h$")
    steps_alpha = [s + 1 for s in record["alpha_steps"] if s < n]
    ax.set_yscale("log")
    lo = ax.get_ylim()[0]
    ax.plot(steps_alpha, [lo * 1.15] * len(steps_alpha), "|", ms=12, mew=1.6,
            color=plotting.color_for(2), label=r"$\alpha$ step")
    ax.set_xlabel("w-step")
    ax.set_ylabel("Fisher information trace")
    ax.legend(fontsize=8, loc="upper right")
    return fig


def plot_alpha_trajectories(record: Mapping[str, Any], cell: str = "normal", steps: int = 4,
                            title: str | None = None):
    """Figures 18 and 21 (a, b): the activated weight of every operation on every edge over the
    search. Row = destination node, column = source (``c_{k-2}``, ``c_{k-1}``, node 0, ...);
    'none' is not drawn, as it can never be selected."""
    which = 0 if cell == "normal" else 1
    snaps = record["snapshots"][which].numpy()  # [S, E, P]
    x = np.asarray(record["snapshot_steps"])
    prims = list(record["primitives"])
    edges = cell_edges(steps)
    fig, axes = plotting.subplots(steps, steps + 1, width=2.0 * (steps + 1), row_height=1.45,
                                  squeeze=False, sharex=True, sharey=True)
    for ax in axes.flat:
        ax.set_visible(False)
    names = ["$c_{k-2}$", "$c_{k-1}$"] + [f"node {i}" for i in range(steps - 1)]
    for e, (node, src) in enumerate(edges):
        ax = axes[node][src]
        ax.set_visible(True)
        for p, name in enumerate(prims):
            if name == "none":
                continue
            ax.plot(x, snaps[:, e, p], lw=1.1, color=plotting.color_for(p), label=name)
        if node == steps - 1:
            ax.set_xlabel("w-step", fontsize=7)
        if src == 0:
            ax.set_ylabel(f"node {node}", fontsize=8)
        ax.set_title(f"{names[src]} → node {node}", fontsize=7)
        ax.tick_params(labelsize=6)
    handles, labels = axes[steps - 1][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper right", fontsize=7, ncol=1, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_genotypes(records: Mapping[str, Mapping[str, Any]]):
    """The normal and reduction cells of each genotype record (one row per label), drawn from
    the genotype (Figures 18, 21 (c, d))."""
    fig, axes = plotting.subplots(len(records), 2, width=10.0, row_height=2.8, squeeze=False)
    for row, (label, rec) in zip(axes, records.items()):
        geno = genotype_from_record(rec)
        for ax, kind in zip(row, ("normal", "reduce")):
            draw_genotype(geno, kind, ax=ax, title=f"{label}: {kind} cell")
    return fig


def plot_error_vs_size(frame: pd.DataFrame):
    """Figure 26: test error of the evaluated cells against their parameter count, one marker
    per variant (each seed a small dot, the mean ± std a large marker)."""
    fig, ax = plotting.subplots(1, 1, width=6.5, row_height=3.6)
    for i, (variant, sub) in enumerate(frame.groupby("variant", sort=False)):
        color = plotting.color_for(i)
        ax.scatter(sub.params / 1e3, sub.test_error, s=12, alpha=0.4, color=color)
        ax.errorbar(sub.params.mean() / 1e3, sub.test_error.mean(),
                    xerr=sub.params.std(ddof=1) / 1e3 if len(sub) > 1 else None,
                    yerr=sub.test_error.std(ddof=1) if len(sub) > 1 else None,
                    marker=_MARKERS[i % len(_MARKERS)], ms=7, capsize=3, color=color,
                    label=variant)
    ax.set_xlabel("evaluation network parameters (thousands)")
    ax.set_ylabel("test error (%)")
    ax.legend(fontsize=8)
    return fig


def plot_skip_collapse(long_runs: Sequence[Mapping[str, Any]], epochs: int | None = None):
    """Figure 19: skip-connections in the derived normal and reduction cells at checkpoints of
    a long search, per variant (of the 8 operations a cell keeps). With ``epochs`` (the length
    of the searches) the x-axis is in epochs, so that schedules with different w-steps per
    epoch line up; otherwise in w-steps."""
    fig, axes = plotting.subplots(1, 2, width=9.0, row_height=3.0, squeeze=False, sharey=True)
    for i, run in enumerate(long_runs):
        for ax, cell in zip(axes[0], ("normal", "reduce")):
            x = np.asarray(run["steps"], dtype=float)
            if epochs is not None:
                x = x * epochs / x[-1]
            ax.plot(x, run[f"skip_{cell}"], marker=_MARKERS[i % len(_MARKERS)],
                    color=plotting.color_for(i), label=f"{run['variant']} (seed {run['seed']})")
            ax.set_title(f"{cell} cell")
            ax.set_xlabel("epoch of the search" if epochs is not None else "w-step of the search")
    axes[0][0].set_ylabel("skip-connections kept (of 8)")
    axes[0][0].set_ylim(-0.3, 8.3)
    axes[0][0].legend(fontsize=8)
    return fig
