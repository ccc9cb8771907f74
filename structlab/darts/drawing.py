"""Drawing a DARTS cell (the graphs of thesis Fig. 18c-d and Liu et al. 2019, Fig. 4-5) with
matplotlib alone.

A cell is a small DAG: the inputs ``c_{k-2}`` and ``c_{k-1}`` on the left, the intermediate
nodes ``0 .. steps-1`` in the middle, the output ``c_{k}`` on the right. Each gene
``(operation, source)`` of node ``i`` is an arrow from its source to node ``i`` labelled with the
operation; the nodes concatenated into the output get an unlabelled arrow to ``c_{k}``. The
layout is fixed (it depends only on ``steps``): inputs at heights ``+-1.5``, node ``i`` at
``x = 2.2 (i + 1)`` alternating above and below the axis, an arrow that jumps over nodes bent
away from them. Colours follow DARTS's ``visualize.py`` (green inputs,
blue nodes, yellow output).

Every arrow is a :class:`matplotlib.patches.FancyArrowPatch` added to the axes, with
``gid = "edge:{node}:{source}"`` for a gene and ``gid = "concat:{node}"`` for an output arrow, so
that a figure can be inspected (or tested) without reading pixels.
"""

from __future__ import annotations

from structlab.darts.genotypes import Genotype

__all__ = ["cell_layout", "draw_genotype"]

_DX = 2.2  # horizontal distance between consecutive states
_COLOURS = {"input": "#b4eeb4", "node": "#add8e6", "output": "#eee8aa"}


def cell_layout(steps: int = 4) -> dict[str | int, tuple[float, float]]:
    """Positions of the states of a cell: keys ``"c_{k-2}"``, ``"c_{k-1}"``, ``0..steps-1``
    and ``"c_{k}"``."""
    pos: dict[str | int, tuple[float, float]] = {"c_{k-2}": (0.0, 1.5), "c_{k-1}": (0.0, -1.5)}
    for i in range(steps):
        pos[i] = (_DX * (i + 1), 0.8 if i % 2 == 0 else -0.8)
    pos["c_{k}"] = (_DX * (steps + 1), 0.0)
    return pos


def draw_genotype(genotype: Genotype, kind: str = "normal", ax=None, *, title: str | None = None):
    """Draw the ``"normal"`` or ``"reduce"`` cell of ``genotype`` on ``ax`` (a new figure when
    ``None``); return the Axes."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch

    if kind not in ("normal", "reduce"):
        raise ValueError(f"kind must be 'normal' or 'reduce', got {kind!r}")
    genes = genotype.normal if kind == "normal" else genotype.reduce
    concat = genotype.normal_concat if kind == "normal" else genotype.reduce_concat
    steps = len(genes) // 2
    if ax is None:
        _, ax = plt.subplots(figsize=(1.3 * (steps + 2) + 1, 4))
    pos = cell_layout(steps)
    names = {0: "c_{k-2}", 1: "c_{k-1}"}

    def key(state: int):
        return names.get(state, state - 2)

    def label(k) -> str:
        return f"${k}$" if isinstance(k, str) else str(k)

    for k in pos:
        kind_of = "node" if isinstance(k, int) else ("output" if k == "c_{k}" else "input")
        x, y = pos[k]
        ax.text(
            x,
            y,
            label(k),
            ha="center",
            va="center",
            fontsize=10,
            zorder=5,
            bbox={"boxstyle": "round,pad=0.4", "fc": _COLOURS[kind_of], "ec": "0.3"},
        )

    def arrow(src, dst, gid, rad=0.0, colour="0.2"):
        patch = FancyArrowPatch(
            pos[src],
            pos[dst],
            arrowstyle="-|>",
            mutation_scale=12,
            shrinkA=14,
            shrinkB=14,
            connectionstyle=f"arc3,rad={rad}",
            color=colour,
            lw=1.2,
            zorder=2,
        )
        patch.set_gid(gid)
        ax.add_patch(patch)
        return patch

    for n, (op, source) in enumerate(genes):
        i = n // 2
        src, dst = key(source), i
        (x0, y0), (x1, y1) = pos[src], pos[dst]
        # an arrow that jumps over intermediate nodes bends away from them: upwards (rad < 0
        # for a left-to-right arrow) when they lie below its chord on the whole, else downwards
        passed = [pos[k] for k in range(steps) if x0 + 1e-9 < pos[k][0] < x1 - 1e-9]
        side = sum(y - (y0 + (y1 - y0) * (x - x0) / (x1 - x0)) for x, y in passed)
        rad = 0.0 if not passed else (-0.3 if side <= 0 else 0.3)
        arrow(src, dst, f"edge:{i}:{source}", rad)
        # the label sits at 45 % of the way (labels of arrows meeting at a node stay apart), on
        # the bent arrow: arc3's control point is offset from the chord by rad * (dy, -dx) and
        # the curve passes about halfway to it
        xm, ym = x0 + 0.45 * (x1 - x0), y0 + 0.45 * (y1 - y0)
        ox, oy = (y1 - y0) * rad / 2, -(x1 - x0) * rad / 2
        ax.text(
            xm + ox,
            ym + oy,
            op,
            ha="center",
            va="center",
            fontsize=7,
            zorder=4,
            bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8},
        )
    for state in concat:
        arrow(key(state), "c_{k}", f"concat:{state - 2}", colour="0.55")

    xs = [p[0] for p in pos.values()]
    ax.set_xlim(min(xs) - 0.8, max(xs) + 0.8)
    ax.set_ylim(-2.8, 2.6)
    ax.set_aspect("auto")
    ax.axis("off")
    ax.set_title(title if title is not None else f"{kind} cell")
    return ax
