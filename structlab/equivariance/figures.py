"""Figures of the equivariance chapter (thesis Fig. 8-15, redrawn from runs)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from structlab import plotting
from structlab.equivariance.layers import GroupConv2d, relax
from structlab.equivariance.search import EvolutionResult, MixtureResult

__all__ = [
    "plot_kernel_expansion",
    "plot_errors",
    "plot_errors_vs_params",
    "plot_evolution",
    "plot_mixing_over_training",
    "plot_symmetry_discovery",
]


def plot_kernel_expansion(
    *, group: str = "C4", relaxed: str = "C2", kernel_size: int = 5, seed: int = 0
) -> plt.Figure:
    """Fig. 8A: a lifting kernel over ``group`` expanded by the group's actions, and the same
    expansion after the relaxation morphism to ``relaxed`` (identical filters, reparameterized:
    the stored kernels of the relaxed layer are marked)."""
    torch.manual_seed(seed)
    layer = GroupConv2d(1, 1, kernel_size, group, reference=group, lifting=True, bias=False)
    small = relax(layer, relaxed)
    rows = [
        (f"{group}: 1 stored kernel", layer),
        (f"{relaxed}: {small.weight.shape[0]} stored", small),
    ]
    w0 = layer.expanded_weight()
    order = w0.shape[0]
    fig, axes = plotting.subplots(2, order, width=1.1 * order + 0.6, row_height=1.35, squeeze=False)
    lim = float(w0.abs().max())
    e_rows = [set(m.out_layout.natural_to_canonical[:: m.group.order].tolist()) for _, m in rows]
    for r, (label, module) in enumerate(rows):
        w = module.expanded_weight().detach()
        for j in range(order):
            ax = axes[r, j]
            ax.imshow(w[j, 0].numpy(), cmap="RdBu_r", vmin=-lim, vmax=lim)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
            if j in e_rows[r]:
                for side in ax.spines.values():
                    side.set_visible(True)
                    side.set_color(plotting.color_for(1))
                    side.set_linewidth(2.5)
            if r == 0:
                ax.set_title(f"g{j}", fontsize=8)
        axes[r, 0].set_ylabel(label, fontsize=8)
    return fig


def plot_errors(rows: pd.DataFrame, order: Sequence[str], *, title: str = "") -> plt.Figure:
    """Fig. 9 / 13: test error of every trained network (dots), one column per method, with the
    mean over seeds of each seed's mean and its standard deviation over seeds (bar)."""
    fig, ax = plotting.subplots(width=6.4, row_height=3.2)
    for i, method in enumerate(order):
        sub = rows[rows["method"] == method]
        if len(sub) == 0:
            continue
        errs = sub["test_error"].to_numpy()
        x = np.full(len(errs), i) + np.linspace(-0.12, 0.12, len(errs))
        ax.scatter(x, errs, color=plotting.color_for(i), s=14, zorder=3, alpha=0.6)
        per_seed = sub.groupby("seed")["test_error"].mean()
        ax.errorbar(i + 0.25, per_seed.mean(), yerr=per_seed.std(ddof=0), fmt="_", ms=14,
                    capsize=4, color=plotting.color_for(i), lw=2, zorder=4)
    ax.set_xticks(range(len(order)))
    ax.set_xticklabels(order, rotation=35, ha="right", fontsize=8)
    ax.set_ylabel("test error (%)")
    if title:
        ax.set_title(title)
    return fig


def plot_errors_vs_params(
    rows: pd.DataFrame, order: Sequence[str], *, column: str = "stored_params"
) -> plt.Figure:
    """Fig. 10 / 14: test error against stored parameter count."""
    fig, ax = plotting.subplots(width=6.4, row_height=3.2)
    for i, method in enumerate(order):
        sub = rows[rows["method"] == method]
        if len(sub):
            ax.scatter(
                sub[column], sub["test_error"], label=method, s=20, color=plotting.color_for(i)
            )
    ax.set_xscale("log")
    ax.set_xlabel("stored parameters")
    ax.set_ylabel("test error (%)")
    ax.legend(ncol=2)
    return fig


def plot_evolution(result: EvolutionResult) -> plt.Figure:
    """Fig. 11: parameter count of every selected individual over the generations, each line
    following one individual (coloured by its final validation accuracy)."""
    sel = result.selected()
    fig, ax = plotting.subplots(width=6.4, row_height=3.2)
    final = sel.groupby("uid")["val_acc"].last()
    lo, hi = float(final.min()), float(final.max())
    cmap = plt.get_cmap("viridis")
    log = result.log.set_index("uid")
    for uid, track in sel.groupby("uid"):
        parent = log.loc[uid, "parent"]
        parent = parent.iloc[0] if isinstance(parent, pd.Series) else parent
        gens, params = list(track["generation"]), list(track["params"])
        if parent is not None and not pd.isna(parent) and gens[0] > 0:
            prev = sel[(sel["uid"] == int(parent)) & (sel["generation"] == gens[0] - 1)]
            if len(prev):
                gens.insert(0, gens[0] - 1)
                params.insert(0, int(prev["params"].iloc[0]))
        color = cmap(0.5 if hi == lo else (final[uid] - lo) / (hi - lo))
        ax.plot(gens, params, "-o", color=color, ms=3, lw=1.2)
    last = sel[sel["generation"] == sel["generation"].max()]
    for _, row in last.iterrows():
        ax.annotate(
            row["architecture"],
            (row["generation"], row["params"]),
            fontsize=6,
            xytext=(4, 0),
            textcoords="offset points",
            va="center",
        )
    ax.set_xlabel("generation")
    ax.set_ylabel("parameters")
    sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(lo, hi))
    fig.colorbar(sm, ax=ax, label="final val. accuracy (%)")
    return fig


def plot_mixing_over_training(result: MixtureResult, *, title: str = "") -> plt.Figure:
    """Fig. 15: the architecture weights ``z`` of every layer over training."""
    frame = result.z_frame()
    layers = sorted(frame["layer"].unique())
    ncols = 4
    nrows = int(np.ceil(len(layers) / ncols))
    fig, axes = plotting.subplots(
        nrows, ncols, width=7.0, row_height=1.9, sharex=True, sharey=True, squeeze=False
    )
    for k, layer in enumerate(layers):
        ax = axes.flat[k]
        sub = frame[frame["layer"] == layer]
        for j, g in enumerate(result.groups):
            s = sub[sub["group"] == g]
            ax.plot(s["epoch"], s["z"], label=g, color=plotting.color_for(j))
        ax.set_title(f"layer {layer}", fontsize=9)
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    for ax in axes[:, 0]:
        ax.set_ylabel("z")
    axes.flat[0].legend(ncol=2, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_symmetry_discovery(results: Mapping[str, MixtureResult]) -> plt.Figure:
    """Fig. 12: final ``z`` per layer (stacked bars) for data augmented by each group."""
    names = list(results)
    fig, axes = plotting.subplots(
        len(names), 1, width=6.4, row_height=1.15, sharex=True, squeeze=False
    )
    for r, name in enumerate(names):
        ax = axes[r, 0]
        table = results[name].final_z()
        bottom = np.zeros(len(table))
        for j, g in enumerate(table.columns):
            ax.bar(
                table.index,
                table[g],
                bottom=bottom,
                color=plotting.color_for(j),
                label=g if r == 0 else None,
                width=0.8,
            )
            bottom += table[g].to_numpy()
        ax.set_ylabel(f"{name}-aug.", fontsize=8)
        ax.set_ylim(0, 1)
        ax.grid(False)
    axes[-1, 0].set_xlabel("layer")
    axes[-1, 0].set_xticks(list(results[names[0]].final_z().index))
    fig.legend(loc="outside right center", fontsize=7)
    return fig
