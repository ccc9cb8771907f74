"""Experiment drivers of the "Neural operators" chapter: each operator applied to a trained network.

The notebook only calls these functions; they return tidy ``pandas`` frames (one row per
measurement) so the chapter can tabulate and plot them. Everything is seeded and takes a
``device``; loops show a ``tqdm`` bar unless ``quiet``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import pandas as pd
import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm import tqdm

from structlab.operators.masks import (
    connection_gradients,
    get_mask,
    prunable_modules,
    prune_global,
    regrow_connections,
    sparsity,
    step_amount,
)
from structlab.operators.saliency import (
    activation_statistics,
    greedy_redundant_units,
    lowest_units,
    redundancy_matrix,
    taylor_saliencies,
    unit_saliency,
)
from structlab.operators.units import add_units, remove_units
from structlab.training import evaluate, fit, make_loader

__all__ = [
    "OptimizerFactory",
    "remap_gradients",
    "one_shot_pruning",
    "iterative_pruning",
    "structured_pruning",
    "creation_check",
    "prune_regrow_cycles",
    "geometric_schedule",
    "pruning_seed_study",
    "pruning_step_sweep",
]

OptimizerFactory = Callable[[nn.Module], torch.optim.Optimizer]


def _acc(model: nn.Module, data: Dataset, device) -> float:
    return float(evaluate(model, data, device=device)["accuracy"])


def remap_gradients(
    source: nn.Module, target: nn.Module, gradients: dict[nn.Module, torch.Tensor]
) -> dict[nn.Module, torch.Tensor]:
    """Key ``gradients`` (computed on ``source``) by the matching modules of a copy ``target``."""
    return {
        t: gradients[s]
        for s, t in zip(prunable_modules(source), prunable_modules(target))
        if s in gradients
    }


def _gradients(model, train, device, batches, seed):
    loader = make_loader(train, 256, shuffle=True, seed=seed)
    return connection_gradients(model, loader, device=device, max_batches=batches)


def one_shot_pruning(
    model: nn.Module,
    train: Dataset,
    test: Dataset,
    sparsities: Sequence[float],
    *,
    methods: Sequence[str] = ("magnitude", "taylor", "random"),
    optimizer_factory: OptimizerFactory | None = None,
    finetune_epochs: Sequence[int] | int = 0,
    batch_size: int = 128,
    gradient_batches: int = 8,
    device: str | torch.device = "cpu",
    seed: int = 0,
    quiet: bool = False,
) -> pd.DataFrame:
    """Global synaptic pruning of a trained ``model`` at once to each sparsity (§3.3.2).

    For every method and target sparsity a copy of ``model`` is pruned and evaluated; with
    ``finetune_epochs`` (one value, or one per sparsity) and an ``optimizer_factory`` the copy is
    then fine-tuned with its mask fixed and evaluated again. Taylor scores use the gradient of the
    dense model on ``gradient_batches`` batches of 256 training images.

    Returns rows ``method, schedule="one-shot", sparsity, accuracy, finetuned_accuracy,
    finetune_epochs``.
    """
    if any(not 0 <= t < 1 for t in sparsities):
        raise ValueError(f"sparsities must lie in [0, 1), got {sparsities}")
    if isinstance(finetune_epochs, int):
        finetune_epochs = [finetune_epochs] * len(sparsities)
    if len(finetune_epochs) != len(sparsities):
        raise ValueError("finetune_epochs needs one value per sparsity")
    if any(e > 0 for e in finetune_epochs) and optimizer_factory is None:
        raise ValueError("fine-tuning needs an optimizer_factory")
    grads = _gradients(model, train, device, gradient_batches, seed) if "taylor" in methods else {}
    rows = []
    bar = tqdm(total=len(methods) * len(sparsities), desc="one-shot pruning", disable=quiet)
    for method in methods:
        for target, epochs in zip(sparsities, finetune_epochs):
            pruned = copy.deepcopy(model)
            prune_global(
                pruned, float(target), method=method,
                gradients=remap_gradients(model, pruned, grads) if method == "taylor" else None,
                generator=torch.Generator().manual_seed(seed),
            )
            row = {"method": method, "schedule": "one-shot", "sparsity": sparsity(pruned),
                   "accuracy": _acc(pruned, test, device), "finetune_epochs": epochs}
            if epochs > 0:
                opt = optimizer_factory(pruned)
                fit(pruned, train, epochs=epochs, batch_size=batch_size, optimizer=opt,
                    device=device, seed=seed, quiet=True)
                row["finetuned_accuracy"] = _acc(pruned, test, device)
            rows.append(row)
            bar.update(1)
    bar.close()
    return pd.DataFrame(rows)


def iterative_pruning(
    model: nn.Module,
    train: Dataset,
    test: Dataset,
    sparsities: Sequence[float],
    *,
    optimizer_factory: OptimizerFactory,
    methods: Sequence[str] = ("magnitude", "taylor", "random"),
    finetune_epochs: int = 1,
    batch_size: int = 128,
    gradient_batches: int = 8,
    device: str | torch.device = "cpu",
    seed: int = 0,
    quiet: bool = False,
) -> pd.DataFrame:
    """Iterative global synaptic pruning with fine-tuning (§3.3.1, "Scheduling Pruning").

    A copy of ``model`` is pruned to each sparsity of the increasing list in turn (a fraction
    :func:`step_amount` of the surviving connections), re-scoring the survivors each time (Taylor
    scores are recomputed on the current network), and fine-tuned ``finetune_epochs`` epochs
    after every step. The optimizer lives through the whole schedule; its state of the pruned
    connections is reset.

    Returns rows ``method, schedule="iterative", sparsity, accuracy`` (before fine-tuning),
    ``finetuned_accuracy`` and ``finetune_epochs`` (cumulative).
    """
    if list(sparsities) != sorted(sparsities) or any(not 0 <= t < 1 for t in sparsities):
        raise ValueError(f"iterative pruning needs increasing sparsities in [0, 1), got "
                         f"{sparsities}")
    rows = []
    bar = tqdm(total=len(methods) * len(sparsities), desc="iterative pruning", disable=quiet)
    for method in methods:
        pruned = copy.deepcopy(model)
        opt = optimizer_factory(pruned)
        gen = torch.Generator().manual_seed(seed)
        current, total_epochs = 0.0, 0
        for target in sparsities:
            grads = _gradients(pruned, train, device, gradient_batches, seed) if (
                method == "taylor") else None
            prune_global(pruned, step_amount(current, float(target)), method=method,
                         gradients=grads, generator=gen, optimizer=opt)
            current = sparsity(pruned)
            acc = _acc(pruned, test, device)
            fit(pruned, train, epochs=finetune_epochs, batch_size=batch_size, optimizer=opt,
                device=device, seed=seed + total_epochs, quiet=True)
            total_epochs += finetune_epochs
            rows.append({"method": method, "schedule": "iterative", "sparsity": current,
                         "accuracy": acc, "finetuned_accuracy": _acc(pruned, test, device),
                         "finetune_epochs": total_epochs})
            bar.update(1)
    bar.close()
    return pd.DataFrame(rows)


def structured_pruning(
    model: nn.Module,
    test: Dataset,
    fractions: Sequence[float],
    *,
    data: Dataset,
    methods: Sequence[str] = ("weight_norm", "activation", "dormancy", "taylor", "redundancy",
                              "random"),
    slots: Sequence[str] | None = None,
    batches: int = 8,
    device: str | torch.device = "cpu",
    seed: int = 0,
    quiet: bool = False,
) -> pd.DataFrame:
    """Neuron removal (structured pruning, §3.3.3): remove the fraction ``f`` of least salient
    units of every slot (channels or neurons) of a trained ``model`` and measure the accuracy,
    without fine-tuning.

    Saliencies are measured once on the unpruned model over ``batches`` batches of 256 images of
    ``data``; ``"redundancy"`` removes greedily (one unit of each redundant pair at a time).

    Returns rows ``method, fraction, units_removed, width_after, accuracy`` (plus ``fraction=0``).
    """
    if any(not 0 <= f < 1 for f in fractions):
        raise ValueError(f"fractions of units to remove must lie in [0, 1), got {fractions}")
    names = list(slots) if slots is not None else [s.name for s in model.layer_slots()]
    loader = make_loader(data, 256, shuffle=True, seed=seed)
    batches_list = [b for _, b in zip(range(batches), loader)]
    stats = activation_statistics(model, names, batches_list, device=device)
    taylor = taylor_saliencies(model, names, batches_list, device=device) if (
        "taylor" in methods) else {}
    base = _acc(model, test, device)
    total = sum(model.slot(n).width for n in names)
    rows = [{"method": m, "fraction": 0.0, "units_removed": 0, "width_after": total,
             "accuracy": base} for m in methods]
    bar = tqdm(total=len(methods) * len(fractions), desc="structured pruning", disable=quiet)
    for method in methods:
        gen = torch.Generator().manual_seed(seed)
        scores = {}
        for n in names:
            if method == "taylor":
                scores[n] = taylor[n]
            elif method != "redundancy":
                scores[n] = unit_saliency(model, n, method, stats=stats[n], generator=gen)
        for f in fractions:
            pruned = copy.deepcopy(model)
            removed = 0
            for n in names:
                slot = pruned.slot(n)
                k = min(int(round(f * slot.width)), slot.width - 1)
                if method == "redundancy":
                    idx = greedy_redundant_units(
                        redundancy_matrix(stats[n].cosine, stats[n].gram.diagonal()), k)
                else:
                    idx = lowest_units(scores[n], k)
                remove_units(pruned, slot, idx)
                removed += k
            rows.append({"method": method, "fraction": float(f), "units_removed": removed,
                         "width_after": total - removed, "accuracy": _acc(pruned, test, device)})
            bar.update(1)
    bar.close()
    return pd.DataFrame(rows)


@torch.no_grad()
def creation_check(
    model: nn.Module,
    inputs: torch.Tensor,
    k: int,
    *,
    zero: str = "fan_out",
    slots: Sequence[str] | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
    dtype: torch.dtype | None = None,
) -> pd.DataFrame:
    """Neuron creation on a copy of ``model`` (in evaluation mode), one slot at a time: add ``k``
    units with zero fan-out (default-initialised fan-in) or zero fan-in (default-initialised
    fan-out), and measure how much the outputs on ``inputs`` move.

    With ``dtype`` (e.g. ``torch.float64``) the copy and the inputs are cast first. In exact
    arithmetic the change is zero; in floating point, a matrix product over a longer inner
    dimension may group its sums differently, which leaves rounding-level differences.

    Returns rows ``slot, kind, consumers (the flatten factor / group), width, zero, max_abs_change,
    predictions_changed``.
    """
    if zero not in ("fan_in", "fan_out"):
        raise ValueError(f"zero must be 'fan_in' or 'fan_out', got {zero!r}")
    grown = copy.deepcopy(model).eval()
    x = inputs.to(device)
    if dtype is not None:
        grown, x = grown.to(dtype), x.to(dtype)
    before = grown(x)
    gen = torch.Generator().manual_seed(seed)
    rows = []
    names = list(slots) if slots is not None else [s.name for s in grown.layer_slots()]
    for n in names:
        slot = grown.slot(n)
        where = ("residual group" if slot.is_group else
                 "flatten" if any(c.spatial > 1 for c in slot.consumers) else slot.kind)
        spec = dict(fan_in="zeros", fan_out="default") if zero == "fan_in" else dict(
            fan_in="default", fan_out="zeros")
        add_units(grown, slot, k, generator=gen, **spec)
        after = grown(x)
        rows.append({"slot": n, "kind": where, "width": slot.width, "zero": zero,
                     "max_abs_change": float((after - before).abs().max()),
                     "predictions_changed": int((after.argmax(1) != before.argmax(1)).sum())})
    return pd.DataFrame(rows)


def prune_regrow_cycles(
    model: nn.Module,
    train: Dataset,
    test: Dataset,
    *,
    target_sparsity: float,
    regrow_fraction: float,
    cycles: int,
    optimizer_factory: OptimizerFactory,
    strategies: Sequence[str] = ("none", "random", "gradient"),
    finetune_epochs: int = 1,
    batch_size: int = 128,
    gradient_batches: int = 8,
    device: str | torch.device = "cpu",
    seed: int = 0,
    quiet: bool = False,
) -> pd.DataFrame:
    """Synaptic pruning and synaptogenesis in cycles at constant sparsity (§3.4.2; NeST,
    Dai et al. 2019; Deep Rewiring, Bellec et al. 2018).

    ``model`` is pruned by magnitude to ``target_sparsity`` at once and fine-tuned. Every cycle
    then (i) prunes ``n = regrow_fraction x (active connections)`` more connections by magnitude,
    (ii) grows ``n`` dormant connections at zero, where ``|dL/dw|`` is largest (``"gradient"``,
    the NeST rule) or at random (``"random"``), and (iii) fine-tunes ``finetune_epochs`` epochs.
    ``"none"`` keeps the mask fixed and only fine-tunes (static sparse training).

    Returns rows ``strategy, cycle, stage, sparsity, accuracy`` with stages ``"start"`` (after
    the initial pruning and fine-tuning), ``"pruned"`` (after step i) and ``"regrown"`` (after
    steps ii-iii).
    """
    for strategy in strategies:
        if strategy not in ("none", "random", "gradient"):
            raise ValueError(f"unknown strategy {strategy!r}")
    if not 0 < regrow_fraction < 1:
        raise ValueError(f"regrow_fraction must lie in (0, 1), got {regrow_fraction}")
    base = copy.deepcopy(model)
    prune_global(base, float(target_sparsity))
    opt = optimizer_factory(base)
    fit(base, train, epochs=finetune_epochs, batch_size=batch_size, optimizer=opt,
        device=device, seed=seed, quiet=True)
    start_acc = _acc(base, test, device)
    rows = []
    bar = tqdm(total=len(strategies) * cycles, desc="prune and regrow", disable=quiet)
    for strategy in strategies:
        net = copy.deepcopy(base)
        opt = optimizer_factory(net)
        gen = torch.Generator().manual_seed(seed)
        rows.append({"strategy": strategy, "cycle": 0, "stage": "start",
                     "sparsity": sparsity(net), "accuracy": start_acc})
        for cycle in range(1, cycles + 1):
            if strategy != "none":
                active = sum(int(get_mask(m).sum()) for m in prunable_modules(net))
                n = int(round(regrow_fraction * active))
                prune_global(net, n, optimizer=opt)
                rows.append({"strategy": strategy, "cycle": cycle, "stage": "pruned",
                             "sparsity": sparsity(net), "accuracy": _acc(net, test, device)})
                grads = _gradients(net, train, device, gradient_batches, seed + cycle) if (
                    strategy == "gradient") else None
                regrow_connections(net, n, method=strategy, gradients=grads, generator=gen,
                                   optimizer=opt)
            fit(net, train, epochs=finetune_epochs, batch_size=batch_size, optimizer=opt,
                device=device, seed=seed + cycle, quiet=True)
            rows.append({"strategy": strategy, "cycle": cycle, "stage": "regrown",
                         "sparsity": sparsity(net), "accuracy": _acc(net, test, device)})
            bar.update(1)
    bar.close()
    return pd.DataFrame(rows)


def geometric_schedule(target: float, rounds: int) -> list[float]:
    """Sparsities of ``rounds`` pruning steps that remove the same fraction of the surviving
    connections each time and end at ``target``: ``1 - (1 - target)^(k / rounds)``."""
    if not 0 < target < 1 or rounds < 1:
        raise ValueError(f"need a target in (0, 1) and rounds >= 1, got {target}, {rounds}")
    return [1 - (1 - target) ** (k / rounds) for k in range(1, rounds + 1)]


def _seed_study(train: Dataset, test: Dataset, *, mlp_hidden: Sequence[int], seed: int,
                epochs: int, lr: float, finetune_lr: float, batch_size: int, target: float,
                rounds: int, finetune_epochs: int, low_sparsities: Sequence[float],
                device: str) -> dict[str, float]:
    from structlab.models import MLP
    from structlab.reproducibility import seed_everything

    seed_everything(seed)
    model = MLP(int(train[0][0].numel()), list(mlp_hidden), int(train.num_classes)).to(device)
    fit(model, train, epochs=epochs, batch_size=batch_size, device=device, seed=seed, quiet=True,
        optimizer=torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9))

    def sgd(net: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.SGD(net.parameters(), lr=finetune_lr, momentum=0.9)

    out = {"dense": _acc(model, test, device)}
    iterative = iterative_pruning(model, train, test, geometric_schedule(target, rounds),
                                  optimizer_factory=sgd, methods=("magnitude",),
                                  finetune_epochs=finetune_epochs, batch_size=batch_size,
                                  device=device, seed=seed, quiet=True)
    out["iterative"] = float(iterative.finetuned_accuracy.iloc[-1])
    out["iterative_sparsity"] = float(iterative.sparsity.iloc[-1])
    budget = rounds * finetune_epochs
    one_shot = one_shot_pruning(model, train, test, [target, *low_sparsities],
                                methods=("magnitude",), optimizer_factory=sgd,
                                finetune_epochs=[budget] + [finetune_epochs] * len(low_sparsities),
                                batch_size=batch_size, device=device, seed=seed, quiet=True)
    out["one_shot"] = float(one_shot.finetuned_accuracy.iloc[0])
    out["one_shot_sparsity"] = float(one_shot.sparsity.iloc[0])
    for s, acc in zip(low_sparsities, one_shot.finetuned_accuracy.iloc[1:]):
        out[f"pruned_{s:g}"] = float(acc)
    control = copy.deepcopy(model)  # the unpruned network, trained as long as the pruned ones
    fit(control, train, epochs=finetune_epochs, batch_size=batch_size, optimizer=sgd(control),
        device=device, seed=seed, quiet=True)
    out["dense_finetuned"] = _acc(control, test, device)
    return out


def pruning_seed_study(
    train: Dataset,
    test: Dataset,
    *,
    seeds: Sequence[int],
    mlp_hidden: Sequence[int],
    epochs: int,
    lr: float,
    finetune_lr: float,
    batch_size: int = 128,
    target: float = 0.9,
    rounds: int = 5,
    finetune_epochs: int = 1,
    low_sparsities: Sequence[float] = (0.2, 0.5),
    device: str | torch.device = "cpu",
    store=None,
    quiet: bool = False,
) -> pd.DataFrame:
    """The pruning claims of the survey over seeds (thesis §3.3; CLAIMS.md 3.5 and 3.6).

    Per seed, an MLP is trained from that seed; then, by global magnitude pruning,
    (i) **iterative** pruning to ``target`` in ``rounds`` geometric steps with
    ``finetune_epochs`` of fine-tuning after each, against **one-shot** pruning to ``target``
    followed by the same ``rounds * finetune_epochs`` epochs; (ii) one-shot pruning to each of
    ``low_sparsities`` with ``finetune_epochs`` of fine-tuning, against the unpruned network
    fine-tuned as long (``dense_finetuned``). Each seed is one experiment of ``store``.

    Returns one row per seed: ``seed, dense, iterative, one_shot, pruned_<s>...,
    dense_finetuned`` (test accuracies in [0, 1]) and the sparsities reached.
    """
    from structlab.experiment_store import expect, run_experiment
    from structlab.reproducibility import get_device

    dev = get_device(device)
    expect(store, len(seeds))
    rows = []
    for seed in tqdm(list(seeds), desc="seeds", disable=quiet):
        params = {"train": train, "test": test, "mlp_hidden": list(mlp_hidden), "seed": seed,
                  "epochs": epochs, "lr": lr, "finetune_lr": finetune_lr,
                  "batch_size": batch_size, "target": target, "rounds": rounds,
                  "finetune_epochs": finetune_epochs, "low_sparsities": list(low_sparsities),
                  "device": dev.type}
        result = run_experiment(store, "pruning-seed-study", params, lambda seed=seed: _seed_study(
            train, test, mlp_hidden=mlp_hidden, seed=seed, epochs=epochs, lr=lr,
            finetune_lr=finetune_lr, batch_size=batch_size, target=target, rounds=rounds,
            finetune_epochs=finetune_epochs, low_sparsities=low_sparsities, device=str(dev)))
        rows.append({"seed": seed, **result})
    return pd.DataFrame(rows)


def pruning_step_sweep(landscape, start: tuple[float, float], steps: Sequence[int]
                       ) -> pd.DataFrame:
    """Thesis Fig. 5 as a sweep (CLAIMS.md 3.3): for each step ``k`` of ``steps``, descent from
    ``start`` with ``w2`` created at 0 and pruned at step ``k``.

    The *ridge* is the barrier of the one-parameter loss ``L(w1, 0)`` between the global side
    (``w1 = -1``) and the local minimum ``s1``. Returns per step: ``w1`` at the pruning step,
    whether it had crossed the ridge, the final ``w1`` and loss, and whether descent ended on the
    global side of the ridge.
    """
    import numpy as np

    from structlab.operators.landscape import descend

    s1 = float(landscape.line_minima()[-1])
    xs = np.linspace(-1.0, s1, 20001)
    ridge = float(xs[np.argmax(landscape.loss(xs, 0.0))])
    rows = []
    for k in steps:
        path = descend(landscape, start, prune_at=int(k))
        rows.append({"prune_at": int(k), "w1_at_pruning": float(path[int(k), 0]),
                     "crossed_ridge": bool(path[int(k), 0] < ridge),
                     "final_w1": float(path[-1, 0]),
                     "final_loss": float(landscape.loss(*path[-1])),
                     "ends_global_side": bool(path[-1, 0] < ridge), "ridge": ridge})
    return pd.DataFrame(rows)
