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
from dataclasses import dataclass, replace

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
from structlab.experiment_store import ExperimentStore, expect, run_experiment
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

    build.fingerprint = lambda: {  # what an ExperimentStore key needs to know of the networks
        "in_channels": splits.channels, "num_classes": splits.num_classes,
        "channels": list(channels), "hidden": hidden, "pool_after": list(pool_after),
        "rpp_l2": rpp_l2, "device": str(device)}
    return build


def _row(method: str, model, splits: Splits, device, seed: int, rank: int = 0,
         arch: str = "") -> dict:
    """One trained network: its method, ``seed`` and ``rank`` within that seed's set of networks
    (``run`` = 100 seed + rank), architecture, parameters and test error (%)."""
    return {
        "method": method,
        "seed": seed,
        "run": 100 * seed + rank,
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


def _without_model(result: MixtureResult) -> MixtureResult:
    """``result`` with its network replaced by the final architecture logits ``alphas``
    (layers, groups): what the chapter uses of it, and what can be stored (a parametrized
    network cannot be pickled)."""
    alphas = torch.stack([m.alpha.detach().cpu() for m in result.model.mixed_layers()])
    return replace(result, model=None, alphas=alphas)


def _best_by_validation(models: list, splits: Splits, k: int, device) -> list:
    """The ``k`` models with the highest validation accuracy (ties: the earlier one)."""
    errors = [test_error(m, splits.val, device=device) for m in models]
    order = sorted(range(len(models)), key=lambda i: (errors[i], i))
    return [models[i] for i in order[:k]]


def _static_baselines(
    build, splits: Splits, *, n_layers: int, seed: int, epochs: float, priors: bool, say, common,
    store: ExperimentStore | None = None,
) -> list[dict]:
    """RPP, the D4, C4 and C1 baselines and (``priors``) the baselines with priors of Table 3,
    one experiment each."""
    rows = []
    for method, specs, prior in _baseline_methods(n_layers, priors):
        say(f"{method} (seed {seed})")

        def one(specs=specs, prior=prior, method=method):
            model = _static(build, specs, splits, epochs=epochs, seed=seed, prior=prior, **common)
            return _row(method, model, splits, common["device"], seed)

        key = dict(splits=splits, build=build, specs=specs, prior=prior, seed=seed,
                   epochs=epochs, **common)
        rows.append(run_experiment(store, "baseline", key, one))
    return rows


def _baseline_methods(n_layers: int, priors: bool) -> list[tuple[str, list, str | None]]:
    methods = [
        ("RPP", ["rpp"] * n_layers, None),
        ("D4 baseline", ["D4"] * n_layers, None),
        ("C4 baseline", ["C4"] * n_layers, None),
        ("C1 baseline", ["C1"] * n_layers, None),
    ]
    if priors:
        methods += [(f"{g} (prior: {p})", [g] * n_layers, p) for g, p in PRIORS]
    return methods


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
    store: ExperimentStore | None = None,
) -> tuple[pd.DataFrame, dict[int, EvolutionResult]]:
    """Table 3's comparison (§4.5.1): every method trained for
    ``generations * epochs_per_generation`` epochs with SGD (``lr``, no momentum).

    Returns one row per trained network (method, run, architecture, parameters, test error)
    and EquiNAS_E's result per seed (for Fig. 11). ``progress`` is called with a label before
    each run (e.g. a tqdm bar's ``set_description``). ``bn_calibration`` > 0 recomputes the
    batch-norm statistics on that many training images after every training run
    (:func:`~structlab.equivariance.search.calibrate_batch_norm`; for short runs). With a
    ``store``, every search, retraining, Random Static set and baseline of every seed is one
    experiment of it, read back when a previous run finished it.
    """
    epochs = generations * epochs_per_generation
    common = dict(
        optimizer="sgd", lr=lr, batch_size=batch_size, device=device, bn_calibration=bn_calibration
    )
    search = dict(n_layers=n_layers, generations=generations, parents=parents,
                  children_per_parent=children_per_parent,
                  epochs_per_generation=epochs_per_generation, lr=lr, batch_size=batch_size,
                  device=device, bn_calibration=bn_calibration)
    rows, evolutions = [], {}
    say = progress or (lambda label: None)
    expect(store, len(seeds) * (4 + len(_baseline_methods(n_layers, True))))
    for seed in seeds:
        for method, random_select in (("EquiNAS_E", False), ("EquiNAS_E Random Select", True)):
            say(f"{method} (seed {seed})")

            def search_once(method=method, random_select=random_select, seed=seed):
                result = equinas_e(build, splits.train, splits.val, seed=seed,
                                   selection="random" if random_select else "pareto", **search)
                return result, [_row(method, ind.model, splits, device, seed, rank)
                                for rank, ind in enumerate(result.population)]

            key = dict(splits=splits, build=build, seed=seed, random_select=random_select,
                       **search)
            result, found = run_experiment(store, "equinas_e", key, search_once)
            if not random_select:
                evolutions[seed] = result
            rows += found
        say(f"EquiNAS_E Retrain (seed {seed})")
        archs = [ind.groups for ind in evolutions[seed].population]

        def retrain(archs=archs, seed=seed):
            return [_row("EquiNAS_E Retrain",
                         _static(build, arch, splits, epochs=epochs, seed=seed + rank, **common),
                         splits, device, seed, rank)
                    for rank, arch in enumerate(archs)]

        key = dict(splits=splits, build=build, seed=seed, archs=archs, epochs=epochs, **common)
        rows += run_experiment(store, "equinas_e_retrain", key, retrain)
        say(f"Random Static (seed {seed})")

        def random_static_once(seed=seed):
            models = [
                _static(build, arch, splits, epochs=epochs, seed=seed * 1000 + k, **common)
                for k, arch in enumerate(
                    random_discrete_architectures(random_static, n_layers=n_layers, seed=seed)
                )
            ]
            return [_row("Random Static", model, splits, device, seed, rank)
                    for rank, model in enumerate(_best_by_validation(models, splits, parents,
                                                                     device))]

        key = dict(splits=splits, build=build, seed=seed, n=random_static, top=parents,
                   n_layers=n_layers, epochs=epochs, **common)
        rows += run_experiment(store, "random_static_e", key, random_static_once)
        rows += _static_baselines(
            build,
            splits,
            n_layers=n_layers,
            seed=seed,
            epochs=epochs,
            priors=True,
            say=say,
            common=common,
            store=store,
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
    store: ExperimentStore | None = None,
) -> tuple[pd.DataFrame, dict[int, MixtureResult]]:
    """Table 4's comparison (§4.5.2): EquiNAS_D and its ablations, RPP and static baselines,
    all trained for ``epochs`` epochs with Adam (``lr``). Returns one row per trained network
    and EquiNAS_D's result per seed (for Fig. 15). With a ``store``, every search, retraining,
    Random Static set and baseline of every seed is one experiment of it."""
    mixed = [tuple(groups)] * n_layers
    common = dict(
        optimizer="adam", lr=lr, batch_size=batch_size, device=device, bn_calibration=bn_calibration
    )
    rows, searches = [], {}
    say = progress or (lambda label: None)
    expect(store, len(seeds) * (4 + len(_baseline_methods(n_layers, False))))
    for seed in seeds:
        for method, random_z in (("EquiNAS_D", False), ("EquiNAS_D Random Z", True)):
            say(f"{method} (seed {seed})")

            def search_once(method=method, random_z=random_z, seed=seed):
                seed_everything(seed)
                result = equinas_d(build(mixed), splits.train, epochs=epochs, lr=lr,
                                   batch_size=batch_size, device=device, seed=seed,
                                   random_z=random_z, bn_calibration=bn_calibration)
                row = _row(method, result.model, splits, device, seed, arch="mixed")
                return _without_model(result), row

            key = dict(splits=splits, build=build, seed=seed, random_z=random_z, mixed=mixed,
                       epochs=epochs, **common)
            result, row = run_experiment(store, "equinas_d", key, search_once)
            if not random_z:
                searches[seed] = result
            rows.append(row)
        say(f"EquiNAS_D Retrain (seed {seed})")
        alphas = searches[seed].alphas

        def retrain(alphas=alphas, seed=seed):
            seed_everything(seed + 1)
            model = build(mixed)
            set_mixture(model, alphas)
            train_network(model, splits.train, epochs=epochs, seed=seed + 1, **common)
            return _row("EquiNAS_D Retrain", model, splits, device, seed, arch="mixed")

        key = dict(splits=splits, build=build, seed=seed, alphas=alphas, mixed=mixed,
                   epochs=epochs, **common)
        rows.append(run_experiment(store, "equinas_d_retrain", key, retrain))
        say(f"Random Static (seed {seed})")

        def random_static_once(seed=seed):
            models = []
            for k, alpha in enumerate(
                random_mixtures(random_static, n_layers=n_layers, n_groups=len(groups), seed=seed)
            ):
                seed_everything(seed * 1000 + k)
                model = build(mixed)
                set_mixture(model, alpha)
                train_network(model, splits.train, epochs=epochs, seed=seed * 1000 + k, **common)
                models.append(model)
            return [_row("Random Static", model, splits, device, seed, rank, arch="mixed")
                    for rank, model in enumerate(_best_by_validation(models, splits, top, device))]

        key = dict(splits=splits, build=build, seed=seed, n=random_static, top=top, mixed=mixed,
                   epochs=epochs, **common)
        rows += run_experiment(store, "random_static_d", key, random_static_once)
        rows += _static_baselines(
            build,
            splits,
            n_layers=n_layers,
            seed=seed,
            epochs=epochs,
            priors=False,
            say=say,
            common=common,
            store=store,
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
    store: ExperimentStore | None = None,
) -> dict[str, tuple[MixtureResult, float]]:
    """Fig. 12: EquiNAS_D on the data augmented by each group. ``build_splits(group)`` returns
    the splits augmented by ``group``; returns each group's search result and test error."""
    out = {}
    say = progress or (lambda label: None)
    expect(store, len(groups))
    for g in groups:
        say(f"EquiNAS_D on {g}-augmented data")
        splits = build_splits(g)

        def search_once(splits=splits):
            seed_everything(seed)
            result = equinas_d(build([tuple(ALL_GROUPS)] * n_layers), splits.train, epochs=epochs,
                               lr=lr, batch_size=batch_size, device=device, seed=seed,
                               bn_calibration=bn_calibration)
            return _without_model(result), test_error(result.model, splits.test, device=device)

        key = dict(splits=splits, build=build, augmentation=g, seed=seed, epochs=epochs, lr=lr,
                   batch_size=batch_size, n_layers=n_layers, device=device,
                   bn_calibration=bn_calibration)
        out[g] = run_experiment(store, "symmetry_discovery", key, search_once)
    return out


def summarize(rows: pd.DataFrame, order: Sequence[str] | None = None) -> pd.DataFrame:
    """Test error (%) per method: the mean over seeds of each seed's mean over its networks, and
    its standard deviation over seeds (0 for one seed); parameters averaged over networks."""
    grouped = rows.groupby("method", sort=False)
    per_seed = rows.groupby(["method", "seed"], sort=False)["test_error"].mean()
    by_method = per_seed.groupby(level="method", sort=False)
    table = pd.DataFrame(
        {
            "test error (%)": by_method.mean(),
            "std": by_method.std(ddof=0),
            "seeds": by_method.size(),
            "networks": grouped.size(),
            "params": grouped["params"].mean().round().astype(int),
            "stored params": grouped["stored_params"].mean().round().astype(int),
        }
    )
    if order is not None:
        table = table.reindex([m for m in order if m in table.index])
    return table.round({"test error (%)": 2, "std": 2})
