"""Figures of the neurogenesis chapter (thesis Fig. 28-30 and 33)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import pandas as pd

from structlab import plotting

warnings.filterwarnings("ignore", message="The figure layout has changed to tight")

__all__ = ["plot_widths_vs_nf", "plot_size_tradeoff", "plot_width_curves", "plot_gamma_sweep"]

_MARKERS = "osD^v<>Pp*"


def _color(names: Sequence[str], name: str) -> str:
    return plotting.color_for(list(names).index(name))


def plot_widths_vs_nf(frame: pd.DataFrame, strategies: Sequence[str]):
    """Fig. 28: final width of each hidden layer against ``n_f`` (1 hidden layer; 2 hidden
    layers, first and second layer)."""
    panels = [
        (1, 1, "1 hidden layer"),
        (2, 1, "2 hidden layers: layer 1"),
        (2, 2, "2 hidden layers: layer 2"),
    ]
    fig, axes = plotting.subplots(1, 3, width=10.0, row_height=3.2, sharey=True)
    for ax, (depth, layer, title) in zip(axes, panels):
        sub = frame[(frame.hidden_layers == depth) & (frame.layer == layer)]
        for i, s in enumerate(strategies):
            d = sub[sub.strategy == s].groupby("n_f").width.mean()
            ax.plot(
                d.index,
                d.values,
                marker=_MARKERS[i % len(_MARKERS)],
                label=s,
                color=_color(strategies, s),
            )
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        ax.set_xlabel("independent features $n_f$")
        ax.set_title(title)
    axes[0].set_ylabel("final width")
    axes[-1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def plot_size_tradeoff(records: Sequence[dict[str, Any]]):
    """Fig. 29: test accuracy (top) and training time (bottom) against the number of
    parameters; dynamic strategies (left) and preset schedules (right) with the static nets.
    Each point is the mean over seeds, its error bars the standard deviation over seeds in both
    coordinates (none for one seed)."""
    frame = pd.DataFrame(records)
    frame = frame.assign(accuracy=100 * frame.accuracy)
    grouped = frame.groupby(["label", "schedule", "strategy"], sort=False)
    metrics = ["params", "accuracy", "train_time"]
    stats = grouped[metrics].mean().join(grouped[metrics].std(ddof=0), rsuffix="_std")
    stats = stats.reset_index()
    fig, axes = plotting.subplots(2, 2, width=9.5, row_height=3.0, sharex="col")
    strategies = sorted(set(frame.strategy) - {"static"})
    statics = stats[stats.schedule == "static"]
    for col, subset in enumerate(
        [stats[stats.schedule == "dynamic"], stats[stats.schedule.isin(["linear", "batched"])]]
    ):
        for row, metric in enumerate(["accuracy", "train_time"]):
            ax = axes[row, col]
            for r in statics.itertuples():
                if col == 1 and not r.label.startswith("Medium"):
                    continue
                x, y = r.params, getattr(r, metric)
                ax.errorbar(x, y, xerr=r.params_std, yerr=getattr(r, f"{metric}_std"), fmt="*",
                            ms=10, color="black", capsize=2, zorder=3)
                ax.annotate(r.label, (x, y), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")
            for r in subset.itertuples():
                marker = {"dynamic": "o", "linear": "s", "batched": "^"}[r.schedule]
                ax.errorbar(r.params, getattr(r, metric), xerr=r.params_std,
                            yerr=getattr(r, f"{metric}_std"), fmt=marker, capsize=2,
                            color=_color(strategies, r.strategy),
                            label=r.strategy if row == 0 else None)
            ax.set_xscale("log")
            shown = pd.concat([subset.params, statics.params]) if col == 0 else pd.concat(
                [subset.params, statics[statics.label.str.startswith("Medium")].params])
            if len(shown) and shown.max() < 1.5 * shown.min():  # one size (the preset runs)
                ax.set_xlim(shown.min() / 1.5, shown.max() * 1.5)
            ax.set_ylabel("test accuracy (%)" if metric == "accuracy" else "training time (s)")
            if row == 1:
                ax.set_xlabel("parameters")
    axes[0, 0].set_title("dynamic (triggered)")
    axes[0, 1].set_title("preset: linear (squares), batched (triangles)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    h2, l2 = axes[0, 1].get_legend_handles_labels()
    seen = dict(zip(labels + l2, handles + h2))
    fig.legend(
        seen.values(),
        seen.keys(),
        fontsize=7,
        loc="lower center",
        ncol=4,
        bbox_to_anchor=(0.5, -0.04),
    )
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


def plot_width_curves(widths: pd.DataFrame, labels: Sequence[str], maximum: int | None = None):
    """Fig. 30: the width of each hidden layer over training for the dynamic strategies."""
    layers = sorted(widths.layer.unique())
    fig, axes = plotting.subplots(1, len(layers), width=9.0, row_height=3.0, sharey=True)
    axes = [axes] if len(layers) == 1 else list(axes)
    for ax, layer in zip(axes, layers):
        for lab in labels:
            d = widths[(widths.label == lab) & (widths.layer == layer)]
            ax.plot(d.step, d.width, label=lab, color=_color(labels, lab))
        if maximum:
            ax.axhline(maximum, color="grey", ls=":", lw=1)
        ax.set_title(f"layer {layer}")
        ax.set_xlabel("training step")
    axes[0].set_ylabel("width")
    axes[-1].legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_gamma_sweep(records: Sequence[dict[str, Any]]):
    """Fig. 33: accuracy and training time against size for phi_ED and phi_OG across
    ``gamma_a`` (each point annotated with its gamma)."""
    frame = pd.DataFrame(records)
    fig, axes = plotting.subplots(1, 2, width=9.0, row_height=3.2)
    for i, (metric, d) in enumerate(frame.groupby("metric")):
        label = {"ed": r"$\phi_{ED}$", "og": r"$\phi_{OG}$"}.get(metric, metric)
        for ax, col, scale in ((axes[0], "accuracy", 100), (axes[1], "train_time", 1)):
            ax.plot(
                d.neurons,
                d[col] * scale,
                marker=_MARKERS[i],
                ls="",
                color=plotting.color_for(i),
                label=label,
            )
            for _, r in d.iterrows():
                ax.annotate(
                    f"{r.gamma:g}",
                    (r.neurons, r[col] * scale),
                    fontsize=7,
                    xytext=(3, 2),
                    textcoords="offset points",
                )
    axes[0].set_ylabel("test accuracy (%)")
    axes[1].set_ylabel("training time (s)")
    for ax in axes:
        ax.set_xlabel("hidden neurons (final)")
    axes[0].legend()
    fig.tight_layout()
    return fig
