"""Experiment drivers of the neurogenesis chapter (thesis §6.3): every run trains a network with
:func:`structlab.training.fit` and the :class:`~structlab.neurogenesis.Neurogenesis` callback and
returns plain records (one dict per run) that the notebook turns into tables and figures."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import torch
from torch import nn

from structlab.experiment_store import ExperimentStore, expect, run_experiment
from structlab.metrics import count_parameters
from structlab.models import MLP
from structlab.neurogenesis.activations import ModifiedReLU
from structlab.neurogenesis.growth import STRATEGIES, Neurogenesis, PresetSchedule
from structlab.neurogenesis.triggers import GradientTrigger, auxiliary_gradients
from structlab.reproducibility import seed_everything
from structlab.training import Callback, History, TrainState, evaluate, fit, make_loader

__all__ = [
    "build_mlp",
    "train_run",
    "stored_train_run",
    "nf_sweep",
    "mlp_comparison",
    "trigger_costs",
    "gradient_trigger_probe",
    "gamma_sweep",
    "width_frame",
    "conv_run",
    "stored_conv_run",
]


def build_mlp(in_features: int, hidden: Sequence[int], out_features: int) -> MLP:
    """The chapter's MLP: modified ReLU (§6.3.1), Xavier-uniform weights and zero biases
    (Table 8, "Base initialization")."""
    model = MLP(in_features, list(hidden), out_features, activation=ModifiedReLU)
    for layer in model.layers:
        nn.init.xavier_uniform_(layer.weight)
        nn.init.zeros_(layer.bias)
    return model


def train_run(
    train,
    test,
    *,
    hidden: Sequence[int],
    epochs: int,
    batch_size: int,
    lr: float = 3e-4,
    strategy: str | None = None,
    max_width: int | Sequence[int] | None = None,
    schedule: PresetSchedule | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    quiet: bool = True,
    label: str | None = None,
    **growth: Any,
) -> dict[str, Any]:
    """Train one MLP (static when ``strategy`` is None, else growing) with Adam; return its
    record: final ``widths``, ``params``, test ``accuracy``, ``train_time`` (seconds of the
    training loop, growth included), ``trigger_time``, ``init_time``, ``events`` and the width
    log ``width_log``."""
    seed_everything(seed)
    in_features = int(train.inputs[0].numel())
    classes = int(train.targets.max()) + 1
    model = build_mlp(in_features, hidden, classes).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    callbacks = []
    if strategy is not None:
        callbacks.append(
            Neurogenesis(strategy, max_width=max_width, schedule=schedule, seed=seed, **growth)
        )
    history = fit(
        model,
        train,
        epochs=epochs,
        batch_size=batch_size,
        optimizer=opt,
        callbacks=callbacks,
        device=device,
        quiet=quiet,
        seed=seed,
        desc=label or strategy or "static",
    )
    acc = evaluate(model, test, device=device)["accuracy"]
    widths = [s.width for s in model.layer_slots()]
    record = {
        "label": label or strategy or "static",
        "strategy": strategy or "static",
        "schedule": "dynamic" if schedule is None else schedule.kind,
        "widths": widths,
        "neurons": sum(widths),
        "params": count_parameters(model),
        "accuracy": acc,
        "train_time": history.total_time,
        "trigger_time": history.extra.get("trigger_time", [0.0])[0],
        "init_time": history.extra.get("init_time", [0.0])[0],
        "events": len(history.extra.get("events", [])),
        "width_log": history.extra.get("widths", []),
        "seed": seed,
    }
    if strategy is None:
        record["schedule"] = "static"
    return record


def stored_train_run(store: ExperimentStore | None, train, test, **kwargs: Any) -> dict[str, Any]:
    """:func:`train_run` as one experiment of ``store`` (read back when a previous run with the
    same data, arguments and code finished it); ``quiet`` does not enter its key."""
    key = {"train": train, "test": test, **{k: v for k, v in kwargs.items() if k != "quiet"}}
    return run_experiment(store, "train_run", key, lambda: train_run(train, test, **kwargs))


def nf_sweep(
    n_fs: Sequence[int],
    strategies: Sequence[str],
    *,
    depths: Sequence[int] = (1, 2),
    initial: int = 4,
    max_width: int = 512,
    epochs: int = 5,
    batch_size: int = 128,
    buffer_size: int = 1024,
    lr: float = 3e-4,
    seed: int = 0,
    device="cpu",
    quiet: bool = True,
    store: ExperimentStore | None = None,
    **growth: Any,
) -> pd.DataFrame:
    """Thesis Fig. 28: final hidden widths of MLPs grown on the generated data of §6.3.2
    (``nf-features``) against the number of independent features ``n_f``. One row per run and
    hidden layer: its final ``width`` and ``width_75``, the width after three quarters of the
    trigger evaluations (equal to ``width`` once growth has stopped)."""
    from structlab.data import load_dataset

    rows = []
    expect(store, len(n_fs) * len(depths) * len(strategies))
    for n_f in n_fs:
        train = load_dataset("nf-features", "train", n_f=n_f, seed=seed)
        test = load_dataset("nf-features", "test", n_f=n_f, seed=seed)
        for depth in depths:
            for strategy in strategies:
                rec = stored_train_run(
                    store,
                    train,
                    test,
                    hidden=[initial] * depth,
                    epochs=epochs,
                    batch_size=batch_size,
                    lr=lr,
                    strategy=strategy,
                    max_width=max_width,
                    buffer_size=buffer_size,
                    seed=seed,
                    device=device,
                    quiet=quiet,
                    **growth,
                )
                log = rec["width_log"]
                late = log[(3 * (len(log) - 1)) // 4] if log else {}
                late_widths = [v for k, v in late.items() if k != "step"] or rec["widths"]
                for layer, width in enumerate(rec["widths"]):
                    rows.append(
                        {
                            "n_f": n_f,
                            "hidden_layers": depth,
                            "strategy": strategy,
                            "layer": layer + 1,
                            "width": width,
                            "width_75": late_widths[layer],
                            "accuracy": rec["accuracy"],
                        }
                    )
    return pd.DataFrame(rows)


def mlp_comparison(
    train,
    test,
    *,
    dynamic: Sequence[str],
    preset: Sequence[str],
    schedules: Sequence[str] = ("linear", "batched"),
    initial: int = 64,
    medium: int = 256,
    maximum: int = 784,
    depth: int = 2,
    epochs: int = 20,
    batch_size: int = 512,
    lr: float = 3e-4,
    seeds: Sequence[int] = (0,),
    device="cpu",
    quiet: bool = True,
    store: ExperimentStore | None = None,
    **growth: Any,
) -> list[dict[str, Any]]:
    """Thesis Fig. 29-30 (§6.3.3): dynamic strategies, initializations under the preset
    schedules (from ``initial`` to ``medium``) and the static Small / Medium / Big networks.
    With a ``store``, each run of each seed is one experiment of it."""
    records = []
    common = dict(epochs=epochs, batch_size=batch_size, lr=lr, device=device, quiet=quiet)
    expect(store, len(seeds) * (3 + len(dynamic) + len(schedules) * len(preset)))
    for seed in seeds:
        for name, width in (
            ("Small static", initial),
            ("Medium static", medium),
            ("Big static", maximum),
        ):
            records.append(
                stored_train_run(store, train, test, hidden=[width] * depth, seed=seed,
                                 label=name, **common)
            )
        for strategy in dynamic:
            records.append(
                stored_train_run(
                    store,
                    train,
                    test,
                    hidden=[initial] * depth,
                    strategy=strategy,
                    max_width=maximum,
                    seed=seed,
                    **common,
                    **growth,
                )
            )
        for kind in schedules:
            for strategy in preset:
                sched = PresetSchedule(final=medium, kind=kind)
                records.append(
                    stored_train_run(
                        store,
                        train,
                        test,
                        hidden=[initial] * depth,
                        strategy=strategy,
                        max_width=maximum,
                        schedule=sched,
                        seed=seed,
                        label=f"{strategy} ({kind})",
                        **common,
                        **growth,
                    )
                )
    return records


def trigger_costs(
    train,
    *,
    hidden: Sequence[int],
    strategies: Sequence[str] = tuple(STRATEGIES),
    batch_size: int = 512,
    steps: int = 10,
    lr: float = 3e-4,
    seed: int = 0,
    device="cpu",
    **growth: Any,
) -> pd.DataFrame:
    """Thesis Table 9: seconds per mini-batch of evaluating each strategy's trigger on every
    layer (Gram matrices and their eigenvalues, auxiliary gradients; no growth: the maximum
    width is the current width), next to the seconds of one training step of the same static
    network. The triggers run inside real training steps, so those that reuse the training
    pass are measured as they run in training.

    ``ratio`` is (step + trigger) / step, the cost of a growing network's step relative to the
    static network's, as in the table.
    """
    seed_everything(seed)
    in_features = int(train.inputs[0].numel())
    classes = int(train.targets.max()) + 1
    model = build_mlp(in_features, hidden, classes).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loader = make_loader(train, batch_size, shuffle=True, seed=seed, drop_last=True)
    batches = []
    for x, y in loader:
        batches.append((x.to(device), y.to(device)))
        if len(batches) == steps + 1:
            break
    widths = [s.width for s in model.layer_slots()]

    def train_step(x, y, cb=None, state=None):
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        if cb is not None:
            state.inputs, state.targets = x, y
            state.step += 1
            cb.on_step_end(state)

    train_step(*batches[0])  # warm-up
    t = time.perf_counter()
    for x, y in batches[1:]:
        train_step(x, y)
    step = (time.perf_counter() - t) / steps

    rows = []
    for strategy in strategies:
        cb = Neurogenesis(strategy, max_width=widths, seed=seed, **growth)
        state = TrainState(
            model=model,
            optimizer=opt,
            device=torch.device(device),
            history=History(),
            total_steps=steps,
        )
        cb.on_train_begin(state)
        # warm-up: full buffers and the baselines, as after the first steps of training
        for _ in range(-(-cb.buffer_size // batch_size) + 1):
            train_step(*batches[0], cb, state)
        cb.trigger_time = 0.0
        for x, y in batches[1:]:
            train_step(x, y, cb, state)
        cb.on_train_end(state)
        per_batch = cb.trigger_time / steps
        rows.append(
            {
                "strategy": strategy,
                "trigger_s": per_batch,
                "step_s": step,
                "ratio": (step + per_batch) / step,
            }
        )
    return pd.DataFrame(rows)


class _GradientProbe(Callback):
    """Evaluates eq. 32 on every layer after the steps in ``steps`` without growing anything,
    and stops training after the last of them."""

    def __init__(self, steps: Sequence[int], scale: float) -> None:
        self.steps, self.scale = sorted(set(steps)), scale
        self.rows: list[dict[str, Any]] = []

    def on_step_end(self, state: TrainState) -> None:
        if state.step in self.steps:
            slots = list(state.model.layer_slots())
            aux = auxiliary_gradients(state.model, slots, state.inputs, state.targets)
            trigger = GradientTrigger(self.scale)
            for layer, slot in enumerate(slots):
                a = aux[slot.name]
                count = trigger(slot.name, a)  # what T_grad would add after this step
                norms = a.unit_norms.double()
                top = float(torch.linalg.svdvals(a.G.double())[0])
                threshold = self.scale * float(norms.sum())
                self.rows.append(
                    {
                        "step": state.step,
                        "layer": layer + 1,
                        "width": slot.width,
                        "top_sv": top,
                        "threshold": threshold,
                        "ratio": top / threshold,
                        "mean_unit_norm": float(norms.mean()),
                        "sv_over_unit": top / float(norms.mean()),
                        "count": count,
                    }
                )
        if state.step >= self.steps[-1]:
            state.stop = True


def gradient_trigger_probe(
    train,
    *,
    hidden: Sequence[int],
    steps: Sequence[int],
    batch_size: int = 512,
    lr: float = 3e-4,
    grad_scale: float = 1.0,
    seed: int = 0,
    device="cpu",
    quiet: bool = True,
) -> pd.DataFrame:
    """Eq. 32 measured on a static MLP (what a dynamic GradMax, Firefly or NeST run trains while
    its trigger stays silent): after each step in ``steps`` (1 = after the first step), for every
    hidden layer, the largest singular value ``top_sv`` of the auxiliary gradient, the trigger's
    ``threshold`` (``grad_scale`` times the summed fan-in and fan-out gradient norms of the
    layer's units), their ``ratio``, the mean gradient norm of one unit ``mean_unit_norm``,
    ``sv_over_unit`` (``top_sv`` over that mean) and ``count``, the units ``T_grad`` would add.

    The network, data order and optimizer are those of :func:`train_run` with the same
    arguments; the probe's extra forward/backward passes do not change the training."""
    if not steps or min(steps) < 1:
        raise ValueError(f"steps must be positive step numbers, got {list(steps)}")
    seed_everything(seed)
    in_features = int(train.inputs[0].numel())
    classes = int(train.targets.max()) + 1
    model = build_mlp(in_features, hidden, classes).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    per_epoch = len(make_loader(train, batch_size, shuffle=True, seed=seed))
    probe = _GradientProbe(steps, grad_scale)
    fit(
        model,
        train,
        epochs=-(-max(steps) // per_epoch),
        batch_size=batch_size,
        optimizer=opt,
        callbacks=[probe],
        device=device,
        quiet=quiet,
        seed=seed,
        desc="eq. 32 probe",
    )
    return pd.DataFrame(probe.rows)


def gamma_sweep(
    train,
    test,
    *,
    gammas: Sequence[float],
    metrics: Sequence[str] = ("ed", "og"),
    strategy: str = "north-select",
    initial: int = 64,
    maximum: int = 784,
    depth: int = 2,
    epochs: int = 5,
    batch_size: int = 512,
    lr: float = 3e-4,
    seed: int = 0,
    device="cpu",
    quiet: bool = True,
    store: ExperimentStore | None = None,
    **growth: Any,
) -> list[dict[str, Any]]:
    """Thesis Fig. 33 (§6.3.5): activation-based growth with phi_ED or phi_OG across
    ``gamma_a``; with a ``store``, one experiment per run."""
    records = []
    expect(store, len(metrics) * len(gammas))
    for metric in metrics:
        for gamma in gammas:
            rec = stored_train_run(
                store,
                train,
                test,
                hidden=[initial] * depth,
                strategy=strategy,
                max_width=maximum,
                epochs=epochs,
                batch_size=batch_size,
                lr=lr,
                seed=seed,
                device=device,
                quiet=quiet,
                metric=metric,
                gamma_a=gamma,
                label=f"{metric} {gamma}",
                **growth,
            )
            rec = {**rec, "metric": metric, "gamma": gamma}
            records.append(rec)
    return records


def width_frame(records: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """The width logs of growing runs as one long frame: label, step, layer, width."""
    rows = []
    for rec in records:
        for entry in rec.get("width_log", []):
            for layer, (_name, width) in enumerate((k, v) for k, v in entry.items() if k != "step"):
                rows.append(
                    {
                        "label": rec["label"],
                        "step": entry["step"],
                        "layer": layer + 1,
                        "width": width,
                    }
                )
    return pd.DataFrame(rows)


def conv_run(
    train,
    test,
    *,
    arch: str = "vgg11",
    strategy: str | None = "north-select",
    width: float = 0.25,
    max_factor: float = 2.0,
    epochs: int = 1,
    batch_size: int = 128,
    lr: float = 3e-4,
    gamma_a: float = 0.9,
    buffer_size: int = 128,
    seed: int = 0,
    device="cpu",
    quiet: bool = True,
    label: str | None = None,
    widths: Mapping[str, int] | None = None,
    **growth: Any,
) -> dict[str, Any]:
    """Thesis §6.3.4 (Fig. 31-32): a VGG-11 or WideResNet-28 starting at ``width`` times the
    standard widths, growing up to ``max_factor`` times them (2 for VGG-11, 6 for WRN-28), with
    Adam and cosine annealing; static when ``strategy`` is None. ``relative_widths`` are
    reported relative to the standard network's, ``widths`` as unit counts per slot.

    ``widths`` (VGG-11, static only): explicit widths per slot (``conv0`` ... ``dense1``), for
    example the final widths of a grown run, instead of ``width`` times the standard ones."""
    from structlab.models import VGG, VGG_CONFIGS, WideResNet

    if widths is not None and (arch != "vgg11" or strategy is not None):
        raise ValueError("explicit widths are for a static VGG-11 (strategy=None)")

    seed_everything(seed)
    channels, size = int(train.inputs.shape[1]), int(train.inputs.shape[-1])
    classes = int(train.targets.max()) + 1

    def make(mult: float, explicit: Mapping[str, int] | None = None) -> nn.Module:
        if arch == "vgg11":
            cfg, dense = "vgg11", None
            if explicit is not None:
                layout, std_dense = VGG_CONFIGS["vgg11"]
                convs = iter(explicit[f"conv{i}"] for i in range(len(layout)))
                cfg = [e if e == "M" else next(convs) for e in layout]
                dense = [explicit[f"dense{i}"] for i in range(len(std_dense))]
                mult = 1.0
            return VGG(
                cfg,
                width_multiplier=mult,
                in_channels=channels,
                num_classes=classes,
                input_size=size,
                activation=ModifiedReLU,
                dense=dense,
            )
        if arch == "wrn28":
            return WideResNet(
                28,
                widen_factor=mult,
                num_classes=classes,
                in_channels=channels,
                activation=ModifiedReLU,
            )
        raise ValueError(f"unknown arch {arch!r}: 'vgg11' or 'wrn28'")

    standard = make(1.0)
    model = make(width, widths).to(device)
    callbacks = []
    if strategy is not None:
        cb = Neurogenesis(
            strategy, max_width=0, gamma_a=gamma_a, buffer_size=buffer_size, seed=seed, **growth
        )
        groups = cb._groups(model)
        std = standard.widths()
        cb.max_width = [max(1, round(max_factor * std[g[0].name])) for g in groups]
        callbacks.append(cb)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, epochs))
    history = fit(
        model,
        train,
        epochs=epochs,
        batch_size=batch_size,
        optimizer=opt,
        scheduler=sched,
        callbacks=callbacks,
        device=device,
        quiet=quiet,
        seed=seed,
        desc=label or strategy or "static",
    )
    acc = evaluate(model, test, device=device, batch_size=256)["accuracy"]
    std = standard.widths()
    return {
        "label": label or strategy or "static",
        "arch": arch,
        "strategy": strategy or "static",
        "relative_widths": {k: v / std[k] for k, v in model.widths().items()},
        "widths": model.widths(),
        "params": count_parameters(model),
        "accuracy": acc,
        "train_time": history.total_time,
        "trigger_time": history.extra.get("trigger_time", [0.0])[0],
        "init_time": history.extra.get("init_time", [0.0])[0],
        "events": len(history.extra.get("events", [])),
        "seed": seed,
    }


def stored_conv_run(store: ExperimentStore | None, train, test, **kwargs: Any) -> dict[str, Any]:
    """:func:`conv_run` as one experiment of ``store``; ``quiet`` does not enter its key."""
    key = {"train": train, "test": test, **{k: v for k, v in kwargs.items() if k != "quiet"}}
    return run_experiment(store, "conv_run", key, lambda: conv_run(train, test, **kwargs))
