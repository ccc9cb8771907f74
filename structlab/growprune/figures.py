"""Figures of the grow-and-prune chapter (thesis Figure 35), one row per target task."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from structlab import plotting

warnings.filterwarnings("ignore", message="The figure layout has changed to tight")

__all__ = ["plot_accuracy_vs_flops", "plot_flops_over_training", "plot_layer_changes",
           "plot_spectra", "plot_changes_over_training", "plot_width_sweep"]

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


def plot_spectra(spectra: pd.DataFrame, eps: float):
    """The diagnosis: each hidden layer's singular values (eq. 37's scaling solid, the authors'
    code dashed) against their position ``rank / M``, one line per source and target, and the
    threshold ``eps``. ``spectra`` is :func:`~structlab.growprune.report.layer_spectra` with
    ``source`` and ``task`` columns."""
    layers = list(dict.fromkeys(spectra.layer))
    fig, axes = plotting.subplots(1, len(layers), width=3.0 * len(layers), row_height=3.0,
                                  squeeze=False)
    keys = list(dict.fromkeys(zip(spectra.source, spectra.task)))
    for ax, layer in zip(axes[0], layers):
        for i, key in enumerate(keys):
            for scaling, style in (("samples", "-"), ("width", "--")):
                sub = spectra[(spectra.layer == layer) & (spectra.source == key[0])
                              & (spectra.task == key[1]) & (spectra.scaling == scaling)]
                if sub.empty:
                    continue
                ax.plot(sub.position, sub.sigma.clip(lower=1e-6), style,
                        color=plotting.color_for(i), lw=1.2,
                        label=f"{key[0]}, {key[1]}" if scaling == "samples" else None)
        ax.axhline(eps, color="k", lw=0.8, ls=":")
        ax.set_yscale("log")
        ax.set_ylim(1e-6, None)
        ax.set_title(layer)
        ax.set_xlabel("rank / width")
    axes[0][0].set_ylabel("singular value")
    axes[0][-1].legend(fontsize=7, loc="lower left")
    return fig


def plot_changes_over_training(changes: pd.DataFrame):
    """Figure 35 over training: units grown (up) and pruned (down) per evaluation, summed over
    layers and averaged over seeds, one panel per task and one line per DYNO method.
    ``changes`` is :func:`~structlab.growprune.report.evaluation_changes`."""
    tasks, methods = _tasks(changes), _methods(changes)
    fig, axes = plotting.subplots(1, len(tasks), width=4.2 * len(tasks), row_height=3.0,
                                  squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for i, m in enumerate(methods):
            sub = changes[(changes.task == task) & (changes.method == m)]
            per = sub.groupby(["seed", "step"])[["grown", "pruned"]].sum().groupby("step").mean()
            ax.plot(per.index, per.grown, marker="^", ms=3, color=plotting.color_for(i),
                    label=f"{m} grown")
            ax.plot(per.index, -per.pruned, marker="v", ms=3, ls="--",
                    color=plotting.color_for(i), label=f"{m} pruned")
        ax.axhline(0, color="k", lw=0.6)
        ax.set_yscale("symlog", linthresh=1)
        ax.set_title(task)
        ax.set_xlabel("iteration")
    axes[0][0].set_ylabel("units grown (+) / pruned (-) per evaluation")
    axes[0][-1].legend(fontsize=7)
    return fig


def plot_width_sweep(sweep: pd.DataFrame):
    """Static fine-tuning of sources of several widths: test accuracy (mean ± std over seeds)
    against the width factor, one line per task. ``sweep`` has ``task``, ``factor``,
    ``accuracy``."""
    fig, axes = plotting.subplots(1, 1, width=4.5, row_height=3.2, squeeze=False)
    ax = axes[0][0]
    for i, task in enumerate(_tasks(sweep)):
        g = sweep[sweep.task == task].groupby("factor").accuracy
        mean, std = g.mean(), g.std(ddof=1).fillna(0.0)
        ax.errorbar(mean.index, mean, yerr=std, marker=_MARKERS[i], capsize=3,
                    color=plotting.color_for(i), label=task)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("width factor of the source")
    ax.set_ylabel("test accuracy (%)")
    ax.legend(fontsize=8)
    return fig
