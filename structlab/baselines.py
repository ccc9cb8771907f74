"""The static baselines of the chapter "Data and baselines", as stored experiments.

Two networks whose structure never changes, trained with SGD (momentum 0.9) and cross-entropy:
the MLP of the neurogenesis and pruning chapters and a small CNN (a two-block VGG). Each training
run is one experiment of an :class:`~structlab.experiment_store.ExperimentStore`, keyed by its
arguments (the data by content) and the code of this module's imports, so that a stored book run
re-renders from its committed records without training again. A result holds no weights: the
history, the test metrics, the size and the cost of the network.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from structlab.data.base import LabelledTensors
from structlab.experiment_store import ExperimentStore, run_experiment
from structlab.metrics import count_parameters, inference_flops
from structlab.models import MLP, VGG
from structlab.reproducibility import get_device, seed_everything
from structlab.training import History, evaluate, fit

__all__ = ["BASELINES", "build_baseline", "train_baseline"]

#: The baselines by name.
BASELINES = ("MLP", "CNN")


def build_baseline(name: str, *, in_shape: Sequence[int], num_classes: int,
                   mlp_hidden: Sequence[int], cnn_channels: Sequence[int],
                   cnn_dense: int) -> torch.nn.Module:
    """The untrained ``name`` network ("MLP" or "CNN") for inputs of shape ``in_shape``."""
    channels, size = int(in_shape[0]), int(in_shape[-1])
    if name == "MLP":
        features = 1
        for d in in_shape:
            features *= int(d)
        return MLP(features, list(mlp_hidden), num_classes)
    if name == "CNN":
        if len(cnn_channels) < 1:
            raise ValueError("the CNN needs at least one convolution width")
        cfg: list[int | str] = []
        for c in cnn_channels:
            cfg += [int(c), "M"]
        return VGG(cfg=cfg, in_channels=channels, num_classes=num_classes, input_size=size,
                   dense=[int(cnn_dense)])
    raise ValueError(f"unknown baseline {name!r}: one of {', '.join(BASELINES)}")


def _train(name: str, train: LabelledTensors, test: LabelledTensors, *, epochs: int,
           batch_size: int, lr: float, mlp_hidden: Sequence[int], cnn_channels: Sequence[int],
           cnn_dense: int, seed: int, device: str, quiet: bool) -> dict[str, Any]:
    dev = get_device(device)
    seed_everything(seed)
    in_shape = tuple(train.inputs.shape[1:])
    model = build_baseline(name, in_shape=in_shape, num_classes=int(train.num_classes),
                           mlp_hidden=mlp_hidden, cnn_channels=cnn_channels,
                           cnn_dense=cnn_dense).to(dev)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    history = fit(model, train, epochs=epochs, batch_size=batch_size, optimizer=optimizer,
                  device=dev, val=test, seed=seed, quiet=quiet, desc=name)
    result = evaluate(model, test, device=dev)
    return {"history": history, "accuracy": float(result["accuracy"]),
            "loss": float(result["loss"]), "parameters": count_parameters(model),
            "flops": int(inference_flops(model, (1, *in_shape))), "train_images": len(train),
            "epochs": epochs}


def train_baseline(name: str, train: LabelledTensors, test: LabelledTensors, *, epochs: int,
                   batch_size: int, lr: float, mlp_hidden: Sequence[int],
                   cnn_channels: Sequence[int], cnn_dense: int, seed: int,
                   device: str | torch.device = "auto", quiet: bool = True,
                   store: ExperimentStore | None = None) -> dict[str, Any]:
    """Train baseline ``name`` on ``train`` for ``epochs`` epochs and test it on ``test``.

    Returns ``history`` (:class:`~structlab.training.History`, with the test set as validation
    data), test ``accuracy`` (in [0, 1]) and ``loss``, ``parameters``, inference ``flops`` for one
    image (a multiply-add counts two), ``train_images`` and ``epochs``. With a ``store`` the run
    is one experiment, read back when it finished before; the key holds the device kind, so a CPU
    result is never read back for a GPU run.
    """
    dev = get_device(device)
    params = {"name": name, "train": train, "test": test, "epochs": epochs,
              "batch_size": batch_size, "lr": lr, "mlp_hidden": list(mlp_hidden),
              "cnn_channels": list(cnn_channels), "cnn_dense": cnn_dense, "seed": seed,
              "device": dev.type}
    result = run_experiment(store, f"baseline-{name.lower()}", params, lambda: _train(
        name, train, test, epochs=epochs, batch_size=batch_size, lr=lr, mlp_hidden=mlp_hidden,
        cnn_channels=cnn_channels, cnn_dense=cnn_dense, seed=seed, device=str(dev),
        quiet=quiet))
    if not isinstance(result.get("history"), History):
        raise TypeError("a stored baseline result must hold a History")
    return result
