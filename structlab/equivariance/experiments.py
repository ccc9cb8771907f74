"""The experiments of thesis §4.5 as functions the chapter notebook calls.

* :func:`prepare_data` — train/validation/test splits padded to 32x32 (or 64x64);
* :func:`evolutionary_study` — Table 3 and Fig. 9-11: EquiNAS_E, its Random Select ablation and
  Retrain, Random Static, RPP, static baselines and baselines with priors (SGD, §4.5.1);
* :func:`differentiable_study` — Table 4 and Fig. 13-15: EquiNAS_D, Random Z, Retrain, Random
  Static, RPP and static baselines (Adam, §4.5.2);
* :func:`symmetry_discovery` — Fig. 12: EquiNAS_D on data augmented by each group;
* :func:`summarize` — mean and standard deviation of test errors per method.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import torch

from structlab.data import load_dataset
from structlab.data.base import LabelledTensors
from structlab.data.transforms import group_augmented, pad_images, rotated
from structlab.equivariance.network import ALL_GROUPS, EquivariantCNN, LayerSpec
from structlab.equivariance.search import (
    EvolutionResult,
    MixtureResult,
    equinas_d,
    equinas_e,
    random_discrete_architectures,
    random_mixtures,
    set_mixture,
    test_error,
    train_network,
    with_prior,
)
from structlab.metrics import count_parameters
from structlab.reproducibility import seed_everything

__all__ = [
    "Splits",
    "prepare_data",
    "make_builder",
    "evolutionary_study",
    "differentiable_study",
    "symmetry_discovery",
    "summarize",
    "PRIORS",
]

#: The baselines with priors of Table 3: (group of the layers, prior group).
PRIORS: tuple[tuple[str, str], ...] = (("C4", "D4"), ("C1", "D4"), ("C1", "C4"))


@dataclass
class Splits:
    train: LabelledTensors
    val: LabelledTensors
    test: LabelledTensors

    @property
    def channels(self) -> int:
        return int(self.train.inputs.shape[1])

    @property
    def num_classes(self) -> int:
        return int(self.train.num_classes or int(self.train.targets.max()) + 1)


def prepare_data(
    dataset: str = "mnist5k",
    *,
    rotate: bool = True,
    train_size: int = 0,
    test_size: int = 0,
    val_fraction: float = 0.1,
    size: int = 32,
    augment_group: str | None = None,
    seed: int = 0,
) -> Splits:
    """Load ``dataset``, optionally rotate every image by a seeded random angle (rotMNIST-style),
    optionally transform it by random elements of ``augment_group`` (Fig. 12), subsample, hold
    out ``val_fraction`` of the training images for validation (§4.5) and zero-pad to ``size``.

    ``train_size``/``test_size`` of 0 keep everything.
    """
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    train_all, test_all = load_dataset(dataset, "train"), load_dataset(dataset, "test")
    if train_all.inputs.dim() != 4:
        raise ValueError(f"{dataset} is not an image dataset")
    train_all = train_all.subset(train_size or None, seed=seed)
    test_all = test_all.subset(test_size or None, seed=seed)
    if rotate:
        train_all, test_all = rotated(train_all, seed=seed), rotated(test_all, seed=seed + 1)
    if augment_group is not None:
        train_all = group_augmented(train_all, augment_group, seed=seed)
        test_all = group_augmented(test_all, augment_group, seed=seed + 1)
    n_val = max(1, round(val_fraction * len(train_all)))
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(train_all), generator=g)
    parts = []
    for idx in (order[n_val:], order[:n_val]):
        parts.append(
            LabelledTensors(
                train_all.inputs[idx],
                train_all.targets[idx],
                name=train_all.name,
                classes=train_all.classes,
            )
        )
    train, val = parts
    if train.inputs.shape[-1] != size:
        train, val, test_all = (pad_images(d, size) for d in (train, val, test_all))
    return Splits(train, val, test_all)


def make_builder(
    splits: Splits,
    *,
    channels: Sequence[int] = (16, 32),
    hidden: int = 64,
    pool_after: Sequence[int] = (2, 4, 6, 8),
    rpp_l2: float = 1e-6,
    device: str | torch.device = "cpu",
):
    """A function from layer specs to a fresh :class:`EquivariantCNN` on ``device``."""

    def build(layers: Sequence[LayerSpec]) -> EquivariantCNN:
        return EquivariantCNN(
            list(layers),
            in_channels=splits.channels,
            num_classes=splits.num_classes,
            channels=channels,
            pool_after=pool_after,
            hidden=hidden,
            rpp_l2=rpp_l2,
        ).to(device)

    return build


def _row(method: str, model, splits: Splits, device, run: int, arch: str = "") -> dict:
    return {
        "method": method,
        "run": run,
        "architecture": arch or model.name,
        "params": count_parameters(model),
        "stored_params": model.stored_parameters(),
        "test_error": test_error(model, splits.test, device=device),
    }


def _static(
    build,
    specs,
    splits,
    *,
    epochs,
    optimizer,
    lr,
    batch_size,
    device,
    seed,
    prior: str | None = None,
    bn_calibration: int = 0,
):
    seed_everything(seed)
    model = with_prior(build, specs, prior) if prior else build(specs)
    train_network(
        model,
        splits.train,
        epochs=epochs,
        optimizer=optimizer,
        lr=lr,
        batch_size=batch_size,
        device=device,
        seed=seed,
        bn_calibration=bn_calibration,
    )
    return model


def _best_by_validation(models: list, splits: Splits, k: int, device) -> list:
    """The ``k`` models with the highest validation accuracy (ties: the earlier one)."""
    errors = [test_error(m, splits.val, device=device) for m in models]
    order = sorted(range(len(models)), key=lambda i: (errors[i], i))
    return [models[i] for i in order[:k]]


def _static_baselines(
    build, splits: Splits, *, n_layers: int, seed: int, epochs: float, priors: bool, say, common
) -> list[dict]:
    """RPP, the D4, C4 and C1 baselines and (``priors``) the baselines with priors of Table 3."""
    rows = []
    methods = [
        ("RPP", ["rpp"] * n_layers, None),
        ("D4 baseline", ["D4"] * n_layers, None),
        ("C4 baseline", ["C4"] * n_layers, None),
        ("C1 baseline", ["C1"] * n_layers, None),
    ]
    if priors:
        methods += [(f"{g} (prior: {p})", [g] * n_layers, p) for g, p in PRIORS]
    for method, specs, prior in methods:
        say(f"{method} (seed {seed})")
        model = _static(build, specs, splits, epochs=epochs, seed=seed, prior=prior, **common)
        rows.append(_row(method, model, splits, device=common["device"], run=seed))
    return rows


def evolutionary_study(
    splits: Splits,
    build,
    *,
    seeds: Sequence[int] = (0,),
    generations: int = 50,
    parents: int = 5,
    children_per_parent: int | None = None,
    epochs_per_generation: float = 0.5,
    lr: float = 0.1,
    batch_size: int = 64,
    random_static: int = 30,
    n_layers: int = 8,
    device: str | torch.device = "cpu",
    progress=None,
    bn_calibration: int = 0,
) -> tuple[pd.DataFrame, dict[int, EvolutionResult]]:
    """Table 3's comparison (§4.5.1): every method trained for
    ``generations * epochs_per_generation`` epochs with SGD (``lr``, no momentum).

    Returns one row per trained network (method, run, architecture, parameters, test error)
    and EquiNAS_E's result per seed (for Fig. 11). ``progress`` is called with a label before
    each run (e.g. a tqdm bar's ``set_description``). ``bn_calibration`` > 0 recomputes the
    batch-norm statistics on that many training images after every training run
    (:func:`~structlab.equivariance.search.calibrate_batch_norm`; for short runs).
    """
    epochs = generations * epochs_per_generation
    common = dict(
        optimizer="sgd", lr=lr, batch_size=batch_size, device=device, bn_calibration=bn_calibration
    )
    rows, evolutions = [], {}
    say = progress or (lambda label: None)
    for seed in seeds:
        for method, random_select in (("EquiNAS_E", False), ("EquiNAS_E Random Select", True)):
            say(f"{method} (seed {seed})")
            result = equinas_e(
                build,
                splits.train,
                splits.val,
                n_layers=n_layers,
                generations=generations,
                parents=parents,
                children_per_parent=children_per_parent,
                epochs_per_generation=epochs_per_generation,
                lr=lr,
                batch_size=batch_size,
                selection="random" if random_select else "pareto",
                device=device,
                seed=seed,
                bn_calibration=bn_calibration,
            )
            if not random_select:
                evolutions[seed] = result
            for rank, ind in enumerate(result.population):
                rows.append(_row(method, ind.model, splits, device, seed * 100 + rank))
        say(f"EquiNAS_E Retrain (seed {seed})")
        for rank, ind in enumerate(evolutions[seed].population):
            model = _static(build, ind.groups, splits, epochs=epochs, seed=seed + rank, **common)
            rows.append(_row("EquiNAS_E Retrain", model, splits, device, seed * 100 + rank))
        say(f"Random Static (seed {seed})")
        models = [
            _static(build, arch, splits, epochs=epochs, seed=seed * 1000 + k, **common)
            for k, arch in enumerate(
                random_discrete_architectures(random_static, n_layers=n_layers, seed=seed)
            )
        ]
        for rank, model in enumerate(_best_by_validation(models, splits, parents, device)):
            rows.append(_row("Random Static", model, splits, device, seed * 100 + rank))
        rows += _static_baselines(
            build,
            splits,
            n_layers=n_layers,
            seed=seed,
            epochs=epochs,
            priors=True,
            say=say,
            common=common,
        )
    return pd.DataFrame(rows), evolutions


def differentiable_study(
    splits: Splits,
    build,
    *,
    seeds: Sequence[int] = (0,),
    epochs: float = 100,
    lr: float = 0.01,
    batch_size: int = 64,
    random_static: int = 25,
    top: int = 5,
    n_layers: int = 8,
    groups: Sequence[str] = ALL_GROUPS,
    device: str | torch.device = "cpu",
    progress=None,
    bn_calibration: int = 0,
) -> tuple[pd.DataFrame, dict[int, MixtureResult]]:
    """Table 4's comparison (§4.5.2): EquiNAS_D and its ablations, RPP and static baselines,
    all trained for ``epochs`` epochs with Adam (``lr``). Returns one row per trained network
    and EquiNAS_D's result per seed (for Fig. 15)."""
    mixed = [tuple(groups)] * n_layers
    common = dict(
        optimizer="adam", lr=lr, batch_size=batch_size, device=device, bn_calibration=bn_calibration
    )
    rows, searches = [], {}
    say = progress or (lambda label: None)
    for seed in seeds:
        for method, random_z in (("EquiNAS_D", False), ("EquiNAS_D Random Z", True)):
            say(f"{method} (seed {seed})")
            seed_everything(seed)
            result = equinas_d(
                build(mixed),
                splits.train,
                epochs=epochs,
                lr=lr,
                batch_size=batch_size,
                device=device,
                seed=seed,
                random_z=random_z,
                bn_calibration=bn_calibration,
            )
            if not random_z:
                searches[seed] = result
            rows.append(_row(method, result.model, splits, device, seed, arch="mixed"))
        say(f"EquiNAS_D Retrain (seed {seed})")
        seed_everything(seed + 1)
        model = build(mixed)
        set_mixture(
            model,
            torch.stack([m.alpha.detach().cpu() for m in searches[seed].model.mixed_layers()]),
        )
        train_network(model, splits.train, epochs=epochs, seed=seed + 1, **common)
        rows.append(_row("EquiNAS_D Retrain", model, splits, device, seed, arch="mixed"))
        say(f"Random Static (seed {seed})")
        models = []
        for k, alpha in enumerate(
            random_mixtures(random_static, n_layers=n_layers, n_groups=len(groups), seed=seed)
        ):
            seed_everything(seed * 1000 + k)
            model = build(mixed)
            set_mixture(model, alpha)
            train_network(model, splits.train, epochs=epochs, seed=seed * 1000 + k, **common)
            models.append(model)
        for rank, model in enumerate(_best_by_validation(models, splits, top, device)):
            rows.append(
                _row("Random Static", model, splits, device, seed * 100 + rank, arch="mixed")
            )
        rows += _static_baselines(
            build,
            splits,
            n_layers=n_layers,
            seed=seed,
            epochs=epochs,
            priors=False,
            say=say,
            common=common,
        )
    return pd.DataFrame(rows), searches


def symmetry_discovery(
    build_splits,
    build,
    *,
    groups: Sequence[str] = ALL_GROUPS,
    epochs: float = 100,
    lr: float = 0.01,
    batch_size: int = 64,
    n_layers: int = 8,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress=None,
    bn_calibration: int = 0,
) -> dict[str, tuple[MixtureResult, float]]:
    """Fig. 12: EquiNAS_D on the data augmented by each group. ``build_splits(group)`` returns
    the splits augmented by ``group``; returns each group's search result and test error."""
    out = {}
    say = progress or (lambda label: None)
    for g in groups:
        say(f"EquiNAS_D on {g}-augmented data")
        splits = build_splits(g)
        seed_everything(seed)
        result = equinas_d(
            build([tuple(ALL_GROUPS)] * n_layers),
            splits.train,
            epochs=epochs,
            lr=lr,
            batch_size=batch_size,
            device=device,
            seed=seed,
            bn_calibration=bn_calibration,
        )
        out[g] = (result, test_error(result.model, splits.test, device=device))
    return out


def summarize(rows: pd.DataFrame, order: Sequence[str] | None = None) -> pd.DataFrame:
    """Mean and standard deviation of test error (%) and parameters per method."""
    grouped = rows.groupby("method", sort=False)
    table = pd.DataFrame(
        {
            "test error (%)": grouped["test_error"].mean(),
            "std": grouped["test_error"].std(ddof=0),
            "networks": grouped.size(),
            "params": grouped["params"].mean().round().astype(int),
            "stored params": grouped["stored_params"].mean().round().astype(int),
        }
    )
    if order is not None:
        table = table.reindex([m for m in order if m in table.index])
    return table.round({"test error (%)": 2, "std": 2})
