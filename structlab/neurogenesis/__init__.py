"""Neurogenesis: when, where and how to add neurons to a network (thesis chapter 6).

The chapter decomposes neurogenesis into a **trigger** (when, where and how many units to add:
:mod:`~structlab.neurogenesis.triggers`) and an **initialization** (how to set their weights:
:mod:`~structlab.neurogenesis.initializations`), run by the framework of Algorithm 4
(:class:`Neurogenesis`, a training callback). The NORTH* strategies use the orthogonality of
activations (:func:`effective_dimension`, eq. 27; :func:`orthogonality_gap`, eq. 29) or of
weights; GradMax, Firefly and NeST use gradients.

>>> import torch
>>> from structlab.neurogenesis import effective_dimension
>>> effective_dimension(torch.eye(4).repeat(1, 8))
1.0
"""

from structlab.neurogenesis.activations import ModifiedReLU, modified_relu
from structlab.neurogenesis.buffers import ActivationBuffer, InputBuffer, LayerBuffers
from structlab.neurogenesis.growth import (
    STRATEGIES,
    Neurogenesis,
    PresetSchedule,
    gradmax_capacity,
    wrn_groups,
)
from structlab.neurogenesis.initializations import (
    INITIALIZATIONS,
    InitContext,
    NewUnits,
    candidate_activations,
    fan_in_norm,
    fan_out_norm,
    select_candidates,
)
from structlab.neurogenesis.metrics import (
    METRICS,
    candidate_ed_scores,
    candidate_og_scores,
    effective_dimension,
    effective_dimensions,
    orthogonality_gap,
    sample_matrix,
    scaled_singular_values,
    unit_matrix,
    weight_matrix,
)
from structlab.neurogenesis.triggers import (
    ActivationTrigger,
    AuxiliaryGradient,
    GradientTrigger,
    WeightTrigger,
    auxiliary_gradients,
    threshold_count,
)

__all__ = [
    "ActivationBuffer",
    "ActivationTrigger",
    "AuxiliaryGradient",
    "GradientTrigger",
    "INITIALIZATIONS",
    "InitContext",
    "InputBuffer",
    "LayerBuffers",
    "METRICS",
    "ModifiedReLU",
    "Neurogenesis",
    "NewUnits",
    "PresetSchedule",
    "STRATEGIES",
    "WeightTrigger",
    "auxiliary_gradients",
    "candidate_activations",
    "candidate_ed_scores",
    "candidate_og_scores",
    "effective_dimension",
    "effective_dimensions",
    "fan_in_norm",
    "fan_out_norm",
    "gradmax_capacity",
    "modified_relu",
    "orthogonality_gap",
    "sample_matrix",
    "scaled_singular_values",
    "select_candidates",
    "threshold_count",
    "unit_matrix",
    "weight_matrix",
    "wrn_groups",
]
