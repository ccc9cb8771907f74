"""Equivariance-aware NAS: EquiNAS_E (Algorithm 1), EquiNAS_D (Algorithm 2), baselines, ablations.

* :func:`equinas_e` — evolutionary hill climbing with the relaxation morphism as mutation, partial
  training of every individual each generation, and selection of the whole Pareto front of
  (validation accuracy, parameter count) filled up with the most accurate (§4.4.1). With
  ``selection="random"`` it is the *Random Select* ablation.
* :func:`equinas_d` — [G]-mixed layers everywhere, alternating updates of ``Z`` and ``Psi`` by
  separate Adam optimizers on independent batches of the training split (§4.4.2). With
  ``random_z=True`` the ``Z`` gradients are shuffled within each layer (*Random Z*).
* :func:`train_network` — static training (baselines C1/C4/D4, priors, RPP, retraining).
* :func:`random_discrete_architectures`, :func:`random_mixtures` — the *Random Static* spaces.
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from structlab.data.base import LabelledTensors
from structlab.equivariance.groups import get_group
from structlab.equivariance.network import (
    ALL_GROUPS,
    EquivariantCNN,
    LayerSpec,
    architecture_name,
    valid_relaxations,
)
from structlab.metrics import count_parameters
from structlab.reproducibility import seed_everything
from structlab.training import History, calibrate_batch_norm, evaluate, fit

__all__ = [
    "Builder",
    "calibrate_batch_norm",
    "Individual",
    "EvolutionResult",
    "MixtureResult",
    "make_optimizer",
    "train_network",
    "with_prior",
    "pareto_front",
    "equinas_e",
    "equinas_d",
    "random_discrete_architectures",
    "random_mixtures",
    "set_mixture",
    "test_error",
]

#: Builds a network from one layer spec per convolution.
Builder = Callable[[Sequence[LayerSpec]], EquivariantCNN]


def make_optimizer(model: EquivariantCNN, kind: str, lr: float) -> torch.optim.Optimizer:
    """SGD without momentum (§4.5.1) or Adam with default settings (§4.5.2) over the model's
    weights (not its architecture weights); RPP's C1 paths get their L2 penalty."""
    if lr <= 0:
        raise ValueError(f"lr must be positive, got {lr}")
    groups = model.param_groups()
    if kind == "sgd":
        return torch.optim.SGD(groups, lr=lr)
    if kind == "adam":
        return torch.optim.Adam(groups, lr=lr)
    raise ValueError(f"unknown optimizer {kind!r}; use 'sgd' or 'adam'")


def _passes(epochs: float) -> tuple[int, float]:
    if epochs < 0 or not math.isfinite(epochs):
        raise ValueError(f"epochs must be a non-negative number, got {epochs}")
    whole = int(math.floor(epochs))
    return whole, epochs - whole


def train_network(
    model: EquivariantCNN,
    train: LabelledTensors,
    *,
    epochs: float,
    optimizer: str | torch.optim.Optimizer = "sgd",
    lr: float = 0.1,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    seed: int = 0,
    quiet: bool = True,
    desc: str = "",
    bn_calibration: int = 0,
) -> History:
    """Train ``model`` for ``epochs`` passes over ``train``; a fractional part trains on a seeded
    random subset of that fraction of the data (so 0.5 epochs is half the data, once). With
    ``bn_calibration`` > 0 the batch-norm statistics are recomputed on that many training images
    afterwards (:func:`calibrate_batch_norm`)."""
    opt = make_optimizer(model, optimizer, lr) if isinstance(optimizer, str) else optimizer
    whole, frac = _passes(epochs)
    history = History()
    if whole:
        history = fit(
            model,
            train,
            epochs=whole,
            optimizer=opt,
            batch_size=batch_size,
            device=device,
            seed=seed,
            quiet=quiet,
            desc=desc,
        )
    n = round(frac * len(train))
    if n > 0:
        part = fit(
            model,
            train.subset(n, seed=seed + 7919 * (whole + 1)),
            epochs=1,
            optimizer=opt,
            batch_size=batch_size,
            device=device,
            seed=seed + 1,
            quiet=quiet,
            desc=desc,
        )
        for key in ("train_loss", "train_acc", "epoch_time"):
            getattr(history, key).extend(getattr(part, key))
    calibrate_batch_norm(model, train, bn_calibration, device=device, seed=seed)
    return history


def test_error(model: nn.Module, data: LabelledTensors, *, device: str | torch.device) -> float:
    """Classification error in percent."""
    return 100.0 * (1.0 - evaluate(model, data, device=device)["accuracy"])


def with_prior(build: Builder, groups: Sequence[str], prior: str) -> EquivariantCNN:
    """A network over ``groups`` initialized as a ``prior``-equivariant one (§4.5.1's baselines
    with priors): built over ``prior`` and relaxed layer by layer with the morphism."""
    model = build([prior] * len(groups))
    for i, g in enumerate(groups):
        if g != prior:
            model.relax(i, g)
    return model


# ---------------------------------------------------------------------------------------------
# EquiNAS_E
# ---------------------------------------------------------------------------------------------
@dataclass
class Individual:
    """A member of EquiNAS_E's population with its lineage."""

    uid: int
    model: EquivariantCNN
    parent: int | None
    born: int
    val_acc: float = float("nan")

    @property
    def groups(self) -> list[str]:
        return list(self.model.groups)

    @property
    def params(self) -> int:
        return count_parameters(self.model)


@dataclass
class EvolutionResult:
    """The final population (best first) and a log with one row per individual per generation."""

    population: list[Individual]
    log: pd.DataFrame
    epochs_per_individual: float

    def selected(self) -> pd.DataFrame:
        return self.log[self.log["selected"]]


def pareto_front(scores: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points not dominated when maximizing the first and minimizing the second
    coordinate (validation accuracy, parameter count)."""
    front = []
    for i, (a_i, p_i) in enumerate(scores):
        dominated = any(
            a_j >= a_i and p_j <= p_i and (a_j > a_i or p_j < p_i)
            for j, (a_j, p_j) in enumerate(scores)
            if j != i
        )
        if not dominated:
            front.append(i)
    return front


def _select(
    population: list[Individual], parents: int, how: str, rng: random.Random
) -> list[Individual]:
    if how == "random":
        return rng.sample(population, min(parents, len(population)))
    scores = [(ind.val_acc, ind.params) for ind in population]
    chosen = pareto_front(scores)
    rest = sorted(
        (i for i in range(len(population)) if i not in chosen),
        key=lambda i: (-population[i].val_acc, population[i].params, i),
    )
    chosen += rest[: max(0, parents - len(chosen))]
    return [population[i] for i in chosen]


def equinas_e(
    build: Builder,
    train: LabelledTensors,
    val: LabelledTensors,
    *,
    initial_group: str = "D4",
    n_layers: int = 8,
    generations: int = 50,
    parents: int = 5,
    children_per_parent: int | None = None,
    epochs_per_generation: float = 0.5,
    lr: float = 0.1,
    batch_size: int = 64,
    selection: str = "pareto",
    device: str | torch.device = "cpu",
    seed: int = 0,
    quiet: bool = True,
    bn_calibration: int = 0,
) -> EvolutionResult:
    """Evolutionary equivariance-aware NAS (Algorithm 1).

    Starts from one network with every layer over ``initial_group``. Each generation every
    member adds children — one relaxation of one layer each (:func:`valid_relaxations`; all of
    them, or ``children_per_parent`` drawn at random) — then every member is trained for
    ``epochs_per_generation`` epochs with SGD (``lr``, no momentum) and scored on ``val``; the
    Pareto front of (accuracy, parameters) survives, filled up with the most accurate to
    ``parents`` (``selection="pareto"``) or ``parents`` survive at random (``"random"``).
    ``bn_calibration``: see :func:`train_network`.
    """
    if selection not in ("pareto", "random"):
        raise ValueError(f"selection must be 'pareto' or 'random', got {selection!r}")
    if generations < 1 or parents < 1:
        raise ValueError("generations and parents must be positive")
    rng = random.Random(seed)
    seed_everything(seed)
    next_uid = 0

    def new(model: EquivariantCNN, parent: int | None, born: int) -> Individual:
        nonlocal next_uid
        next_uid += 1
        return Individual(next_uid - 1, model.to(device), parent, born)

    population = [new(build([initial_group] * n_layers), None, 0)]
    rows = []
    bar = tqdm(range(generations), desc="EquiNAS_E", disable=quiet)
    for gen in bar:
        children = []
        for ind in population:
            moves = valid_relaxations(ind.groups)
            if children_per_parent is not None and len(moves) > children_per_parent:
                moves = rng.sample(moves, children_per_parent)
            for layer, group in moves:
                child = copy.deepcopy(ind.model).relax(layer, group)
                children.append(new(child, ind.uid, gen))
        population = population + children
        for ind in population:
            train_network(
                ind.model,
                train,
                epochs=epochs_per_generation,
                optimizer="sgd",
                lr=lr,
                batch_size=batch_size,
                device=device,
                seed=seed * 100_003 + gen * 1009 + ind.uid,
                bn_calibration=bn_calibration,
            )
            ind.val_acc = evaluate(ind.model, val, device=device)["accuracy"]
        survivors = _select(population, parents, selection, rng)
        keep = {ind.uid for ind in survivors}
        for ind in population:
            rows.append(
                {
                    "generation": gen,
                    "uid": ind.uid,
                    "parent": ind.parent,
                    "architecture": architecture_name(ind.groups),
                    "params": ind.params,
                    "val_acc": 100 * ind.val_acc,
                    "selected": ind.uid in keep,
                }
            )
        population = sorted(survivors, key=lambda i: (-i.val_acc, i.params, i.uid))
        bar.set_postfix(best=f"{100 * population[0].val_acc:.1f}%", size=len(population))
    return EvolutionResult(population, pd.DataFrame(rows), generations * epochs_per_generation)


def random_discrete_architectures(
    n: int, *, n_layers: int = 8, seed: int = 0, groups: Sequence[str] = ALL_GROUPS
) -> list[list[str]]:
    """``n`` random architectures of EquiNAS_E's space: each layer's group drawn uniformly from
    the subgroups (in ``groups``) of the previous layer's group."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        arch = [rng.choice(list(groups))]
        for _ in range(n_layers - 1):
            options = [g for g in groups if get_group(g).is_subgroup_of(arch[-1])]
            arch.append(rng.choice(options))
        out.append(arch)
    return out


# ---------------------------------------------------------------------------------------------
# EquiNAS_D
# ---------------------------------------------------------------------------------------------
@dataclass
class MixtureResult:
    """EquiNAS_D's trained network, its ``z`` over training and its training history.

    The experiment drivers keep the final architecture logits ``alphas`` (layers, groups) and
    drop the network (``model`` None), so that the result can be stored and read back."""

    model: EquivariantCNN | None
    groups: tuple[str, ...]
    z_steps: list[float] = field(default_factory=list)  # in epochs
    z_history: list[torch.Tensor] = field(default_factory=list)  # (layers, groups) each
    train_loss: list[float] = field(default_factory=list)
    alphas: torch.Tensor | None = None

    def z_frame(self) -> pd.DataFrame:
        """Long table: epoch, layer (1-based), group, z."""
        rows = []
        for t, z in zip(self.z_steps, self.z_history):
            for layer in range(z.shape[0]):
                for j, g in enumerate(self.groups):
                    rows.append(
                        {"epoch": t, "layer": layer + 1, "group": g, "z": float(z[layer, j])}
                    )
        return pd.DataFrame(rows)

    def final_z(self) -> pd.DataFrame:
        """``(layers, groups)`` table of the final architecture weights."""
        z = self.z_history[-1].numpy()
        return pd.DataFrame(
            z, columns=list(self.groups), index=pd.Index(range(1, z.shape[0] + 1), name="layer")
        )


def _infinite_batches(data: LabelledTensors, batch_size: int, generator: torch.Generator):
    n = len(data)
    while True:
        order = torch.randperm(n, generator=generator)
        for start in range(0, n - batch_size + 1 if n >= batch_size else 1, batch_size):
            idx = order[start : start + batch_size]
            yield data.inputs[idx], data.targets[idx]


def equinas_d(
    model: EquivariantCNN,
    train: LabelledTensors,
    *,
    epochs: float,
    lr: float = 0.01,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    seed: int = 0,
    random_z: bool = False,
    records_per_epoch: int = 4,
    quiet: bool = True,
    desc: str = "EquiNAS_D",
    bn_calibration: int = 0,
) -> MixtureResult:
    """Differentiable equivariance-aware NAS (Algorithm 2) on a network of mixed layers.

    Every step draws one batch for ``Z`` and an independent one for ``Psi`` from ``train`` and
    updates each with its own Adam optimizer (``lr``, default settings): first ``Z`` by
    ``grad_Z L(Psi, Z)`` at the current ``Psi`` (the first-order approximation), then ``Psi``.
    ``random_z`` shuffles each layer's ``Z`` gradient before its update (*Random Z* ablation).
    ``bn_calibration``: see :func:`train_network`.
    """
    layers = model.mixed_layers()
    if not layers:
        raise ValueError("equinas_d needs a network with mixed layers")
    groups = tuple(g.name for g in layers[0].groups)
    seed_everything(seed)
    model.to(device).train()
    arch = model.architecture_parameters()
    opt_z = torch.optim.Adam(arch, lr=lr)
    opt_psi = torch.optim.Adam(model.param_groups(), lr=lr)
    gen_z = torch.Generator().manual_seed(seed * 2 + 1)
    gen_psi = torch.Generator().manual_seed(seed * 2 + 2)
    gen_shuffle = torch.Generator().manual_seed(seed * 2 + 3)
    batches_z = _infinite_batches(train, batch_size, gen_z)
    batches_psi = _infinite_batches(train, batch_size, gen_psi)
    steps_per_epoch = max(1, len(train) // batch_size)
    total = max(1, round(epochs * steps_per_epoch))
    record_every = max(1, steps_per_epoch // max(1, records_per_epoch))
    result = MixtureResult(model, groups)
    result.z_steps.append(0.0)
    result.z_history.append(model.mixing_table())
    loss_fn = nn.functional.cross_entropy
    bar = tqdm(range(total), desc=desc, disable=quiet)
    running = 0.0
    for step in bar:
        x, y = next(batches_z)
        loss_z = loss_fn(model(x.to(device)), y.to(device))
        grads = torch.autograd.grad(loss_z, arch)
        for p, g in zip(arch, grads):
            if random_z:
                g = g[torch.randperm(g.numel(), generator=gen_shuffle)]
            p.grad = g.detach().clone()
        opt_z.step()
        opt_z.zero_grad(set_to_none=True)
        x, y = next(batches_psi)
        opt_psi.zero_grad(set_to_none=True)
        loss = loss_fn(model(x.to(device)), y.to(device))
        loss.backward()
        for p in arch:
            p.grad = None
        opt_psi.step()
        running += float(loss.detach())
        if (step + 1) % record_every == 0 or step + 1 == total:
            result.z_steps.append((step + 1) / steps_per_epoch)
            result.z_history.append(model.mixing_table())
            result.train_loss.append(running / ((step % record_every) + 1))
            running = 0.0
            bar.set_postfix(loss=f"{result.train_loss[-1]:.3f}")
    calibrate_batch_norm(model, train, bn_calibration, device=device, seed=seed)
    return result


def random_mixtures(
    n: int, *, n_layers: int = 8, n_groups: int = len(ALL_GROUPS), seed: int = 0
) -> list[torch.Tensor]:
    """``n`` random continuous architectures: ``z`` per layer drawn from a flat Dirichlet,
    returned as logits ``alpha = log z`` of shape ``(n_layers, n_groups)``."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        z = -torch.log(torch.rand(n_layers, n_groups, generator=g))  # Exp(1) = Gamma(1)
        out.append(torch.log(z / z.sum(dim=1, keepdim=True)))
    return out


def set_mixture(model: EquivariantCNN, alpha: torch.Tensor, *, trainable: bool = False) -> None:
    """Fix the mixing logits of every mixed layer (``Random Static``, ``Retrain``)."""
    layers = model.mixed_layers()
    if alpha.shape[0] != len(layers):
        raise ValueError(f"alpha has {alpha.shape[0]} rows for {len(layers)} mixed layers")
    with torch.no_grad():
        for m, a in zip(layers, alpha):
            m.alpha.copy_(a.to(m.alpha.device))
            m.alpha.requires_grad_(trainable)
