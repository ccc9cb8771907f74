"""Side by side with Torch-Pruning (``torch-pruning``, a test and benchmark dependency).

:func:`prune_both` removes the same channels from the same layers of two copies of one model,
once through structlab's inferred slots (:func:`structlab.graph.resizable` and
:func:`structlab.operators.remove_units`) and once through Torch-Pruning's dependency graph
(``DependencyGraph.build_dependency`` and ``get_pruning_group(...).prune()``), and returns both
pruned models and the time each library took (inference of the coupled layers plus the
surgery).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from structlab.graph.infer import resizable
from structlab.operators.units import remove_units

__all__ = ["PruneResult", "prune_both", "prune_structlab", "prune_torch_pruning",
           "comparable_layers"]


@dataclass
class PruneResult:
    """One library's pruned copy of the model and the seconds it took."""

    model: nn.Module
    seconds: float


def comparable_layers(model: nn.Module, example_inputs: torch.Tensor, n_single: int = 3
                      ) -> list[str]:
    """Names of producers to prune in a comparison: the first ``n_single`` slots with one
    producer, the first residual group (if any) and the last slot."""
    g = resizable(copy.deepcopy(model), example_inputs)
    slots = g.layer_slots()
    single = [s.name for s in slots if not s.is_group][:n_single]
    groups = [s.name for s in slots if s.is_group][:1]
    names = single + groups + [slots[-1].name]
    return list(dict.fromkeys(names))


def prune_structlab(model: nn.Module, example_inputs: torch.Tensor,
                    channels: Mapping[str, Sequence[int]]) -> PruneResult:
    """Infer the slots of ``model`` and remove ``channels[name]`` from the slot whose first
    producer is the module ``name``."""
    start = time.perf_counter()
    g = resizable(model, example_inputs)
    by_producer = {}
    for s in g.layer_slots():
        for p in s.producers:
            by_producer[id(p)] = s
    for name, idx in channels.items():
        slot = by_producer[id(model.get_submodule(name))]
        remove_units(g, slot, list(idx))
    return PruneResult(g, time.perf_counter() - start)


def prune_torch_pruning(model: nn.Module, example_inputs: torch.Tensor,
                        channels: Mapping[str, Sequence[int]]) -> PruneResult:
    """The same with Torch-Pruning: build its dependency graph and prune the group of the output
    channels of each named layer."""
    import torch_pruning as tp

    start = time.perf_counter()
    dg = tp.DependencyGraph().build_dependency(model, example_inputs=example_inputs)
    for name, idx in channels.items():
        layer = model.get_submodule(name)
        fn = tp.prune_conv_out_channels if isinstance(layer, nn.Conv2d) else \
            tp.prune_linear_out_channels
        group = dg.get_pruning_group(layer, fn, idxs=list(idx))
        group.prune()
    return PruneResult(model, time.perf_counter() - start)


def prune_both(model: nn.Module, example_inputs: torch.Tensor,
               channels: Mapping[str, Sequence[int]]) -> tuple[PruneResult, PruneResult]:
    """``(structlab, torch_pruning)``: both libraries on their own deep copy of ``model``
    (in evaluation mode)."""
    a = copy.deepcopy(model).eval()
    b = copy.deepcopy(model).eval()
    return prune_structlab(a, example_inputs, channels), prune_torch_pruning(
        b, example_inputs, channels)
