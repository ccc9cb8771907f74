"""Figures of the "Neural operators" chapter: the four operators on a small network, the toy
landscape of thesis Fig. 5, the corpus statistics of thesis Fig. 3 and generic result curves."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from structlab import plotting
from structlab.models import MLP
from structlab.operators.corpus import OPERATORS, UNIT_TYPES, co_occurrence, counts_by_period
from structlab.operators.landscape import ToyLandscape, descend
from structlab.operators.masks import get_mask, prune_unstructured, regrow_connections
from structlab.operators.units import add_units, remove_units

__all__ = [
    "draw_network",
    "plot_operators",
    "plot_landscape",
    "plot_corpus",
    "plot_curves",
]

NEW = "#D55E00"  # created units / connections
GONE = "#BBBBBB"  # removed units / pruned connections
BASE = "#0072B2"


def _layers(model: MLP) -> list[tuple[np.ndarray, np.ndarray]]:
    """(effective weight, mask) of every layer of an MLP, as arrays."""
    out = []
    for layer in model.layers:
        w = layer.weight.detach().cpu().numpy()
        out.append((w, get_mask(layer).detach().cpu().numpy()))
    return out


def draw_network(
    ax: Any,
    model: MLP,
    *,
    title: str = "",
    unit_colors: dict[tuple[int, int], str] | None = None,
    edge_styles: dict[tuple[int, int, int], dict] | None = None,
    extra_units: Sequence[tuple[int, int, int]] = (),
) -> None:
    """Draw a small MLP as a graph: one column of units per layer, one line per connection.

    Active connections are drawn with a width proportional to ``|w|`` (dashed when ``w = 0``);
    masked connections are not drawn unless ``edge_styles`` names them. ``unit_colors`` keys are
    ``(layer, unit)`` with layer 0 the input; ``edge_styles`` keys are ``(layer, out, in)`` for the
    weight of ``model.layers[layer]``. ``extra_units`` ``(layer, index, n_total)`` places ghost
    units (e.g. removed ones) that are no longer in the model.
    """
    unit_colors = unit_colors or {}
    edge_styles = edge_styles or {}
    layers = _layers(model)
    sizes = [layers[0][0].shape[1]] + [w.shape[0] for w, _ in layers]
    ghosts: dict[int, int] = {}
    for layer, _, total in extra_units:
        ghosts[layer] = max(ghosts.get(layer, 0), total)
    sizes = [max(s, ghosts.get(i, 0)) for i, s in enumerate(sizes)]

    def pos(layer: int, unit: int) -> tuple[float, float]:
        n = sizes[layer]
        return float(layer), (unit - (n - 1) / 2) * 0.8

    wmax = max(float(np.abs(w).max()) for w, _ in layers) or 1.0
    for li, (w, mask) in enumerate(layers):
        for o in range(w.shape[0]):
            for i in range(w.shape[1]):
                style = edge_styles.get((li, o, i))
                if style is None and not mask[o, i]:
                    continue
                x0, y0 = pos(li, i)
                x1, y1 = pos(li + 1, o)
                kw = dict(color=BASE, lw=0.3 + 2.2 * abs(w[o, i]) / wmax, alpha=0.7,
                          ls="--" if w[o, i] == 0 else "-")
                if w[o, i] == 0:
                    kw["lw"] = 0.8
                kw.update(style or {})
                ax.plot([x0, x1], [y0, y1], zorder=1, **kw)
    for layer, n in enumerate(sizes):
        real = [layers[0][0].shape[1]] + [w.shape[0] for w, _ in layers]
        for u in range(n):
            if u >= real[layer] and not any(
                g[0] == layer and g[1] == u for g in extra_units
            ):
                continue
            color = unit_colors.get((layer, u), "white")
            x, y = pos(layer, u)
            ax.scatter([x], [y], s=140, c=color, edgecolors="black", linewidths=1.0, zorder=3)
    ax.set_title(title, fontsize=9)
    ax.set_xlim(-0.4, len(sizes) - 0.6)
    ax.set_axis_off()


def plot_operators(seed: int = 0) -> plt.Figure:
    """The four neural operators (thesis §3.1) applied by the library to a 3-4-4-2 MLP.

    (a) the network; (b) neuron creation: a unit added to the first hidden layer with default
    fan-in and zero fan-out (dashed), so the function is unchanged; (c) neuron removal of a unit
    of the second hidden layer with all its connections (grey); (d) synaptic pruning of 30% of
    the connections of each layer by magnitude (grey); (e) synaptogenesis: three dormant
    connections of (d) activated again (orange).
    """
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = MLP(3, [4, 4], 2)
    fig, axes = plotting.subplots(1, 5, width=10.0, row_height=2.6)
    draw_network(axes[0], model, title="(a) network")

    grown = MLP(3, [4, 4], 2)
    grown.load_state_dict(model.state_dict())
    add_units(grown, "hidden0", 1, generator=gen)
    styles = {(0, 4, i): dict(color=NEW) for i in range(3)}
    styles.update({(1, o, 4): dict(color=NEW, ls="--", lw=1.0) for o in range(4)})
    draw_network(axes[1], grown, title="(b) neuron creation", unit_colors={(1, 4): NEW},
                 edge_styles=styles)

    shrunk = MLP(3, [4, 4], 2)
    shrunk.load_state_dict(model.state_dict())
    remove_units(shrunk, "hidden1", [1])
    # drawn on the network before removal, the removed unit and its connections in grey
    styles = {(1, 1, i): dict(color=GONE, lw=1.0, ls=":") for i in range(4)}
    styles.update({(2, o, 1): dict(color=GONE, lw=1.0, ls=":") for o in range(2)})
    draw_network(axes[2], model, unit_colors={(2, 1): GONE}, edge_styles=styles,
                 title=f"(c) neuron removal ({model.layers[1].out_features} -> "
                 f"{shrunk.layers[1].out_features})")

    pruned = MLP(3, [4, 4], 2)
    pruned.load_state_dict(model.state_dict())
    prune_unstructured(pruned, 0.3)
    dormant = {(li, o, i) for li, layer in enumerate(pruned.layers)
               for o, i in zip(*np.nonzero(get_mask(layer).numpy() == 0))}
    styles = {e: dict(color=GONE, lw=0.8, ls=":") for e in dormant}
    draw_network(axes[3], pruned, title="(d) synaptic pruning", edge_styles=styles)

    before = {(li, o, i) for li, layer in enumerate(pruned.layers)
              for o, i in zip(*np.nonzero(get_mask(layer).numpy() == 0))}
    regrow_connections(pruned, 3, method="random", init="default", generator=gen)
    after = {(li, o, i) for li, layer in enumerate(pruned.layers)
             for o, i in zip(*np.nonzero(get_mask(layer).numpy() == 0))}
    styles = {e: dict(color=NEW, lw=1.8) for e in before - after}
    draw_network(axes[4], pruned, title="(e) synaptogenesis", edge_styles=styles)
    return fig


def plot_landscape(
    landscape: ToyLandscape | None = None,
    *,
    steps: int = 2000,
    lr: float = 0.1,
    prune_early: int = 10,
    prune_late: int = 300,
    noise: float = 0.0,
    seed: int = 0,
) -> plt.Figure:
    """Thesis Fig. 5 with :mod:`structlab.operators.landscape`: (a) descent on the line ``w2 = 0``
    from the local minimum ``s1`` (and from ``s2``) stays there; (b) with the second parameter
    created at 0, descent from ``s1`` and ``s2`` reaches the global minimum; (c) pruning ``w2``
    after ``prune_early`` steps traps descent in ``s1`` again, after ``prune_late`` it does not."""
    land = landscape or ToyLandscape()
    minima = land.line_minima()
    s1 = float(minima[-1])
    s2 = 1.8
    g = land.global_minimum
    fig, axes = plotting.subplots(1, 3, width=10.0, row_height=3.2)
    xs = np.linspace(-2.2, 2.4, 400)
    ax = axes[0]
    ax.plot(xs, land.loss(xs, 0.0), color="black", lw=1.2)
    for start, color in [(s1, plotting.color_for(0)), (s2, plotting.color_for(1))]:
        path = descend(land, (start, 0.0), steps=steps, lr=lr, two_d_from=None, noise=noise,
                       seed=seed)
        ax.plot(path[::20, 0], land.loss(path[::20, 0], 0.0), "o", color=color, ms=3,
                label=f"from w1 = {start:.2f}")
    ax.set_xlabel("w1")
    ax.set_ylabel("L(w1, 0)")
    ax.set_title("(a) one parameter: trapped in s1")
    ax.legend()
    w1, w2 = np.meshgrid(np.linspace(-2.2, 2.4, 200), np.linspace(-1.0, 2.6, 200))
    z = land.loss(w1, w2)
    levels = np.quantile(z, np.linspace(0, 0.9, 25))
    for ax, title in [(axes[1], "(b) creation of w2: escape"),
                      (axes[2], "(c) pruning w2 early vs late")]:
        ax.contour(w1, w2, z, levels=levels, colors="grey", linewidths=0.5)
        ax.plot(*g, "*", color="black", ms=10)
        ax.plot([s1], [0.0], "s", color="black", ms=5)
        ax.set_xlabel("w1")
        ax.set_ylabel("w2")
        ax.set_title(title)
    for start, color in [(s1, plotting.color_for(0)), (s2, plotting.color_for(1))]:
        path = descend(land, (start, 0.0), steps=steps, lr=lr, noise=noise, seed=seed)
        axes[1].plot(path[:, 0], path[:, 1], color=color, label=f"from ({start:.2f}, 0)")
    axes[1].legend(loc="upper right")
    for at, color in [(prune_early, plotting.color_for(3)), (prune_late, plotting.color_for(2))]:
        path = descend(land, (s1, 0.0), steps=steps, lr=lr, prune_at=at, noise=noise, seed=seed)
        axes[2].plot(path[:, 0], path[:, 1], color=color, label=f"pruned at step {at}")
        axes[2].plot(path[-1, 0], path[-1, 1], "o", color=color)
    axes[2].legend(loc="upper right")
    return fig


def plot_corpus(df: pd.DataFrame, bins: list[int] | None = None) -> plt.Figure:
    """Thesis Fig. 3 from the corpus: (a) operators and (c) unit types per publication period,
    (b) and (d) their co-occurrence (off-diagonal: papers with both; diagonal: papers with only
    that one)."""
    fig, axes = plotting.subplots(2, 2, width=9.0, row_height=3.2)
    for row, (columns, what) in enumerate([(OPERATORS, "operator"), (UNIT_TYPES, "unit type")]):
        counts = counts_by_period(df, columns, bins)
        ax = axes[row, 0]
        x = np.arange(len(counts))
        width = 0.8 / len(columns)
        for j, label in enumerate(counts.columns):
            ax.bar(x + (j - (len(columns) - 1) / 2) * width, counts[label], width,
                   label=label, color=plotting.color_for(j))
        ax.set_xticks(x, counts.index, rotation=30)
        ax.set_ylabel("papers")
        ax.set_title(f"({'ac'[row]}) {what} over time")
        ax.legend()
        co = co_occurrence(df, columns)
        ax = axes[row, 1]
        ax.imshow(co.values, cmap="Blues")
        ax.grid(False)
        ax.set_xticks(range(len(co)), co.columns, rotation=30, ha="right")
        ax.set_yticks(range(len(co)), co.index)
        vmax = co.values.max()
        for i in range(len(co)):
            for j in range(len(co)):
                v = int(co.values[i, j])
                ax.text(j, i, str(v), ha="center", va="center",
                        color="white" if v > vmax / 2 else "black", fontsize=8)
        ax.set_title(f"({'bd'[row]}) {what} co-occurrence")
    return fig


def plot_curves(
    ax: Any,
    df: pd.DataFrame,
    x: str,
    y: str,
    hue: str,
    *,
    style: str | None = None,
    percent: bool = True,
) -> None:
    """One line per value of ``hue`` (and line style per value of ``style``) of ``y`` against
    ``x``; accuracies shown in percent."""
    hues = list(dict.fromkeys(df[hue]))
    styles = list(dict.fromkeys(df[style])) if style else [None]
    dashes = ["-", "--", ":", "-."]
    for i, h in enumerate(hues):
        for j, s in enumerate(styles):
            sub = df[(df[hue] == h) & ((df[style] == s) if style else True)].sort_values(x)
            if sub.empty:
                continue
            label = f"{h}" if style is None else f"{h}, {s}"
            ax.plot(sub[x], sub[y] * (100 if percent else 1), marker="o", ls=dashes[j % 4],
                    color=plotting.color_for(i), label=label)
    ax.set_xlabel(x.replace("_", " "))
    ax.set_ylabel(y.replace("_", " ") + (" (%)" if percent else ""))
    ax.legend()
