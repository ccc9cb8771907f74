"""Genotypes of the DARTS cell search space and the projection :math:`\\Pi_S` onto it
(thesis §5.1, eqs. 13-16).

A DARTS cell has two inputs (the outputs ``c_{k-2}`` and ``c_{k-1}`` of the two previous cells)
and ``steps`` intermediate nodes (4 in DARTS). Node ``i`` may read from every earlier state:
sources ``j = 0, 1`` are the two inputs and ``j >= 2`` is intermediate node ``j - 2``. The edges
are enumerated node by node, ``edge = sum_{k<i} (k + 2) + j`` (:func:`cell_edges`), so a cell of
4 nodes has ``2 + 3 + 4 + 5 = 14`` edges and its architecture weights form a matrix
``alpha [E, P]``, one row per edge and one column per primitive
(:data:`~structlab.darts.operations.PRIMITIVES`).

A *discrete* cell is a point of the set ``S`` of eq. 13, the intersection over nodes ``i`` of

* eq. 14, ``S_i^1``: at most one active operation on each edge into node ``i``;
* eq. 15, ``S_i^2``: exactly two active operations into node ``i`` (hence from two distinct
  sources, by eq. 14);
* eq. 16, ``S_i^3``: every weight is 0 or 1.

:func:`project_cell` is the projection ``Pi_S`` used by DARTS to derive the final architecture
and by DARTS-PRIME's proximity regulariser (eq. 20) and ADMM (eq. 23): for each node it keeps the
two edges from distinct sources whose strongest non-``none`` weight is largest, each with that
single strongest operation, and sets everything else to 0 (``none`` is never selected). Ties go
to the lowest index (edge, then operation), so the projection is deterministic, and it is
idempotent: a point of ``S`` is its own projection.

A :class:`Genotype` is DARTS's readable form of a discrete cell pair: for each node, two
``(operation, source)`` genes, and the list of states concatenated into the cell's output.
:func:`genotype_from_projection` and :func:`genotype_to_weights` convert between the two forms.
:data:`DARTS_V1` and :data:`DARTS_V2` are the cells DARTS published (first- and second-order
search on CIFAR-10; Liu et al. 2019, Fig. 4-5 and ``cnn/genotypes.py`` of github quark0/darts).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

from structlab.darts.operations import CRB_PRIMITIVES, PRIMITIVES

__all__ = [
    "PRIMITIVES",
    "CRB_PRIMITIVES",
    "Genotype",
    "num_edges",
    "cell_edges",
    "project_cell",
    "is_discrete_cell",
    "cell_genes",
    "genes_to_weights",
    "genotype_from_projection",
    "genotype_to_weights",
    "canonical_genotype",
    "count_skip_connects",
    "DARTS_V1",
    "DARTS_V2",
]


class Genotype(NamedTuple):
    """A discrete normal/reduction cell pair, in DARTS's format.

    ``normal`` and ``reduce`` hold two genes ``(operation name, source)`` per intermediate node,
    node by node (``2 * steps`` genes); a source is 0 or 1 for the cell inputs ``c_{k-2}``,
    ``c_{k-1}`` and ``j >= 2`` for intermediate node ``j - 2``. ``normal_concat`` and
    ``reduce_concat`` list the states (same numbering) concatenated into the cell output."""

    normal: list[tuple[str, int]]
    normal_concat: list[int]
    reduce: list[tuple[str, int]]
    reduce_concat: list[int]


def num_edges(steps: int = 4) -> int:
    """Number of edges of a cell with ``steps`` intermediate nodes: ``sum_i (i + 2)``."""
    return steps * (steps + 3) // 2


def cell_edges(steps: int = 4) -> list[tuple[int, int]]:
    """The edges ``(node, source)`` of a cell in the contract's order (row order of alpha):
    node ``i = 0..steps-1``, and for each node its sources ``j = 0..i+1``."""
    return [(i, j) for i in range(steps) for j in range(i + 2)]


def _check(weights: torch.Tensor, primitives: Sequence[str], steps: int) -> None:
    E, P = num_edges(steps), len(primitives)
    if tuple(weights.shape) != (E, P):
        raise ValueError(
            f"expected cell weights of shape [{E}, {P}] ({steps} nodes, {P} primitives), "
            f"got {list(weights.shape)}"
        )


def project_cell(
    weights: torch.Tensor, primitives: Sequence[str] = PRIMITIVES, steps: int = 4
) -> torch.Tensor:
    """``Pi_S`` of eqs. 13-16 for one cell: ``weights [E, P] -> binary [E, P]``.

    For node ``i``, an edge's strength is its largest weight over the operations other than
    ``none`` (DARTS's derivation); the two strongest edges (distinct sources by construction)
    are kept, each with its single strongest non-``none`` operation (eq. 14) set to 1, giving
    exactly two active operations per node (eq. 15) and binary weights (eq. 16). Ties go to the
    lowest edge index, then the lowest operation index. Computed without gradient; the result
    has the dtype (floating) and device of ``weights``. Idempotent on its own output and on every
    point of ``S``."""
    _check(weights, primitives, steps)
    candidates = [k for k, name in enumerate(primitives) if name != "none"]
    if not candidates:
        raise ValueError("the primitives contain no operation other than 'none'")
    w = weights.detach().to("cpu", torch.float64)
    if not torch.isfinite(w).all():
        raise ValueError("cannot project non-finite architecture weights")
    rows = w.tolist()
    # strongest non-none op per edge; min over (-w, k) = largest weight, lowest index on ties
    best = [min(candidates, key=lambda k, r=row: (-r[k], k)) for row in rows]
    strength = [row[k] for row, k in zip(rows, best)]
    out = torch.zeros(w.shape, dtype=torch.float64)
    offset = 0
    for i in range(steps):
        chosen = sorted(range(i + 2), key=lambda j, o=offset: (-strength[o + j], j))[:2]
        for j in chosen:
            out[offset + j, best[offset + j]] = 1.0
        offset += i + 2
    dtype = weights.dtype if weights.is_floating_point() else torch.get_default_dtype()
    return out.to(device=weights.device, dtype=dtype)


def is_discrete_cell(
    weights: torch.Tensor, primitives: Sequence[str] = PRIMITIVES, steps: int = 4
) -> bool:
    """Whether ``weights [E, P]`` lies in ``S`` (eqs. 14-16) with ``none`` inactive: binary,
    at most one active operation per edge, exactly two active edges per node."""
    _check(weights, primitives, steps)
    w = weights.detach().cpu()
    if not bool(((w == 0) | (w == 1)).all()):
        return False
    if "none" in primitives and bool(w[:, list(primitives).index("none")].any()):
        return False
    per_edge = w.sum(dim=1)
    if bool((per_edge > 1).any()):
        return False
    offset = 0
    for i in range(steps):
        if int(per_edge[offset : offset + i + 2].sum()) != 2:
            return False
        offset += i + 2
    return True


def cell_genes(
    weights: torch.Tensor, primitives: Sequence[str] = PRIMITIVES, steps: int = 4
) -> list[tuple[str, int]]:
    """The genes ``(operation, source)`` of a discrete cell ``weights [E, P]`` (a point of
    ``S``, e.g. :func:`project_cell`'s output): node by node, sources in increasing order."""
    if not is_discrete_cell(weights, primitives, steps):
        raise ValueError("weights are not a discrete cell (a point of S, eqs. 13-16)")
    genes = []
    for e, (_, j) in enumerate(cell_edges(steps)):
        row = weights[e]
        if bool(row.any()):
            genes.append((primitives[int(row.argmax())], j))
    return genes


def genes_to_weights(
    genes: Sequence[tuple[str, int]],
    primitives: Sequence[str] = PRIMITIVES,
    steps: int = 4,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Binary ``[E, P]`` encoding of one cell's genes (the inverse of :func:`cell_genes`)."""
    if len(genes) != 2 * steps:
        raise ValueError(f"{steps} nodes need {2 * steps} genes, got {len(genes)}")
    out = torch.zeros(num_edges(steps), len(primitives), device=device, dtype=dtype)
    offset = 0
    for i in range(steps):
        pair = genes[2 * i : 2 * i + 2]
        if pair[0][1] == pair[1][1]:
            raise ValueError(f"node {i} reads twice from source {pair[0][1]}")
        for op, j in pair:
            if not 0 <= j < i + 2:
                raise ValueError(f"node {i} cannot read from source {j}")
            if op == "none" or op not in primitives:
                raise ValueError(f"operation {op!r} is not a selectable primitive here")
            out[offset + j, list(primitives).index(op)] = 1.0
        offset += i + 2
    return out


def genotype_from_projection(
    normal: torch.Tensor,
    reduce: torch.Tensor,
    primitives: Sequence[str] = PRIMITIVES,
    steps: int = 4,
    multiplier: int = 4,
) -> Genotype:
    """The :class:`Genotype` of two projected cells (binary ``[E, P]`` each); the output of a
    cell concatenates its last ``multiplier`` intermediate nodes, as in the supernet. Within a
    node, genes are listed by increasing source (DARTS lists them by strength, which a binary
    projection no longer records; the network they describe is the same)."""
    concat = list(range(2 + steps - multiplier, steps + 2))
    return Genotype(
        normal=cell_genes(normal, primitives, steps),
        normal_concat=concat,
        reduce=cell_genes(reduce, primitives, steps),
        reduce_concat=list(concat),
    )


def genotype_to_weights(
    genotype: Genotype,
    primitives: Sequence[str] = PRIMITIVES,
    steps: int = 4,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Binary ``(normal [E, P], reduce [E, P])`` encodings of a genotype (the inverse of
    :func:`genotype_from_projection`, up to the order of the two genes of a node)."""
    return (
        genes_to_weights(genotype.normal, primitives, steps, device=device, dtype=dtype),
        genes_to_weights(genotype.reduce, primitives, steps, device=device, dtype=dtype),
    )


def canonical_genotype(genotype: Genotype) -> Genotype:
    """The same genotype with each node's two genes ordered by source (the order
    :func:`genotype_from_projection` produces), so that equal cells compare equal."""

    def canon(genes):
        out = []
        for i in range(0, len(genes), 2):
            out.extend(sorted((tuple(g) for g in genes[i : i + 2]), key=lambda g: (g[1], g[0])))
        return out

    return Genotype(
        normal=canon(genotype.normal),
        normal_concat=list(genotype.normal_concat),
        reduce=canon(genotype.reduce),
        reduce_concat=list(genotype.reduce_concat),
    )


def count_skip_connects(genotype: Genotype, cell: str = "normal") -> int:
    """Number of ``skip_connect`` genes in the ``"normal"`` cell (default: the measure of
    DARTS's skip-connection collapse, thesis Fig. 19), the ``"reduce"`` cell or ``"both"``."""
    cells = {"normal": [genotype.normal], "reduce": [genotype.reduce]}
    cells["both"] = cells["normal"] + cells["reduce"]
    if cell not in cells:
        raise ValueError(f"cell must be 'normal', 'reduce' or 'both', got {cell!r}")
    return sum(op == "skip_connect" for genes in cells[cell] for op, _ in genes)


#: DARTS (first order) on CIFAR-10, as published in ``cnn/genotypes.py`` of quark0/darts.
DARTS_V1 = Genotype(
    normal=[
        ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 0),
        ("skip_connect", 0),
        ("sep_conv_3x3", 1),
        ("skip_connect", 0),
        ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 0),
        ("skip_connect", 2),
    ],
    normal_concat=[2, 3, 4, 5],
    reduce=[
        ("max_pool_3x3", 0),
        ("max_pool_3x3", 1),
        ("skip_connect", 2),
        ("max_pool_3x3", 0),
        ("max_pool_3x3", 0),
        ("skip_connect", 2),
        ("skip_connect", 2),
        ("avg_pool_3x3", 0),
    ],
    reduce_concat=[2, 3, 4, 5],
)

#: DARTS (second order) on CIFAR-10 (Liu et al. 2019, Fig. 4-5; ``DARTS = DARTS_V2`` in
#: quark0/darts): 2.76 +- 0.09 % test error with 3.3M parameters at C=36, 20 cells (exactly
#: 3,349,342 parameters without the auxiliary head).
DARTS_V2 = Genotype(
    normal=[
        ("sep_conv_3x3", 0),
        ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 0),
        ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 1),
        ("skip_connect", 0),
        ("skip_connect", 0),
        ("dil_conv_3x3", 2),
    ],
    normal_concat=[2, 3, 4, 5],
    reduce=[
        ("max_pool_3x3", 0),
        ("max_pool_3x3", 1),
        ("skip_connect", 2),
        ("max_pool_3x3", 1),
        ("max_pool_3x3", 0),
        ("skip_connect", 2),
        ("skip_connect", 2),
        ("max_pool_3x3", 1),
    ],
    reduce_concat=[2, 3, 4, 5],
)
