"""Figures of the grow-and-prune chapter (thesis Figure 35), one row per target task."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from structlab import plotting

warnings.filterwarnings("ignore", message="The figure layout has changed to tight")

__all__ = ["plot_accuracy_vs_flops", "plot_flops_over_training", "plot_layer_changes"]

_MARKERS = "osD^v<>"


def _methods(frame: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(frame.method))


def _tasks(frame: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(frame.task))


def plot_accuracy_vs_flops(runs: pd.DataFrame):
    """Figure 35, first column: final test accuracy against final inference FLOPs (relative to
    the pretrained network), mean ± std over seeds per method, one panel per task; the seeds'
    own runs as small dots. ``runs`` is :func:`~structlab.growprune.report.runs_frame`."""
    tasks, methods = _tasks(runs), _methods(runs)
    fig, axes = plotting.subplots(1, len(tasks), width=4.2 * len(tasks), row_height=3.3,
                                  squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for i, m in enumerate(methods):
            sub = runs[(runs.task == task) & (runs.method == m)]
            color = plotting.color_for(i)
            ax.scatter(sub.flops_ratio, sub.accuracy, s=10, alpha=0.35, color=color)
            ax.errorbar(sub.flops_ratio.mean(), sub.accuracy.mean(),
                        xerr=sub.flops_ratio.std(ddof=1) if len(sub) > 1 else None,
                        yerr=sub.accuracy.std(ddof=1) if len(sub) > 1 else None,
                        marker=_MARKERS[i % len(_MARKERS)], ms=7, capsize=3, color=color,
                        label=m)
        ax.set_title(task)
        ax.set_xlabel("inference FLOPs / pretrained network")
        ax.set_ylabel("test accuracy (%)")
    axes[0][0].legend(fontsize=8)
    return fig


def plot_flops_over_training(trace: pd.DataFrame):
    """Figure 35, second column: inference FLOPs over training relative to the pretrained
    network, mean over seeds with a ± std band, per method and task. ``trace`` is
    :func:`~structlab.growprune.report.flops_trace`."""
    tasks, methods = _tasks(trace), _methods(trace)
    fig, axes = plotting.subplots(1, len(tasks), width=4.2 * len(tasks), row_height=3.0,
                                  squeeze=False, sharey=True)
    for ax, task in zip(axes[0], tasks):
        for i, m in enumerate(methods):
            sub = trace[(trace.task == task) & (trace.method == m)]
            g = sub.groupby("step").flops_ratio
            mean, std = g.mean(), g.std(ddof=1).fillna(0.0)
            color = plotting.color_for(i)
            ax.plot(mean.index, mean.values, color=color, label=m)
            ax.fill_between(mean.index, mean - std, mean + std, color=color, alpha=0.2, lw=0)
        ax.set_title(task)
        ax.set_xlabel("iteration")
    axes[0][0].set_ylabel("inference FLOPs / pretrained")
    axes[0][0].legend(fontsize=8)
    return fig


def plot_layer_changes(changes: pd.DataFrame, methods: Sequence[str]):
    """Figure 35, third and fourth columns: units grown (up) and pruned (down) per layer over
    the run, relative to the layer's original width, mean ± std over seeds; one row per method
    in ``methods``, one column per task. ``changes`` is
    :func:`~structlab.growprune.report.layer_changes`."""
    tasks = _tasks(changes)
    fig, axes = plotting.subplots(len(methods), len(tasks), width=4.2 * len(tasks),
                                  row_height=2.8, squeeze=False, sharey=True)
    for r, m in enumerate(methods):
        for c, task in enumerate(tasks):
            ax = axes[r][c]
            sub = changes[(changes.task == task) & (changes.method == m)]
            g = sub.groupby(["layer_index", "layer"], sort=True)
            grown, pruned = g.grown, g.pruned
            labels = [name for _, name in grown.mean().index]
            x = np.arange(len(labels))
            ax.bar(x, grown.mean().values, yerr=grown.std(ddof=1).fillna(0).values,
                   color=plotting.color_for(2), capsize=2, label="grown")
            ax.bar(x, -pruned.mean().values, yerr=pruned.std(ddof=1).fillna(0).values,
                   color=plotting.color_for(3), capsize=2, label="pruned")
            ax.axhline(0, color="black", lw=0.6)
            ax.set_xticks(x, labels, rotation=45, fontsize=7)
            ax.set_title(f"{m}: {task}", fontsize=9)
        axes[r][0].set_ylabel("units / original width")
    axes[0][0].legend(fontsize=8)
    return fig
