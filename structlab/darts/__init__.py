"""Differentiable architecture search improved as a constrained bilevel problem: DARTS-PRIME
(thesis chapter 5).

DARTS relaxes the choice of one operation per edge of a cell into a softmax mixture weighted by
architecture parameters ``alpha`` and trains ``alpha`` by gradient descent on validation data
while the operations' weights ``w`` train on training data (eq. 17). DARTS-PRIME changes *when*
and *towards what* ``alpha`` moves:

* **schedules** (:mod:`~structlab.darts.schedules`): DARTS alternates one w-step and one
  alpha step; CS10 takes one alpha step per 10 w-steps; FIMT (Algorithm 3) takes one when a
  moving average of the Fisher information trace of the w-gradients (eqs. 18-19) falls below an
  adaptive threshold;
* **regularisers** (:mod:`~structlab.darts.regularizers`): proximity to the projection
  ``Pi_S(alpha)`` onto valid genotypes (eq. 20) with a strength growing over the search, or
  ADMM (eqs. 21-25);
* **activations** (:mod:`~structlab.darts.supernet`): softmax, or CRB (clipped ReLU with
  non-affine batch norm), which prunes an operation for good once its weight reaches zero.

:mod:`~structlab.darts.genotypes` holds the projection ``Pi_S`` (eqs. 13-16) and genotypes,
:mod:`~structlab.darts.supernet` and :mod:`~structlab.darts.evalnet` the CNN search and
evaluation networks, :mod:`~structlab.darts.rnn` the recurrent search space of Table 6,
:mod:`~structlab.darts.search` the first-order search loop and
:mod:`~structlab.darts.experiments` the chapter's stored experiments.

>>> import torch
>>> from structlab.darts import project_cell, PRIMITIVES
>>> w = project_cell(torch.rand(14, len(PRIMITIVES)))
>>> int(w.sum()), int(w[:, PRIMITIVES.index("none")].sum())   # 2 edges x 4 nodes, no 'none'
(8, 0)
"""

from structlab.darts.evalnet import Cutout, EvalNetwork, count_parameters
from structlab.darts.experiments import (
    VARIANTS,
    corpus_subset,
    downsample,
    evaluate_run,
    genotype_from_record,
    genotype_record,
    long_search_run,
    rnn_evaluate_run,
    rnn_search_run,
    search_run,
    search_split,
    variant_config,
)
from structlab.darts.genotypes import (
    DARTS_V1,
    DARTS_V2,
    Genotype,
    cell_edges,
    count_skip_connects,
    is_discrete_cell,
    project_cell,
)
from structlab.darts.operations import CRB_PRIMITIVES, PRIMITIVES
from structlab.darts.regularizers import ADMM, linear_ramp, proximity_penalty
from structlab.darts.rnn import (
    RNN_PRIMITIVES,
    LanguageTask,
    RNNEval,
    RNNGenotype,
    RNNSupernet,
    project_rnn,
)
from structlab.darts.schedules import (
    AlternateSchedule,
    ConstantSchedule,
    FIMTSchedule,
    fisher_trace,
    make_schedule,
    train_fraction,
)
from structlab.darts.search import ImageTask, SearchConfig, SearchResult, edge_entropy, search
from structlab.darts.supernet import Supernet

__all__ = [
    "ADMM", "AlternateSchedule", "CRB_PRIMITIVES", "ConstantSchedule", "Cutout", "DARTS_V1",
    "DARTS_V2", "EvalNetwork", "FIMTSchedule", "Genotype", "ImageTask", "LanguageTask",
    "PRIMITIVES", "RNNEval", "RNNGenotype", "RNNSupernet", "RNN_PRIMITIVES", "SearchConfig",
    "SearchResult", "Supernet", "VARIANTS", "cell_edges", "corpus_subset", "count_parameters",
    "count_skip_connects", "downsample", "edge_entropy", "evaluate_run", "fisher_trace",
    "genotype_from_record", "genotype_record", "is_discrete_cell", "linear_ramp",
    "long_search_run", "make_schedule", "project_cell", "project_rnn", "proximity_penalty",
    "rnn_evaluate_run", "rnn_search_run", "search", "search_run", "search_split",
    "train_fraction", "variant_config",
]
