"""Noisy Heuristics NAS (Sapkota & Bhattarai, DyNN workshop at ICML 2022).

A network-morphism architecture search steered by heuristics and a few meta-parameters:

* the **Hierarchical Residual Network** (:class:`HRN`, eq. 1-2, Fig. 2): every linear connection
  (dense or 3x3 convolution) may become ``f(x) = W(x) + Re(x)`` with
  ``Re(x) = f_2(sigma(f_1(x)))``, where ``f_1`` and ``f_2`` may be hierarchical again; branches
  and neurons are added and removed by function-preserving morphisms that carry the optimizer
  state (:mod:`~structlab.heuristics.hrn`);
* the **growth phase** adds ``P`` neurons, 70 % placed with ``p_i ∝ MA(ΔN_i)`` (:func:`grow`);
* **training until the loss flattens**: ``y = exp(a x)(1 - x)`` fitted to the normalised loss
  curve, stop at ``a < -5`` or the maximum epochs (appendix A, :func:`flattening_rate`,
  :class:`FlatteningStop`);
* the **shrink phase** prunes the ``M`` least important neurons by ``I = A (1 - B^33)``
  (:func:`importance_scores`), decaying their outgoing weights first (:class:`NeuronDecay`);
* **layer rules**: a residual layer with ``H > (I O^2)^(1/3)`` makes its inner connections
  hierarchical, one left with about one neuron is removed (:func:`apply_layer_rules`);
* **meta-parameters** (neurons to add, add-to-remove ratio, learning rate, maximum epochs) are
  read between iterations from a file or a schedule (:class:`MetaSource`).

:func:`heuristic_search` runs the loop (Fig. 3); :mod:`~structlab.heuristics.toy` has the toy data
of appendix B and :mod:`~structlab.heuristics.figures` the chapter's figures.

>>> import torch
>>> from structlab.heuristics import HRN, add_residual
>>> model = HRN.dense(2, 3, hidden=4).eval()
>>> x = torch.randn(5, 2)
>>> before = model(x)
>>> _ = add_residual(model, "body.0.residual.f2", 3)     # a new hierarchical layer
>>> bool(torch.equal(model(x), before)), model.depth
(True, 3)
"""

from structlab.heuristics.hrn import (
    ACTIVATIONS,
    HRN,
    HConnection,
    HiddenActivation,
    Residual,
    add_neurons,
    add_residual,
    add_to_optimizer,
    layer_threshold,
    load_optimizer_state,
    optimizer_state,
    remove_from_optimizer,
    remove_neurons,
    remove_residual,
    should_add_layer,
)
from structlab.heuristics.meta import MetaParams, MetaSource
from structlab.heuristics.search import (
    PLACEMENTS,
    NeuronDecay,
    allocate_neurons,
    apply_layer_rules,
    grow,
    heuristic_search,
    history_frame,
    importance_from,
    importance_scores,
    make_optimizer,
    placement_probabilities,
    prune_neurons,
    select_neurons,
    update_moving_average,
)
from structlab.heuristics.stopping import (
    FlatteningStop,
    flattening_model,
    flattening_rate,
    normalise_curve,
)
from structlab.heuristics.toy import grid_inputs, regression_2d, two_spirals

__all__ = [
    "ACTIVATIONS",
    "FlatteningStop",
    "HConnection",
    "HRN",
    "HiddenActivation",
    "MetaParams",
    "MetaSource",
    "NeuronDecay",
    "PLACEMENTS",
    "Residual",
    "add_neurons",
    "add_residual",
    "add_to_optimizer",
    "allocate_neurons",
    "apply_layer_rules",
    "flattening_model",
    "flattening_rate",
    "grid_inputs",
    "grow",
    "heuristic_search",
    "history_frame",
    "importance_from",
    "importance_scores",
    "layer_threshold",
    "load_optimizer_state",
    "make_optimizer",
    "normalise_curve",
    "optimizer_state",
    "placement_probabilities",
    "prune_neurons",
    "regression_2d",
    "remove_from_optimizer",
    "remove_neurons",
    "remove_residual",
    "select_neurons",
    "should_add_layer",
    "two_spirals",
    "update_moving_average",
]
