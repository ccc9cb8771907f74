"""The survey corpus of thesis chapter 3 (§3.2.2, Table 1) as a data frame.

``corpus.csv`` holds Table 1 of the thesis row by row: the reference as printed (author names and
the citation number of the thesis's reference list), the publication year taken from that
reference list, the title, and the 17 marks of the table as 0/1 columns, grouped by prefix:
``op_`` (operator type), ``unit_`` (unit type), ``layer_`` (layer type) and ``task_`` (task), in
the table's column order.

Two caveats of the source. (1) The text speaks of 59 collected papers, but Table 1 as extracted
from the thesis lists 55 rows; the file holds these 55 and nothing invented. (2) Table 2's marks
were lost in the extraction (every row carries a single mark in its last column), so it is not
used. The layer and task columns are kept exactly as extracted, but their alignment is doubtful
("Dense" and "Supervised learning" are marked for every paper, "Continual" for 44 of 55), so the
chapter draws its figures from the operator and unit columns only, which read consistently.
"""

from __future__ import annotations

from importlib import resources
from itertools import combinations

import pandas as pd

__all__ = [
    "OPERATORS",
    "UNIT_TYPES",
    "LAYER_TYPES",
    "TASKS",
    "load_corpus",
    "co_occurrence",
    "counts_by_period",
]

#: Column name -> label in the thesis, per group, in Table 1's order.
OPERATORS = {
    "op_neural_creation": "Neural creation",
    "op_synaptogenesis": "Synaptogenesis",
    "op_neural_pruning": "Neural pruning",
    "op_synaptic_pruning": "Synaptic pruning",
}
UNIT_TYPES = {
    "unit_neuron": "Neuron",
    "unit_kernel_shape": "Kernel shape",
    "unit_filter_channel": "Filter/channel",
    "unit_layers": "Layer(s)",
}
LAYER_TYPES = {
    "layer_dense": "Dense",
    "layer_conv_pooling": "Conv/pooling",
    "layer_recurrent": "Recurrent",
}
TASKS = {
    "task_multi_task": "Multi-task",
    "task_continual": "Continual",
    "task_image_classification": "Image classification",
    "task_other_computer_vision": "Other computer vision",
    "task_nlp_sequence": "NLP/sequence",
    "task_supervised_learning": "Supervised learning",
}


def load_corpus() -> pd.DataFrame:
    """Table 1 of the thesis: one row per paper, mark columns as ``bool``."""
    with resources.files("structlab.operators").joinpath("corpus.csv").open(encoding="utf-8") as f:
        df = pd.read_csv(f)
    for col in (*OPERATORS, *UNIT_TYPES, *LAYER_TYPES, *TASKS):
        df[col] = df[col].astype(bool)
    return df


def co_occurrence(df: pd.DataFrame, columns: dict[str, str]) -> pd.DataFrame:
    """Number of papers marked with both ``a`` and ``b`` for every pair of ``columns``
    (the diagonal counts papers marked with that column *alone* among ``columns``, as in the
    "single operator" bars of thesis Fig. 3b/3d)."""
    names = list(columns)
    out = pd.DataFrame(0, index=[columns[c] for c in names], columns=[columns[c] for c in names])
    marks = df[names]
    single = marks.sum(axis=1) == 1
    for c in names:
        out.loc[columns[c], columns[c]] = int((marks[c] & single).sum())
    for a, b in combinations(names, 2):
        n = int((marks[a] & marks[b]).sum())
        out.loc[columns[a], columns[b]] = n
        out.loc[columns[b], columns[a]] = n
    return out


def counts_by_period(
    df: pd.DataFrame, columns: dict[str, str], bins: list[int] | None = None
) -> pd.DataFrame:
    """Papers per column and publication period (thesis Fig. 3a/3c); ``bins`` are the left
    edges of the periods (default 1985, 2000, 2010, 2015, 2018, 2020), the last period open."""
    bins = bins or [1985, 2000, 2010, 2015, 2018, 2020]
    edges = [*bins, 10_000]
    labels = [f"{a}-{b - 1}" if b < 10_000 else f"{a}-" for a, b in zip(edges[:-1], edges[1:])]
    period = pd.cut(df["year"], edges, right=False, labels=labels)
    table = df[list(columns)].groupby(period, observed=False).sum()
    return table.rename(columns=columns)
