"""The chapter's stored experiments (book profile: ``records/heuristics_nas``).

Every function here is one experiment of an :class:`~structlab.experiment_store.ExperimentStore`
whose result holds numbers and plain records only, no weights, so that the book's records can be
committed and a fresh clone re-renders the chapter from them:

* :func:`search_experiment`: one Noisy Heuristics NAS run (Fig. 3) with every layer addition and
  removal logged (:class:`DepthLog`: the width ``H`` and the threshold ``(I O^2)^(1/3)`` at that
  moment), optionally followed by the searched architecture **retrained from scratch** for the
  same epochs, which separates "the architecture is worse" from "growing trained it worse";
* :func:`resnet_experiment`: a ResNet-18 of one width (the paper's yardstick, appendix C);
* :func:`static_experiment`: a static dense H-ResNet of a given width;
* :func:`prune_experiment`: the same trained network pruned by ``I = A (1 - B^33)``, by ``A``
  alone, by weight magnitude and at random, with and without the decay of the outgoing weights
  (section 2, "How to prune neurons?");
* :func:`stopping_experiment`: the loss-flattening rule against a fixed budget (appendix A).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from structlab.data.base import LabelledTensors
from structlab.experiment_store import ExperimentStore, run_experiment
from structlab.heuristics.baselines import ResNet18
from structlab.heuristics.experiments import stopping_comparison
from structlab.heuristics.hrn import HRN, layer_threshold
from structlab.heuristics.search import (
    NeuronDecay,
    heuristic_search,
    history_frame,
    importance_scores,
    prune_neurons,
)
from structlab.metrics import count_parameters
from structlab.reproducibility import get_device, seed_everything
from structlab.training import evaluate, fit

__all__ = [
    "PRUNE_SCORES",
    "DepthLog",
    "magnitude_scores",
    "prune_experiment",
    "resnet_experiment",
    "retrain_from_scratch",
    "search_experiment",
    "static_experiment",
    "stopping_experiment",
]

#: The pruning scores compared by :func:`prune_experiment`.
PRUNE_SCORES = ("I = A(1-B^33)", "A alone", "magnitude", "random")


def _classes(data: LabelledTensors) -> int:
    return len(data.classes) if data.classes else int(data.targets.max()) + 1


def _parent_branch(layer: str) -> str:
    """``"body.0.residual.f1.residual"`` -> ``"body.0.residual"`` (the branch whose inner
    connection received the new layer)."""
    return layer.rsplit(".", 2)[0]


def _owner(branch: str) -> str:
    return branch[: -len(".residual")]


class DepthLog:
    """``on_iteration`` callback of :func:`heuristic_search`: logs every layer addition with the
    parent branch's width ``H`` and the threshold ``(I O^2)^(1/3)`` of the connection owning it
    (section 2, "Where to add new layers?"), every layer removal with the layer's width before
    the iteration, and depth and parameters after every iteration (Fig. 9).

    ``events``: one dict per change (``iteration``, ``event`` "added"/"removed", ``layer``,
    ``H``, ``threshold``, ``in``, ``out``, ``width_before``); ``rows``: one per iteration."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.rows: list[dict[str, Any]] = []
        self._widths: dict[str, int] = {}

    def __call__(self, record: Mapping[str, Any], model: HRN) -> None:
        i = int(record["iteration"])
        for layer in record["layers_added"]:
            parent = _parent_branch(layer)
            owner = model.connection(_owner(parent))
            self.events.append({
                "iteration": i, "event": "added", "layer": layer,
                "H": model.branch(parent).width, "in": owner.in_size, "out": owner.out_size,
                "threshold": layer_threshold(owner.in_size, owner.out_size),
                "width_before": None})
        for layer in record["layers_removed"]:
            owner = _owner(layer)
            self.events.append({
                "iteration": i, "event": "removed", "layer": layer, "H": None,
                "in": None, "out": None, "threshold": None,
                "width_before": self._widths.get(layer)})
        self._widths = dict(record["widths"])
        self.rows.append({"iteration": i, "depth": int(record["depth"]),
                          "params": int(record["params"]),
                          "branches": int(record["branches"]),
                          "val_accuracy": float(record["val_accuracy"])})


def _strip(history: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The records without the per-iteration architecture (kept for the last one only)."""
    out = []
    for j, r in enumerate(history):
        keep = dict(r)
        if j < len(history) - 1:
            keep.pop("spec", None)
            keep.pop("architecture", None)
        out.append(keep)
    return out


def retrain_from_scratch(spec: Mapping[str, Any], train: LabelledTensors,
                         test: LabelledTensors, *, epochs: int, lr: float, batch_size: int,
                         seed: int, cosine: bool = False,
                         device: str | torch.device = "cpu") -> dict[str, Any]:
    """The architecture ``spec`` (:meth:`HRN.spec`) rebuilt with freshly initialised weights
    (every module's default initialisation, the zero-output branches included) and trained with
    Adam at ``lr`` (constant, or cosine-annealed over ``epochs`` when ``cosine``) for ``epochs``
    epochs. Returns ``params``, ``accuracy``, ``loss`` and the test accuracy after every epoch."""
    seed_everything(seed)
    dev = get_device(device)
    model = HRN.from_spec(dict(spec))
    for module in model.modules():
        if module is not model and hasattr(module, "reset_parameters"):
            module.reset_parameters()
    model.to(dev)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
                 if cosine else None)
    history = fit(model, train, epochs=epochs, optimizer=optimizer, scheduler=scheduler,
                  batch_size=batch_size, device=dev, val=test, seed=seed, quiet=True)
    scores = evaluate(model, test, device=dev)
    return {"params": count_parameters(model), "accuracy": scores["accuracy"],
            "loss": scores["loss"], "curve": list(history.val_acc), "cosine": cosine}


def search_experiment(train: LabelledTensors, test: LabelledTensors, *, kind: str,
                      schedule: Sequence[Mapping[str, Any]], seed: int, hidden: int,
                      channels: Sequence[int] = (16, 32, 64), batch_size: int = 128,
                      importance_samples: int | None = None, threshold: float = -5.0,
                      scratch: bool = False, scratch_lr: float = 1e-3,
                      device: str | torch.device = "cpu", name: str = "search",
                      store: ExperimentStore | None = None) -> dict[str, Any]:
    """One search (``kind`` "dense": :meth:`HRN.dense` with one branch of ``hidden`` neurons;
    "conv": :meth:`HRN.conv` with ``channels`` and branches of ``hidden`` channels) over the
    meta-parameter ``schedule`` (one dict per iteration), with :class:`DepthLog`.

    With ``scratch``, the final architecture is also retrained from scratch for the search's
    epochs (training + decay), at ``scratch_lr`` constant (the search's schedule of one learning
    rate) and cosine-annealed (the ResNet protocol): :func:`retrain_from_scratch`.

    Returns ``history`` (records of :func:`heuristic_search`, the last with its architecture),
    ``events`` and ``rows`` of the log, ``epochs``, ``accuracy``, ``params``, ``depth``,
    ``initial_params``, ``initial_depth`` and, with ``scratch``, ``scratch`` and
    ``scratch_cosine``."""
    if kind not in ("dense", "conv"):
        raise ValueError(f"kind must be 'dense' or 'conv', got {kind!r}")
    schedule = [dict(m) for m in schedule]
    if not schedule:
        raise ValueError("the schedule needs at least one iteration")

    def compute() -> dict[str, Any]:
        seed_everything(seed)
        n_classes = _classes(train)
        if kind == "dense":
            model = HRN.dense(math.prod(train.inputs.shape[1:]), n_classes, hidden=hidden)
        else:
            model = HRN.conv(train.inputs.shape[1], n_classes, channels=list(channels),
                             hidden=hidden)
        initial = {"params": count_parameters(model), "depth": model.depth}
        log = DepthLog()
        history = heuristic_search(model, train, test, meta=schedule, iterations=len(schedule),
                                   device=device, seed=seed, batch_size=batch_size,
                                   importance_samples=importance_samples, threshold=threshold,
                                   on_iteration=log, quiet=True)
        epochs = int(history_frame(history).cumulative_epochs.iloc[-1])
        out = {"history": _strip(history), "events": log.events, "rows": log.rows,
               "epochs": epochs, "accuracy": history[-1]["val_accuracy"],
               "params": history[-1]["params"], "depth": history[-1]["depth"],
               "initial_params": initial["params"], "initial_depth": initial["depth"]}
        if scratch:
            spec = history[-1]["spec"]
            for key, cosine in (("scratch", False), ("scratch_cosine", True)):
                out[key] = retrain_from_scratch(spec, train, test, epochs=epochs, lr=scratch_lr,
                                                batch_size=batch_size, seed=seed, cosine=cosine,
                                                device=device)
        return out

    key = dict(train=train, test=test, kind=kind, schedule=schedule, seed=seed, hidden=hidden,
               channels=list(channels), batch_size=batch_size,
               importance_samples=importance_samples, threshold=threshold, scratch=scratch,
               scratch_lr=scratch_lr)
    return run_experiment(store, f"{name}-seed{seed}", key, compute)


def resnet_experiment(train: LabelledTensors, test: LabelledTensors, *, width: int,
                      epochs: int, lr: float, batch_size: int, seed: int, cosine: bool = True,
                      device: str | torch.device = "cpu",
                      store: ExperimentStore | None = None) -> dict[str, Any]:
    """A :class:`~structlab.heuristics.baselines.ResNet18` of base ``width`` trained from scratch
    with Adam at ``lr``, cosine-annealed over ``epochs`` (appendix C) unless ``cosine`` is off.
    Returns ``width``, ``params``, ``epochs``, ``accuracy``, ``loss`` and ``curve`` (test accuracy
    after every epoch)."""
    if width < 1 or epochs < 1:
        raise ValueError("width and epochs must be at least 1")

    def compute() -> dict[str, Any]:
        seed_everything(seed)
        dev = get_device(device)
        model = ResNet18(train.inputs.shape[1], _classes(train), width).to(dev)
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
                     if cosine else None)
        history = fit(model, train, epochs=epochs, optimizer=optimizer, scheduler=scheduler,
                      batch_size=batch_size, device=dev, val=test, seed=seed, quiet=True)
        scores = evaluate(model, test, device=dev)
        return {"width": width, "params": count_parameters(model), "epochs": epochs,
                "accuracy": scores["accuracy"], "loss": scores["loss"],
                "curve": list(history.val_acc), "cosine": cosine}

    key = dict(train=train, test=test, width=width, epochs=epochs, lr=lr,
               batch_size=batch_size, seed=seed, cosine=cosine)
    return run_experiment(store, f"resnet18-w{width}-{'cos' if cosine else 'const'}-seed{seed}",
                          key, compute)


def static_experiment(train: LabelledTensors, test: LabelledTensors, *, hidden: int,
                      epochs: int, lr: float, batch_size: int, seed: int,
                      device: str | torch.device = "cpu",
                      store: ExperimentStore | None = None) -> dict[str, Any]:
    """A static dense H-ResNet (shortcut plus one branch of ``hidden`` neurons) trained with Adam
    at ``lr`` for ``epochs`` epochs. Returns ``hidden``, ``params``, ``accuracy``, ``loss``."""
    if hidden < 1 or epochs < 1:
        raise ValueError("hidden and epochs must be at least 1")

    def compute() -> dict[str, Any]:
        seed_everything(seed)
        dev = get_device(device)
        model = HRN.dense(math.prod(train.inputs.shape[1:]), _classes(train),
                          hidden=hidden).to(dev)
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        fit(model, train, epochs=epochs, optimizer=optimizer, batch_size=batch_size,
            device=dev, seed=seed, quiet=True)
        scores = evaluate(model, test, device=dev)
        return {"hidden": hidden, "params": count_parameters(model), "epochs": epochs,
                "accuracy": scores["accuracy"], "loss": scores["loss"]}

    key = dict(train=train, test=test, hidden=hidden, epochs=epochs, lr=lr,
               batch_size=batch_size, seed=seed)
    return run_experiment(store, f"static-{train.name.split('/')[0]}-h{hidden}-seed{seed}", key,
                          compute)


def magnitude_scores(model: HRN) -> dict[str, torch.Tensor]:
    """Weight-magnitude score of every hidden neuron of every dense branch: the norm of its
    fan-in row of ``f_1`` times the norm of its fan-out column of ``f_2`` (float64, CPU)."""
    out = {}
    for name, res in model.branches():
        w_in = res.f1.shortcut.weight.detach().flatten(1)
        w_out = res.f2.shortcut.weight.detach().transpose(0, 1).flatten(1)
        out[name] = (w_in.norm(dim=1) * w_out.norm(dim=1)).double().cpu()
    return out


def _lowest(scores: Mapping[str, torch.Tensor], m: int) -> dict[str, torch.Tensor]:
    """The ``m`` lowest-scored neurons over all branches (no layer removal), sorted indices."""
    names = list(scores)
    sizes = [int(scores[n].numel()) for n in names]
    flat = torch.cat([scores[n].reshape(-1).double() for n in names])
    chosen = torch.zeros(flat.numel(), dtype=torch.bool)
    chosen[torch.sort(flat, stable=True).indices[:m]] = True
    return {n: torch.nonzero(p).reshape(-1)
            for n, p in zip(names, torch.split(chosen, sizes)) if p.any()}


def prune_experiment(train: LabelledTensors, test: LabelledTensors, *, hidden: int,
                     epochs: int, fraction: float, lr: float, batch_size: int, seed: int,
                     decay_epochs: int = 1, recovery_epochs: int = 1,
                     importance_samples: int | None = None,
                     device: str | torch.device = "cpu",
                     store: ExperimentStore | None = None) -> dict[str, Any]:
    """The importance score tested: a dense H-ResNet with one branch of ``hidden`` neurons is
    trained for ``epochs`` epochs; copies of it lose ``round(fraction * hidden)`` neurons chosen
    by each of :data:`PRUNE_SCORES` (``I = A (1 - B^33)``, ``A = sum |sigma d sigma|`` alone,
    :func:`magnitude_scores`, uniform random), either at once or after their outgoing weights
    decayed to zero over ``decay_epochs`` epochs while the others fine-tune
    (:class:`~structlab.heuristics.search.NeuronDecay`); then every copy fine-tunes for
    ``recovery_epochs`` more epochs (the variant without decay fine-tunes ``decay_epochs`` more,
    so that both train equally long).

    Returns ``base`` (the trained network's test accuracy and loss) and ``rows``, one per score
    and decay: test ``loss_before`` / ``loss_after`` the removal step (the jump), ``accuracy`` /
    ``loss`` after pruning (after the decay, where there is one) and after recovery."""
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")

    def compute() -> dict[str, Any]:
        seed_everything(seed)
        dev = get_device(device)
        base = HRN.dense(math.prod(train.inputs.shape[1:]), _classes(train), hidden=hidden)
        base.to(dev)
        optimizer = torch.optim.Adam(base.parameters(), lr=lr)
        fit(base, train, epochs=epochs, optimizer=optimizer, batch_size=batch_size, device=dev,
            seed=seed, quiet=True)
        before = evaluate(base, test, device=dev)
        m = round(fraction * hidden)
        steps = math.ceil(len(train) / batch_size)
        rows = []
        for score in PRUNE_SCORES:
            for decay in (False, True):
                model = copy.deepcopy(base)
                if score == "random":
                    gen = torch.Generator().manual_seed(seed)
                    scores = {n: torch.rand(r.width, generator=gen, dtype=torch.float64)
                              for n, r in model.branches()}
                elif score == "magnitude":
                    scores = magnitude_scores(model)
                else:
                    scores = importance_scores(
                        model, train, device=dev, samples=importance_samples, seed=seed,
                        exponent=33.0 if score.startswith("I") else None)
                selection = _lowest(scores, m)
                opt = torch.optim.Adam(model.parameters(), lr=lr)
                if decay:
                    fit(model, train, epochs=decay_epochs, optimizer=opt,
                        batch_size=batch_size, device=dev, seed=seed + 1, quiet=True,
                        callbacks=[NeuronDecay(model, selection, decay_epochs * steps)])
                loss_before = evaluate(model, test, device=dev)["loss"]
                prune_neurons(model, selection, optimizer=opt)
                pruned = evaluate(model, test, device=dev)
                extra = recovery_epochs + (0 if decay else decay_epochs)
                fit(model, train, epochs=extra, optimizer=opt, batch_size=batch_size,
                    device=dev, seed=seed + 2, quiet=True)
                recovered = evaluate(model, test, device=dev)
                rows.append({"score": score, "decay": decay, "pruned": m,
                             "loss_before": loss_before, "loss_after": pruned["loss"],
                             "jump": pruned["loss"] - loss_before,
                             "accuracy": pruned["accuracy"], "loss": pruned["loss"],
                             "accuracy_recovered": recovered["accuracy"],
                             "loss_recovered": recovered["loss"]})
        return {"base": before, "rows": rows, "hidden": hidden, "pruned": m}

    key = dict(train=train, test=test, hidden=hidden, epochs=epochs, fraction=fraction, lr=lr,
               batch_size=batch_size, seed=seed, decay_epochs=decay_epochs,
               recovery_epochs=recovery_epochs, importance_samples=importance_samples)
    return run_experiment(store, f"prune-seed{seed}", key, compute)


def stopping_experiment(train: LabelledTensors, test: LabelledTensors, *, hidden: int,
                        max_epochs: int, lr: float, batch_size: int, seed: int,
                        device: str | torch.device = "cpu",
                        store: ExperimentStore | None = None) -> dict[str, Any]:
    """:func:`~structlab.heuristics.experiments.stopping_comparison` as a stored experiment of
    this module (the rule ``a < -5`` against a fixed budget of ``max_epochs`` epochs)."""

    def compute() -> dict[str, Any]:
        return stopping_comparison(train, test, hidden=hidden, max_epochs=max_epochs, lr=lr,
                                   batch_size=batch_size, seed=seed, device=device)

    key = dict(train=train, test=test, hidden=hidden, max_epochs=max_epochs, lr=lr,
               batch_size=batch_size, seed=seed)
    return run_experiment(store, f"flattening-h{hidden}-seed{seed}", key, compute)
