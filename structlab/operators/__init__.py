"""The four neural operators of thesis chapter 3 (§3.1) as a library.

* **Neuron creation**: :func:`add_units` (function preserving with zero fan-in or fan-out);
* **Neuron removal**: :func:`remove_units`, :func:`prune_units` with the unit saliencies of
  :func:`unit_saliency` (weight norm, activation mean, dormancy, first-order Taylor, redundancy);
* **Synaptic pruning**: connection masks, :func:`prune_unstructured` (per layer) and
  :func:`prune_global`, by magnitude, first-order Taylor ``|w dL/dw|`` or at random, per weight or
  per convolution kernel; masks may revive connections (ephemeral pruning);
* **Synaptogenesis**: :func:`regrow_connections` by the NeST gradient rule or at random.

Operators act on models through ``layer_slots()`` (see :mod:`structlab.models`) and update an
optimizer in place (:func:`replace_parameter`): SGD with momentum and Adam keep the state of
surviving parameters and start new entries from zero.

The chapter's experiment drivers live in :mod:`structlab.operators.experiments`, its figures in
:mod:`structlab.operators.figures`; :mod:`structlab.operators.exact` builds networks in exact
(dyadic float64) arithmetic for bit-exact tests of function preservation.
"""

from structlab.operators.corpus import (
    LAYER_TYPES,
    OPERATORS,
    TASKS,
    UNIT_TYPES,
    co_occurrence,
    counts_by_period,
    load_corpus,
)
from structlab.operators.landscape import ToyLandscape, descend
from structlab.operators.masks import (
    GROWTH_METHODS,
    PRUNING_METHODS,
    connection_gradients,
    connection_scores,
    get_mask,
    prunable_modules,
    prune_global,
    prune_unstructured,
    regrow_connections,
    remove_masks,
    set_mask,
    sparsity,
    step_amount,
)
from structlab.operators.optim import replace_parameter, zero_state_entries
from structlab.operators.saliency import (
    UNIT_SALIENCIES,
    ActivationStats,
    activation_statistics,
    cosine_similarity_matrix,
    greedy_redundant_units,
    lowest_units,
    prune_units,
    redundancy_matrix,
    taylor_saliencies,
    taylor_saliency,
    unit_saliency,
    weight_norm_saliency,
)
from structlab.operators.units import FanSpec, add_units, remove_units

__all__ = [
    "ActivationStats",
    "FanSpec",
    "GROWTH_METHODS",
    "LAYER_TYPES",
    "OPERATORS",
    "PRUNING_METHODS",
    "TASKS",
    "ToyLandscape",
    "UNIT_SALIENCIES",
    "UNIT_TYPES",
    "activation_statistics",
    "add_units",
    "co_occurrence",
    "connection_gradients",
    "connection_scores",
    "cosine_similarity_matrix",
    "counts_by_period",
    "descend",
    "get_mask",
    "greedy_redundant_units",
    "load_corpus",
    "lowest_units",
    "prunable_modules",
    "prune_global",
    "prune_unstructured",
    "prune_units",
    "redundancy_matrix",
    "regrow_connections",
    "remove_masks",
    "remove_units",
    "replace_parameter",
    "set_mask",
    "sparsity",
    "step_amount",
    "taylor_saliencies",
    "taylor_saliency",
    "unit_saliency",
    "weight_norm_saliency",
    "zero_state_entries",
]
