"""Equivariance-aware architectural optimization (thesis chapter 4).

* :mod:`~structlab.equivariance.groups` — the groups C1, C2, C4, D1, D2, D4 of the pixel grid;
* :mod:`~structlab.equivariance.layers` — lifting and group convolutions expanded into one
  ``conv2d`` (eq. 2-3), the relaxation morphism (eq. 4-10), [G]-mixed layers (eq. 11-12), RPP;
* :mod:`~structlab.equivariance.network` — the backbone of §4.5 with ``relax`` and ``collapse``;
* :mod:`~structlab.equivariance.search` — EquiNAS_E (Algorithm 1), EquiNAS_D (Algorithm 2),
  baselines and ablations;
* :mod:`~structlab.equivariance.figures` — the chapter's figures.
"""

from structlab.equivariance.groups import GROUP_NAMES, Group, get_group
from structlab.equivariance.layers import (
    FieldLayout,
    GroupBatchNorm2d,
    GroupConv2d,
    GroupPool,
    MixedGroupConv,
    ResidualPathwayConv,
    mixing_weights,
    relax,
    relax_norm,
    relax_pool_and_linear,
)
from structlab.equivariance.network import (
    ALL_GROUPS,
    EquivariantCNN,
    LayerSpec,
    architecture_name,
    common_subgroup,
    is_monotone,
    valid_relaxations,
)
from structlab.equivariance.search import (
    EvolutionResult,
    Individual,
    MixtureResult,
    calibrate_batch_norm,
    equinas_d,
    equinas_e,
    make_optimizer,
    pareto_front,
    random_discrete_architectures,
    random_mixtures,
    set_mixture,
    test_error,
    train_network,
    with_prior,
)

__all__ = [
    "ALL_GROUPS",
    "EquivariantCNN",
    "EvolutionResult",
    "FieldLayout",
    "GROUP_NAMES",
    "Group",
    "GroupBatchNorm2d",
    "GroupConv2d",
    "GroupPool",
    "Individual",
    "LayerSpec",
    "MixedGroupConv",
    "MixtureResult",
    "ResidualPathwayConv",
    "architecture_name",
    "calibrate_batch_norm",
    "common_subgroup",
    "equinas_d",
    "equinas_e",
    "get_group",
    "is_monotone",
    "make_optimizer",
    "mixing_weights",
    "pareto_front",
    "random_discrete_architectures",
    "random_mixtures",
    "relax",
    "relax_norm",
    "relax_pool_and_linear",
    "set_mixture",
    "test_error",
    "train_network",
    "valid_relaxations",
    "with_prior",
]
