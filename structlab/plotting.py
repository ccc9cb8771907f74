"""One plotting style for the whole book, and the few plots every chapter needs.

Call :func:`use_style` once at the top of a notebook; :func:`subplots` returns a figure sized for
the book's column; :func:`plot_histories` draws learning curves of several runs side by side.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np

__all__ = ["PALETTE", "use_style", "subplots", "plot_histories", "show_images", "color_for",
           "imshow"]

# Colour-blind safe (Okabe & Ito), in a fixed order so the same method keeps its colour.
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442",
           "#000000"]

_STYLE: dict[str, Any] = {
    "figure.dpi": 100,
    "savefig.dpi": 150,
    "figure.figsize": (6.4, 3.6),
    "figure.constrained_layout.use": True,
    "axes.prop_cycle": mpl.cycler(color=PALETTE),
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "lines.linewidth": 1.6,
    "lines.markersize": 4,
    "image.cmap": "viridis",
}


def use_style() -> None:
    """Apply the book's matplotlib style (idempotent)."""
    mpl.rcParams.update(_STYLE)


def color_for(index: int) -> str:
    """The palette's colour for the ``index``-th method (wraps around)."""
    return PALETTE[index % len(PALETTE)]


def subplots(
    nrows: int = 1, ncols: int = 1, *, width: float = 6.4, row_height: float = 3.0,
    **kwargs: Any
) -> tuple[plt.Figure, Any]:
    """``plt.subplots`` with the book's style and a size that fits the page width."""
    use_style()
    return plt.subplots(nrows, ncols, figsize=(width, row_height * nrows), **kwargs)


def plot_histories(
    histories: Mapping[str, Any],
    *,
    metrics: Sequence[str] = ("train_loss", "val_acc"),
    labels: Mapping[str, str] | None = None,
) -> plt.Figure:
    """Learning curves: one panel per metric, one line per run.

    Args:
        histories: run name -> :class:`structlab.training.History`.
        metrics: attributes of ``History`` to draw (``*_acc`` are shown in percent).
        labels: optional axis labels per metric.
    """
    labels = dict(labels or {})
    fig, axes = subplots(1, len(metrics), width=3.4 * len(metrics))
    axes = np.atleast_1d(axes)
    for ax, metric in zip(axes, metrics):
        for i, (name, history) in enumerate(histories.items()):
            values = np.asarray(getattr(history, metric), dtype=float)
            if values.size == 0:
                continue
            if metric.endswith("_acc"):
                values = 100 * values
            ax.plot(np.arange(1, values.size + 1), values, marker="o", label=name,
                    color=color_for(i))
        ax.set_xlabel("epoch")
        default = metric.replace("_", " ") + (" (%)" if metric.endswith("_acc") else "")
        ax.set_ylabel(labels.get(metric, default))
    axes[0].legend()
    return fig


def show_images(
    images: Any, *, titles: Sequence[str] | None = None, ncols: int = 8, size: float = 0.9,
    cmap: str = "gray", suptitle: str | None = None,
) -> plt.Figure:
    """A grid of images given as an (N, C, H, W) or (N, H, W) tensor/array with values in [0, 1]."""
    arr = np.asarray(images.detach().cpu() if hasattr(images, "detach") else images)
    if arr.ndim == 4:
        arr = arr.transpose(0, 2, 3, 1)
        if arr.shape[-1] == 1:
            arr = arr[..., 0]
    n = arr.shape[0]
    nrows = int(np.ceil(n / ncols))
    use_style()
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + 0.3),
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(arr[i], cmap=cmap, vmin=0.0, vmax=1.0)
            if titles is not None:
                ax.set_title(titles[i], fontsize=7)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    return fig


def imshow(ax: Any, image: Any, *, cmap: str = "gray", title: str | None = None,
           ylabel: str | None = None) -> None:
    """Draw one image (C, H, W) or (H, W) in [0, 1] on ``ax`` without ticks or grid."""
    arr = np.asarray(image.detach().cpu() if hasattr(image, "detach") else image)
    if arr.ndim == 3:
        arr = arr.transpose(1, 2, 0)
        if arr.shape[-1] == 1:
            arr = arr[..., 0]
    ax.imshow(arr, cmap=cmap, vmin=0.0, vmax=1.0)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    if title is not None:
        ax.set_title(title, fontsize=7)
    if ylabel is not None:
        ax.set_ylabel(ylabel, fontsize=7)
