"""The chapter's experiments around the search: static networks of a matched size, and the
loss-flattening rule against a fixed budget (appendix A).

Each function is one experiment of an :class:`~structlab.experiment_store.ExperimentStore` when a
``store`` is given, so an interrupted book run reads back what finished.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from structlab.data.base import LabelledTensors
from structlab.experiment_store import ExperimentStore, run_experiment
from structlab.heuristics.hrn import HRN
from structlab.heuristics.stopping import FlatteningStop
from structlab.metrics import count_parameters
from structlab.reproducibility import get_device, seed_everything
from structlab.training import Callback, TrainState, evaluate, fit

__all__ = ["matched_width", "static_run", "stopping_comparison"]


def matched_width(params: int, in_features: int, out_features: int) -> int:
    """The branch width ``H`` of a static ``HRN.dense(in, out, hidden=H)`` with about ``params``
    parameters: the linear shortcut has ``(in + 1) out`` and the branch ``(in + 1) H + H out``."""
    if params < 1 or in_features < 1 or out_features < 1:
        raise ValueError("params, in_features and out_features must be positive")
    shortcut = (in_features + 1) * out_features
    return max(1, round((params - shortcut) / (in_features + 1 + out_features)))


def _flat_features(data: LabelledTensors) -> int:
    return math.prod(data.inputs.shape[1:])


def static_run(train: LabelledTensors, test: LabelledTensors, *, hidden: int, epochs: int,
               lr: float, batch_size: int, seed: int, device: str | torch.device = "auto",
               quiet: bool = True, store: ExperimentStore | None = None) -> dict[str, Any]:
    """A static dense H-ResNet (linear shortcut plus one branch of ``hidden`` neurons, never
    changed) trained with Adam for ``epochs`` epochs: the fixed-size yardstick of the search.

    Returns ``hidden``, ``params``, ``epochs``, ``accuracy`` and ``loss`` on ``test``."""
    if hidden < 1 or epochs < 1:
        raise ValueError("hidden and epochs must be at least 1")
    n_classes = len(train.classes) if train.classes else int(train.targets.max()) + 1

    def compute() -> dict[str, Any]:
        seed_everything(seed)
        dev = get_device(device)
        model = HRN.dense(_flat_features(train), n_classes, hidden=hidden).to(dev)
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        fit(model, train, epochs=epochs, optimizer=optimizer, batch_size=batch_size, device=dev,
            seed=seed, quiet=quiet, desc=f"static {hidden}")
        scores = evaluate(model, test, device=dev)
        return {"hidden": hidden, "params": count_parameters(model), "epochs": epochs,
                "accuracy": scores["accuracy"], "loss": scores["loss"]}

    key = dict(train=train, test=test, hidden=hidden, epochs=epochs, lr=lr,
               batch_size=batch_size, seed=seed)
    return run_experiment(store, f"static-h{hidden}-seed{seed}", key, compute)


class _RecordRule(Callback):
    """Placed after a :class:`FlatteningStop`: notes the epoch at which the rule would stop and
    lets training go on to the fixed budget, so both come from one run with one data order."""

    def __init__(self, rule: FlatteningStop, budget: int) -> None:
        self.rule, self.budget = rule, budget
        self.stop_epoch: int | None = None

    def on_epoch_end(self, state: TrainState) -> None:
        if state.stop and self.rule.reason == "flat" and self.stop_epoch is None:
            self.stop_epoch = state.epoch + 1
        state.stop = state.epoch + 1 >= self.budget


def stopping_comparison(train: LabelledTensors, test: LabelledTensors, *, hidden: int,
                        max_epochs: int, lr: float, batch_size: int, seed: int,
                        threshold: float = -5.0, device: str | torch.device = "auto",
                        quiet: bool = True,
                        store: ExperimentStore | None = None) -> dict[str, Any]:
    """The loss-flattening rule (appendix A: fit ``y = exp(a x)(1 - x)`` to the normalised loss
    curve, stop when ``a < threshold``) against a fixed budget of ``max_epochs`` epochs.

    One static network is trained for the whole budget while the rule is evaluated after every
    epoch; since training is seeded, stopping at the rule's epoch gives exactly the network of
    that epoch. Returns the rule's ``stop_epoch`` (``max_epochs`` when it never fires), the fitted
    ``rates`` per epoch, the test ``loss`` and ``accuracy`` after every epoch, and the values at
    the rule's stop and at the end of the budget."""
    if hidden < 1 or max_epochs < 2:
        raise ValueError("hidden must be at least 1 and max_epochs at least 2")
    n_classes = len(train.classes) if train.classes else int(train.targets.max()) + 1

    def compute() -> dict[str, Any]:
        seed_everything(seed)
        dev = get_device(device)
        model = HRN.dense(_flat_features(train), n_classes, hidden=hidden).to(dev)
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        rule = FlatteningStop(max_epochs, threshold=threshold)
        record = _RecordRule(rule, max_epochs)
        history = fit(model, train, epochs=max_epochs, optimizer=optimizer,
                      batch_size=batch_size, device=dev, val=test, callbacks=[rule, record],
                      seed=seed, quiet=quiet, desc="flattening rule")
        stop = record.stop_epoch or max_epochs
        return {"hidden": hidden, "max_epochs": max_epochs, "threshold": threshold,
                "stop_epoch": stop, "fired": record.stop_epoch is not None,
                "rates": list(rule.rates), "loss": list(history.val_loss),
                "accuracy": list(history.val_acc), "loss_at_stop": history.val_loss[stop - 1],
                "accuracy_at_stop": history.val_acc[stop - 1],
                "loss_fixed": history.val_loss[-1], "accuracy_fixed": history.val_acc[-1]}

    key = dict(train=train, test=test, hidden=hidden, max_epochs=max_epochs, lr=lr,
               batch_size=batch_size, seed=seed, threshold=threshold)
    return run_experiment(store, f"flattening-h{hidden}-seed{seed}", key, compute)
