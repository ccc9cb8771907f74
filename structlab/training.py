"""A small training loop with callbacks, shared by every chapter.

Structural-learning methods change the network while it trains, so the loop is written around a
mutable :class:`TrainState`: callbacks may add or remove units, replace the optimizer's parameter
lists, or record measurements, and the loop always reads ``state.model`` and ``state.optimizer``
afresh at the next step.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from structlab.reproducibility import get_device

if TYPE_CHECKING:
    from structlab.data.base import LabelledTensors

__all__ = ["History", "TrainState", "Callback", "fit", "evaluate", "make_loader",
           "calibrate_batch_norm"]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class History:
    """Per-epoch records of a run: losses, accuracies (in [0, 1]) and wall time in seconds.

    ``extra`` holds whatever callbacks record (for example the widths of growing layers), as lists
    keyed by name.
    """

    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)
    epoch_time: list[float] = field(default_factory=list)
    extra: dict[str, list[Any]] = field(default_factory=dict)

    @property
    def epochs(self) -> int:
        return len(self.train_loss)

    @property
    def total_time(self) -> float:
        return float(sum(self.epoch_time))

    def record(self, key: str, value: Any) -> None:
        """Append ``value`` to ``extra[key]``."""
        self.extra.setdefault(key, []).append(value)

    def to_frame(self) -> pd.DataFrame:
        """One row per epoch (1-based ``epoch`` column); validation columns only when measured."""
        columns: dict[str, list[Any]] = {
            "epoch": list(range(1, self.epochs + 1)),
            "train_loss": self.train_loss,
            "train_acc": self.train_acc,
            "epoch_time": self.epoch_time,
        }
        if self.val_loss:
            columns["val_loss"] = self.val_loss
            columns["val_acc"] = self.val_acc
        return pd.DataFrame(columns)

    def to_dict(self) -> dict[str, Any]:
        return {
            "train_loss": self.train_loss,
            "train_acc": self.train_acc,
            "val_loss": self.val_loss,
            "val_acc": self.val_acc,
            "epoch_time": self.epoch_time,
            "extra": self.extra,
        }


@dataclass
class TrainState:
    """What callbacks see and may change during :func:`fit`."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    device: torch.device
    history: History
    epoch: int = 0
    step: int = 0
    total_steps: int = 0
    inputs: torch.Tensor | None = None
    targets: torch.Tensor | None = None
    loss: float = float("nan")
    stop: bool = False


class Callback:
    """Hooks into :func:`fit`. Override any of the methods; each receives the live state."""

    def on_train_begin(self, state: TrainState) -> None:  # noqa: B027 - optional hook
        pass

    def on_step_end(self, state: TrainState) -> None:  # noqa: B027 - optional hook
        pass

    def on_epoch_end(self, state: TrainState) -> None:  # noqa: B027 - optional hook
        pass

    def on_train_end(self, state: TrainState) -> None:  # noqa: B027 - optional hook
        pass


def make_loader(
    data: Dataset, batch_size: int, *, shuffle: bool, seed: int = 0, drop_last: bool = False
) -> DataLoader:
    """A single-process ``DataLoader`` whose shuffling depends on ``seed`` alone."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    generator = torch.Generator()
    generator.manual_seed(seed)
    return DataLoader(
        data, batch_size=batch_size, shuffle=shuffle, generator=generator, drop_last=drop_last
    )


def _batches(data: Dataset | DataLoader, batch_size: int) -> Iterable:
    return data if isinstance(data, DataLoader) else make_loader(data, batch_size, shuffle=False)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: Dataset | DataLoader,
    *,
    device: str | torch.device = "auto",
    batch_size: int = 1024,
    loss_fn: LossFn | None = None,
) -> dict[str, float]:
    """Mean loss and accuracy of ``model`` on ``data`` in evaluation mode.

    Accuracy is reported for classification targets (int64); for regression targets it is NaN.
    The model's training mode is restored afterwards.
    """
    device = get_device(device)
    loss_fn = loss_fn or nn.functional.cross_entropy
    was_training = model.training
    model.eval()
    total_loss, correct, count = 0.0, 0, 0
    for inputs, targets in _batches(data, batch_size):
        inputs, targets = inputs.to(device), targets.to(device)
        outputs = model(inputs)
        total_loss += float(loss_fn(outputs, targets)) * len(targets)
        if targets.dtype == torch.int64:
            correct += int((outputs.argmax(dim=1) == targets).sum())
        count += len(targets)
    model.train(was_training)
    if count == 0:
        raise ValueError("cannot evaluate on an empty dataset")
    is_classification = targets.dtype == torch.int64
    return {
        "loss": total_loss / count,
        "accuracy": correct / count if is_classification else float("nan"),
    }


def fit(
    model: nn.Module,
    train: Dataset | DataLoader,
    *,
    epochs: int,
    optimizer: torch.optim.Optimizer,
    batch_size: int = 128,
    device: str | torch.device = "auto",
    val: Dataset | DataLoader | None = None,
    callbacks: Sequence[Callback] = (),
    loss_fn: LossFn | None = None,
    scheduler: Any | None = None,
    seed: int = 0,
    quiet: bool = False,
    desc: str = "",
) -> History:
    """Train ``model`` for ``epochs`` epochs and return its :class:`History`.

    Args:
        model: the network, already on ``device``.
        train: a dataset (shuffled with ``seed`` every epoch) or a ready ``DataLoader``.
        epochs: number of passes over ``train`` (non-negative).
        optimizer: an optimizer over the model's parameters. Callbacks may change the model's
            structure and update this optimizer in place, or put a new one in ``state.optimizer``.
        val: optional data evaluated at the end of every epoch.
        callbacks: :class:`Callback` objects, called in order.
        loss_fn: defaults to cross-entropy.
        scheduler: optional learning-rate scheduler stepped once per epoch.
        quiet: no progress bar (for logs and batch runs).
    """
    if epochs < 0:
        raise ValueError(f"epochs must be non-negative, got {epochs}")
    device = get_device(device)
    loss_fn = loss_fn or nn.functional.cross_entropy
    loader = (
        train if isinstance(train, DataLoader) else make_loader(train, batch_size, shuffle=True,
                                                                 seed=seed)
    )
    history = History()
    state = TrainState(model=model, optimizer=optimizer, device=device, history=history,
                       total_steps=epochs * len(loader))
    for cb in callbacks:
        cb.on_train_begin(state)
    bar = tqdm(total=state.total_steps, desc=desc or "training", disable=quiet, leave=False,
               unit="step")
    for epoch in range(epochs):
        state.epoch = epoch
        state.model.train()
        start = time.perf_counter()
        running_loss, correct, count = 0.0, 0, 0
        for inputs, targets in loader:
            inputs, targets = inputs.to(device), targets.to(device)
            state.inputs, state.targets = inputs, targets
            state.optimizer.zero_grad(set_to_none=True)
            outputs = state.model(inputs)
            loss = loss_fn(outputs, targets)
            loss.backward()
            state.optimizer.step()
            state.loss = float(loss.detach())
            running_loss += state.loss * len(targets)
            if targets.dtype == torch.int64:
                correct += int((outputs.detach().argmax(dim=1) == targets).sum())
            count += len(targets)
            state.step += 1
            for cb in callbacks:
                cb.on_step_end(state)
            bar.update(1)
            if not quiet and state.step % 20 == 0:
                bar.set_postfix(loss=f"{state.loss:.3f}", refresh=False)
            if state.stop:
                break
        if scheduler is not None:
            scheduler.step()
        history.train_loss.append(running_loss / max(count, 1))
        history.train_acc.append(correct / max(count, 1))
        history.epoch_time.append(time.perf_counter() - start)
        if val is not None:
            metrics = evaluate(state.model, val, device=device, loss_fn=loss_fn)
            history.val_loss.append(metrics["loss"])
            history.val_acc.append(metrics["accuracy"])
        for cb in callbacks:
            cb.on_epoch_end(state)
        if state.stop:
            break
    bar.close()
    for cb in callbacks:
        cb.on_train_end(state)
    return history


def calibrate_batch_norm(
    model: nn.Module,
    data: LabelledTensors,
    samples: int,
    *,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> None:
    """Recompute every batch norm's running statistics on ``samples`` training images
    (``torch.optim.swa_utils.update_bn``: a cumulative average in training mode).

    After a few hundred steps with a large learning rate the running averages lag behind the
    weights, and evaluation-mode accuracy falls far below training accuracy. Short (quick-profile)
    runs therefore recalibrate before every evaluation; ``samples=0`` does nothing (the thesis's
    long runs need no recalibration).
    """
    if samples <= 0:
        return
    subset = data.subset(min(samples, len(data)), seed=seed)
    loader = torch.utils.data.DataLoader(subset.inputs.to(device), batch_size=256)
    torch.optim.swa_utils.update_bn(loader, model)
