"""Figures of the Noisy Heuristics NAS chapter: the flattening model (Fig. 5), the toy data and
the functions fitted to it (Fig. 6), accuracy and parameters over the search (Fig. 4, 9-10), the
meta-parameters over the search (Fig. 8-10) and the architecture found (Fig. 2, 7)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from matplotlib.ticker import MaxNLocator

from structlab import plotting
from structlab.heuristics.hrn import HRN
from structlab.heuristics.search import history_frame
from structlab.heuristics.stopping import flattening_model, flattening_rate, normalise_curve
from structlab.heuristics.toy import grid_inputs

warnings.filterwarnings("ignore", message="The figure layout has changed to tight")

__all__ = [
    "plot_flattening_models",
    "plot_flattening_fit",
    "plot_toy_data",
    "plot_toy_fit",
    "plot_search_history",
    "plot_params_vs_accuracy",
    "plot_meta_parameters",
    "plot_widths",
    "plot_architecture",
    "plot_depth_over_time",
]

_META = [
    ("neurons_to_add", "neurons to add"),
    ("add_to_remove_ratio", "add-to-remove ratio"),
    ("learning_rate", "learning rate"),
    ("max_epochs", "max. epochs"),
]


def plot_flattening_models(a_values: Sequence[float] = (-20, -10, -5, -2, 0, 2), ax=None):
    """Fig. 5: ``y = exp(a x)(1 - x)`` for several ``a`` (the rule stops below ``a = -5``)."""
    fig, ax = _axes(ax, width=4.2)
    x = np.linspace(0, 1, 200)
    for i, a in enumerate(a_values):
        ax.plot(
            x,
            flattening_model(x, a),
            color=plotting.color_for(i),
            label=f"a = {a:g}",
            ls="--" if a == -5 else "-",
        )
    ax.set_xlabel("normalised step x")
    ax.set_ylabel("normalised loss y")
    ax.legend()
    return fig


def plot_flattening_fit(losses: Sequence[float], ax=None, *, title: str | None = None):
    """A loss curve normalised as the stopping rule sees it, with the fitted model and its
    ``a``."""
    fig, ax = _axes(ax, width=4.2)
    x, y = normalise_curve(losses)
    a = flattening_rate(losses)
    ax.plot(x, y, color=plotting.color_for(0), label="normalised loss")
    if math.isfinite(a):
        ax.plot(
            x,
            flattening_model(x, a),
            color=plotting.color_for(1),
            ls="--",
            label=f"fit, a = {a:.2f}",
        )
    ax.set_xlabel("normalised step x")
    ax.set_ylabel("normalised loss y")
    if title:
        ax.set_title(title)
    ax.legend()
    return fig


def plot_toy_data(spirals, regression):
    """Fig. 6: the two-spiral classification data (left) and the 2D regression data (right)."""
    fig, axes = plotting.subplots(1, 2, width=8.0, row_height=3.6)
    x, y = spirals.inputs.numpy(), spirals.targets.numpy()
    for c in np.unique(y):
        axes[0].scatter(
            x[y == c, 0],
            x[y == c, 1],
            s=6,
            color=plotting.color_for(int(c)),
            label=f"class {int(c)}",
        )
    axes[0].set_aspect("equal")
    axes[0].set_title("two spirals")
    axes[0].legend(loc="upper right")
    xr, yr = regression.inputs.numpy(), regression.targets.numpy().reshape(-1)
    sc = axes[1].scatter(xr[:, 0], xr[:, 1], c=yr, s=10, cmap="viridis")
    axes[1].set_aspect("equal")
    axes[1].set_title("2D regression")
    fig.colorbar(sc, ax=axes[1], shrink=0.8)
    for ax in axes:
        ax.set_xlabel("$x_1$")
        ax.set_ylabel("$x_2$")
        ax.grid(False)
    return fig


@torch.no_grad()
def _predict(model, points: torch.Tensor, device) -> torch.Tensor:
    if device is None:
        device = next(model.parameters()).device
    was = model.training
    model.eval()
    out = torch.cat([model(b.to(device)).cpu() for b in points.split(4096)])
    model.train(was)
    return out


def plot_toy_fit(
    model, data, *, device: str | torch.device | None = None, n: int = 150, title: str | None = None
):
    """The function ``model`` learned on 2D toy ``data``: for classification, the decision
    surface (probability of class 1, or the predicted class) with the data; for regression, the
    fitted surface beside the data's target and the absolute error."""
    extent = float(data.inputs.abs().max()) * 1.05
    x1, x2, pts = grid_inputs(n, extent)
    out = _predict(model, pts, device)
    x, y = data.inputs.numpy(), data.targets.numpy()
    box = (-extent, extent, -extent, extent)
    if data.targets.dtype == torch.int64:
        fig, ax = plotting.subplots(1, 1, width=4.2, row_height=3.8)
        if out.shape[1] == 2:
            z = out.softmax(1)[:, 1].reshape(n, n).numpy()
            im = ax.imshow(z, origin="lower", extent=box, cmap="RdBu_r", vmin=0, vmax=1, alpha=0.8)
            fig.colorbar(im, ax=ax, shrink=0.8, label="P(class 1)")
        else:
            z = out.argmax(1).reshape(n, n).numpy()
            ax.imshow(z, origin="lower", extent=box, cmap="tab10", alpha=0.5)
        for c in np.unique(y):
            ax.scatter(
                x[y == c, 0],
                x[y == c, 1],
                s=5,
                color=plotting.color_for(int(c)),
                edgecolors="white",
                linewidths=0.2,
            )
        acc = float((_predict(model, data.inputs, device).argmax(1) == data.targets).float().mean())
        ax.set_title(title or f"decision surface (accuracy {100 * acc:.1f} %)")
        ax.set_xlabel("$x_1$")
        ax.set_ylabel("$x_2$")
        ax.grid(False)
        return fig
    fig, axes = plotting.subplots(1, 3, width=10.5, row_height=3.3)
    pred = out[:, 0].reshape(n, n).numpy()
    lo, hi = float(y.min()), float(y.max())
    axes[0].scatter(x[:, 0], x[:, 1], c=y.reshape(-1), s=8, cmap="viridis", vmin=lo, vmax=hi)
    axes[0].set_title("data")
    im = axes[1].imshow(pred, origin="lower", extent=box, cmap="viridis", vmin=lo, vmax=hi)
    fig.colorbar(im, ax=axes[1], shrink=0.8)
    axes[1].set_title(title or "fitted function")
    err = _predict(model, data.inputs, device)[:, 0].numpy() - y.reshape(-1)
    sc = axes[2].scatter(x[:, 0], x[:, 1], c=np.abs(err), s=8, cmap="magma")
    fig.colorbar(sc, ax=axes[2], shrink=0.8)
    axes[2].set_title(f"|error| (RMSE {float(np.sqrt(np.mean(err**2))):.3f})")
    for ax in axes:
        ax.set_aspect("equal")
        ax.set_xlabel("$x_1$")
        ax.set_ylabel("$x_2$")
        ax.grid(False)
    return fig


def _axis(frame, x: str) -> tuple[np.ndarray, str]:
    if x == "epochs":
        return frame.cumulative_epochs.to_numpy(), "epochs (training + decay)"
    if x == "iteration":
        return frame.iteration.to_numpy() + 1, "iteration"
    raise ValueError(f"x must be 'iteration' or 'epochs', got {x!r}")


def plot_search_history(
    history: Sequence[Mapping[str, Any]], *, x: str = "epochs", title: str | None = None
):
    """Fig. 4 (right), 9-10 (top): validation accuracy after training (grown) and after the
    shrink phase, and the parameter count (right axis), over the search. For regression the
    validation loss is drawn instead of the accuracy."""
    frame = history_frame(history)
    xs, label = _axis(frame, x)
    fig, ax = plotting.subplots(1, 1, width=6.4, row_height=3.4)
    classify = frame.val_accuracy.notna().any()
    col, name = ("val_accuracy", "accuracy (%)") if classify else ("val_loss", "loss")
    scale = 100 if classify else 1
    ax.plot(
        xs,
        scale * frame[f"{col}_grown"],
        marker="^",
        color=plotting.color_for(0),
        label="after training (grown)",
    )
    ax.plot(
        xs, scale * frame[col], marker="o", color=plotting.color_for(2), label="after shrinking"
    )
    ax.set_xlabel(label)
    ax.set_ylabel(f"validation {name}")
    twin = ax.twinx()
    twin.plot(
        xs, frame.params, color=plotting.color_for(1), ls="--", marker="s", ms=3, label="parameters"
    )
    twin.set_ylabel("parameters", color=plotting.color_for(1))
    twin.grid(False)
    twin.spines["right"].set_visible(True)
    lines = ax.get_legend_handles_labels()
    more = twin.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], loc="lower right")
    if title:
        ax.set_title(title)
    return fig


def plot_params_vs_accuracy(
    runs: Mapping[str, Sequence[Mapping[str, Any]]],
    *,
    baselines: Mapping[str, tuple[float, float]] | None = None,
    ax=None,
):
    """Fig. 4 (left, centre): validation accuracy against parameters, one path per search
    (label -> history) and one star per fixed baseline (label -> ``(params, accuracy)``)."""
    fig, ax = _axes(ax, width=5.0)
    for i, (label, history) in enumerate(runs.items()):
        frame = history_frame(history)
        ax.plot(
            frame.params,
            100 * frame.val_accuracy,
            marker="o",
            ms=3,
            alpha=0.8,
            color=plotting.color_for(i),
            label=label,
        )
    for label, (params, acc) in (baselines or {}).items():
        ax.scatter([params], [100 * acc], marker="*", s=90, color="black", zorder=3)
        ax.annotate(
            label, (params, 100 * acc), fontsize=7, xytext=(3, 3), textcoords="offset points"
        )
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel("validation accuracy (%)")
    ax.legend()
    return fig


def plot_meta_parameters(history: Sequence[Mapping[str, Any]], *, x: str = "epochs"):
    """Fig. 8: the four meta-parameters over the search (step plots)."""
    frame = history_frame(history)
    xs, label = _axis(frame, x)
    fig, axes = plotting.subplots(1, 4, width=11.0, row_height=2.4)
    for i, (ax, (key, name)) in enumerate(zip(axes, _META)):
        ax.step(
            xs, frame[f"meta_{key}"], where="pre", color=plotting.color_for(i), marker="o", ms=3
        )
        ax.set_title(name)
        ax.set_xlabel(label)
        if key == "learning_rate":
            ax.set_yscale("log")
    return fig


def plot_widths(history: Sequence[Mapping[str, Any]], *, x: str = "iteration"):
    """Hidden neurons per nesting level (0: branches of the body and head connections) and
    the depth of the network over the search."""
    frame = history_frame(history)
    xs, label = _axis(frame, x)
    levels: dict[int, list[int]] = {}
    for k, r in enumerate(history):
        for path, w in r["widths"].items():
            lv = path.count("residual") - 1
            levels.setdefault(lv, [0] * len(history))[k] += w
    fig, axes = plotting.subplots(1, 2, width=9.0, row_height=3.0)
    keys = sorted(levels)
    if keys:
        axes[0].stackplot(
            xs,
            *[levels[k] for k in keys],
            labels=[f"level {k}" for k in keys],
            colors=[plotting.color_for(k) for k in keys],
            alpha=0.85,
        )
        axes[0].legend(loc="upper left")
    axes[0].set_xlabel(label)
    axes[0].set_ylabel("hidden neurons")
    axes[1].plot(xs, frame.depth, marker="o", color=plotting.color_for(0))
    axes[1].set_xlabel(label)
    axes[1].set_ylabel("depth (layers)")
    axes[1].yaxis.set_major_locator(MaxNLocator(integer=True))
    return fig


def _spec_of(model: HRN | Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(model, HRN):
        return model.spec()
    if isinstance(model, Mapping) and "body" in model:
        return model
    if isinstance(model, Mapping) and "spec" in model:  # a snapshot or a record
        return model["spec"]
    raise ValueError("plot_architecture needs an HRN, a spec, a snapshot or a search record")


def plot_architecture(
    model: HRN | Mapping[str, Any], ax=None, *, title: str | None = None, bend: float = 0.42
):
    """Fig. 2 / 7: the network drawn as its hierarchy. Every connection is a straight line (its
    linear shortcut ``W``); a residual branch is a detour through a node (its hidden layer,
    labelled with its width) above the line, whose two halves (``f_1``, ``f_2``) are drawn the
    same way, recursively. Line colour gives the nesting level.

    ``model``: an :class:`HRN`, its :meth:`~HRN.spec`, a snapshot or a search record (the
    records of :func:`~structlab.heuristics.heuristic_search` hold the spec).
    """
    spec = _spec_of(model)
    chain = list(spec["body"]) + ([spec["head"]] if spec["head"] is not None else [])
    fig, ax = _axes(ax, width=max(5.0, 2.6 * len(chain)), height=3.2)
    xs = np.arange(len(chain) + 1, dtype=float)
    widest = [1]

    def widths(s):
        if s["residual"] is not None:
            widest[0] = max(widest[0], s["residual"]["f1"]["out"])
            widths(s["residual"]["f1"])
            widths(s["residual"]["f2"])

    for s in chain:
        widths(s)

    def draw(s, p: np.ndarray, q: np.ndarray, level: int) -> None:
        color = plotting.color_for(level)
        ax.plot(*zip(p, q), color=color, lw=max(0.6, 2.2 - 0.4 * level), zorder=1)
        if s["residual"] is None:
            return
        d = q - p
        normal = np.array([-d[1], d[0]])
        node = (p + q) / 2 + bend * normal
        draw(s["residual"]["f1"], p, node, level + 1)
        draw(s["residual"]["f2"], node, q, level + 1)
        w = s["residual"]["f1"]["out"]
        size = 30 + 170 * math.sqrt(w / widest[0])
        ax.scatter(*node, s=size, color="white", edgecolors=color, linewidths=1.2, zorder=3)
        ax.annotate(str(w), node, fontsize=max(5, 8 - level), ha="center", va="center", zorder=4)

    for i, s in enumerate(chain):
        p, q = np.array([xs[i], 0.0]), np.array([xs[i + 1], 0.0])
        draw(s, p, q, 0)
        is_head = spec["head"] is not None and i == len(chain) - 1
        stride = f" /{s['stride']}" if s.get("stride", 1) > 1 else ""
        ax.annotate(
            f"{'head ' if is_head else ''}{s['in']}→{s['out']}{stride}",
            ((xs[i] + xs[i + 1]) / 2, 0),
            xytext=(0, -12),
            textcoords="offset points",
            ha="center",
            fontsize=7,
        )
    ax.scatter(xs, np.zeros_like(xs), s=25, color="black", zorder=3)
    ax.set_aspect("equal")
    ax.set_axis_off()
    depth = _depth(spec)
    ax.set_title(title or f"depth {depth}, {_hidden(spec)} hidden units", fontsize=9)
    return fig


def _conn_depth(s) -> int:
    if s["residual"] is None:
        return 1
    return _conn_depth(s["residual"]["f1"]) + _conn_depth(s["residual"]["f2"])


def _depth(spec) -> int:
    chain = list(spec["body"]) + ([spec["head"]] if spec["head"] is not None else [])
    return sum(_conn_depth(s) for s in chain)


def _hidden(spec) -> int:
    def h(s):
        if s["residual"] is None:
            return 0
        r = s["residual"]
        return r["f1"]["out"] + h(r["f1"]) + h(r["f2"])

    chain = list(spec["body"]) + ([spec["head"]] if spec["head"] is not None else [])
    return sum(h(s) for s in chain)


def _axes(ax, *, width: float = 5.0, height: float = 3.2):
    if ax is not None:
        return ax.figure, ax
    fig, ax = plotting.subplots(1, 1, width=width, row_height=height)
    return fig, ax


def plot_depth_over_time(
    runs: Mapping[str, Sequence[Mapping[str, Any]]],
    events: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
):
    """Fig. 9 (top right): depth and parameters after every iteration of one or more searches
    (label -> the ``rows`` of :class:`~structlab.heuristics.book.DepthLog`), with a tick for each
    layer addition (up) and removal (down) when ``events`` are given."""
    fig, axes = plotting.subplots(1, 2, width=8.4, row_height=3.0)
    for i, (label, rows) in enumerate(runs.items()):
        its = [r["iteration"] + 1 for r in rows]
        color = plotting.color_for(i)
        axes[0].plot(its, [r["depth"] for r in rows], marker="o", ms=3, color=color, label=label)
        axes[1].plot(its, [r["params"] for r in rows], marker="o", ms=3, color=color, label=label)
        for e in (events or {}).get(label, []):
            y = next(r["depth"] for r in rows if r["iteration"] == e["iteration"])
            axes[0].scatter([e["iteration"] + 1], [y], marker="^" if e["event"] == "added" else "v",
                            s=28, color=color, zorder=3)
    axes[0].set_xlabel("iteration")
    axes[0].set_ylabel("depth (layers on the longest path)")
    axes[0].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[1].set_xlabel("iteration")
    axes[1].set_ylabel("parameters")
    axes[1].set_yscale("log")
    axes[1].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].legend(fontsize=7)
    return fig
