"""Transfer set-ups of thesis §7.3 and the stored fine-tuning experiment.

**Full scale** (§7.3): a VGG-11 pretrained on ImageNet (torchvision's ``IMAGENET1K_V1`` weights,
loaded with ``weights_only=True`` by :func:`imagenet_vgg11`) fine-tuned on

* Imagenette and Imagewoof: the classifier becomes a 10-way layer made of the 10 ImageNet
  output neurons of the target's classes (:data:`IMAGENETTE_CLASSES`, :data:`IMAGEWOOF_CLASSES`);
* Galaxy10: the classifier is replaced by a re-initialised 10-way layer.

**Book scale**: a small VGG pretrained here (:func:`pretrain_source`) on Fashion-MNIST classes
0-4 (T-shirt, trouser, pullover, dress, coat) and transferred either to classes 5-9 (sandal,
shirt, sneaker, bag, ankle boot: the same kind of images, new categories, like Imagenette) or to
the offline MNIST digits (``mnist5k``: a different distribution, like Galaxy10); the classifier is
re-initialised.

:func:`finetune_run` fine-tunes one method (``static``, ``dyno``, ``sft``, ``dyno+sft``) for one
seed with Adam (lr 3e-4, weight decay 1e-3), 1000 iterations of 64 samples and triggers every 50
iterations (§7.3), and reports the final test accuracy, the inference FLOPs of one image
(``torch.utils.flop_counter.FlopCounterMode``), the FLOPs and layer widths over training and the
neurons grown and pruned per layer. Given an :class:`~structlab.experiment_store.ExperimentStore`
it is stored and resumed like every experiment of the book.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, RandomSampler
from torch.utils.flop_counter import FlopCounterMode

from structlab.data import LabelledTensors, load_dataset
from structlab.data.base import data_root
from structlab.data.registry import downloads_allowed
from structlab.experiment_store import ExperimentStore, run_experiment
from structlab.growprune.dyno import DYNO
from structlab.growprune.surgical import AutoRGN, rgn_param_groups
from structlab.models.vgg import VGG, VGG_CONFIGS
from structlab.reproducibility import get_device, seed_everything
from structlab.training import Callback, TrainState, evaluate, fit

__all__ = [
    "METHODS",
    "IMAGENETTE_CLASSES",
    "IMAGEWOOF_CLASSES",
    "IMAGENET_VGG11_CONFIG",
    "BOOK_SOURCE_CONFIG",
    "SMALL_SOURCE_CONFIG",
    "scaled_config",
    "WeightsUnavailableError",
    "TransferVGG",
    "TransferTask",
    "imagenet_vgg11",
    "fullscale_task",
    "class_subset",
    "book_source_data",
    "book_task",
    "pretrain_source",
    "transfer_model",
    "inference_flops",
    "finetune_run",
    "BOOK_TARGETS",
    "FULLSCALE_TARGETS",
    "load_source",
    "load_targets",
]

#: Targets of the book set-up (offline) and of §7.3 (downloaded).
BOOK_TARGETS = ("fashion-5-9", "mnist5k")
FULLSCALE_TARGETS = ("imagenette", "imagewoof", "galaxy10")

#: Fine-tuning methods of Figure 35.
METHODS = ("static", "dyno", "sft", "dyno+sft")

#: ImageNet indices of Imagenette's classes in the order of its (wnid-sorted) folders: tench,
#: English springer, cassette player, chain saw, church, French horn, garbage truck, gas pump,
#: golf ball, parachute.
IMAGENETTE_CLASSES = (0, 217, 482, 491, 497, 566, 569, 571, 574, 701)
#: ImageNet indices of Imagewoof's dog breeds (wnid order): Shih-Tzu, Rhodesian ridgeback,
#: beagle, English foxhound, Border terrier, Australian terrier, golden retriever, Old English
#: sheepdog, Samoyed, dingo.
IMAGEWOOF_CLASSES = (155, 159, 162, 167, 182, 193, 207, 229, 258, 273)

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)

#: torchvision's VGG-11 (no batch norm): ImageNet normalisation, 7 x 7 average pooling, dropout.
IMAGENET_VGG11_CONFIG: dict[str, Any] = {
    "cfg": list(VGG_CONFIGS["vgg11"][0]),
    "dense": [4096, 4096],
    "in_channels": 3,
    "num_classes": 1000,
    "input_size": 224,
    "pool_to": 7,
    "dropout": 0.5,
    "mean": list(_IMAGENET_MEAN),
    "std": list(_IMAGENET_STD),
}

#: The book's small VGG for 28 x 28 grey images: three convolutions and, like VGG-11's
#: classifier, two wide hidden dense layers (a 3 % move of phi_ED is then many directions).
BOOK_SOURCE_CONFIG: dict[str, Any] = {
    "cfg": [16, "M", 32, "M", 64, "M"],
    "dense": [512, 512],
    "in_channels": 1,
    "num_classes": 5,
    "input_size": 28,
    "pool_to": None,
    "dropout": 0.0,
    "mean": None,
    "std": None,
}


#: The previous book source (one hidden dense layer of 128): the chapter's diagnosis runs it.
SMALL_SOURCE_CONFIG: dict[str, Any] = {**BOOK_SOURCE_CONFIG, "dense": [128]}


def scaled_config(config: Mapping[str, Any], factor: float, *, convs: bool = True
                  ) -> dict[str, Any]:
    """``config`` with every hidden dense width and (when ``convs``) every convolution's
    channels multiplied by ``factor`` (rounded, at least 1): the static nets of several
    widths."""
    if factor <= 0:
        raise ValueError(f"factor must be positive, got {factor}")
    out = dict(config)
    if convs:
        out["cfg"] = [c if c == "M" else max(1, round(c * factor)) for c in config["cfg"]]
    out["dense"] = [max(1, round(d * factor)) for d in config["dense"]]
    return out


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights are neither cached nor downloadable."""


class TransferVGG(VGG):
    """A :class:`~structlab.models.VGG` without batch norm in torchvision's layout: optional
    input normalisation, optional adaptive average pooling of the last map to ``pool_to x
    pool_to`` and dropout after every hidden dense layer. Its slots are those of the VGG
    (``conv0`` ..., ``dense0`` ...); the activation hooks see the post-activations before
    dropout."""

    def __init__(
        self,
        cfg: Sequence[int | str],
        *,
        dense: Sequence[int],
        in_channels: int,
        num_classes: int,
        input_size: int,
        pool_to: int | None = None,
        dropout: float = 0.0,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__(list(cfg), in_channels=in_channels, num_classes=num_classes,
                         batchnorm=False, input_size=input_size, dense=list(dense))
        if pool_to is not None and self.spatial != pool_to * pool_to:
            raise ValueError(f"input_size {input_size} gives {self.spatial} positions after the "
                             f"last pool, not pool_to^2 = {pool_to * pool_to}")
        self.avgpool = nn.AdaptiveAvgPool2d(pool_to) if pool_to is not None else None
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        if (mean is None) != (std is None):
            raise ValueError("give both mean and std, or neither")
        self.normalize = mean is not None
        if mean is not None:
            self.register_buffer("mean", torch.tensor(list(mean)).reshape(1, -1, 1, 1))
            self.register_buffer("std", torch.tensor(list(std)).reshape(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.normalize:
            x = (x - self.mean) / self.std
        for conv, bn, act, pool in zip(self.convs, self.bns, self.acts, self.pool_after):
            x = act(bn(conv(x)))
            if pool:
                x = self.pool(x)
        if self.avgpool is not None:
            x = self.avgpool(x)
        x = x.flatten(1)
        for layer, act in zip(self.dense[:-1], self.dense_acts):
            x = self.drop(act(layer(x)))
        return self.dense[-1](x)

    def replace_head(self, rows: Sequence[int] | None = None, num_classes: int | None = None,
                     generator: torch.Generator | None = None) -> None:
        """Replace the classifier: keep the output neurons ``rows`` of the current one (weights
        and biases, in that order), or a re-initialised ``num_classes``-way layer (PyTorch's
        default initialisation, drawn with ``generator``)."""
        old = self.dense[-1]
        if rows is not None:
            idx = torch.as_tensor(list(rows), dtype=torch.long, device=old.weight.device)
            new = nn.Linear(old.in_features, len(idx)).to(old.weight)
            with torch.no_grad():
                new.weight.copy_(old.weight.index_select(0, idx))
                new.bias.copy_(old.bias.index_select(0, idx))
        elif num_classes is not None:
            new = nn.Linear(old.in_features, num_classes)
            bound = 1.0 / old.in_features**0.5
            with torch.no_grad():
                for p in (new.weight, new.bias):
                    p.copy_(torch.rand(p.shape, generator=generator) * 2 * bound - bound)
            new = new.to(old.weight)
        else:
            raise ValueError("give rows or num_classes")
        self.dense[-1] = new


def _model(config: Mapping[str, Any]) -> TransferVGG:
    return TransferVGG(**dict(config))


def _torchvision_key_map(config: Mapping[str, Any]) -> dict[str, str]:
    """torchvision VGG state-dict keys -> :class:`TransferVGG` keys (features: conv, ReLU, pool
    modules in sequence; classifier: Linear, ReLU, Dropout, ...)."""
    out, index, conv = {}, 0, 0
    for entry in config["cfg"]:
        if entry == "M":
            index += 1
            continue
        for p in ("weight", "bias"):
            out[f"features.{index}.{p}"] = f"convs.{conv}.{p}"
        index += 2
        conv += 1
    for j in range(len(config["dense"]) + 1):
        for p in ("weight", "bias"):
            out[f"classifier.{3 * j}.{p}"] = f"dense.{j}.{p}"
    return out


def imagenet_vgg11(*, download: bool | None = None, root: str | Path | None = None
                   ) -> dict[str, Any]:
    """The ImageNet-pretrained VGG-11 of §7.3 as a *source* (``{"name", "config", "state"}``).

    The weights are torchvision's ``VGG11_Weights.IMAGENET1K_V1``, downloaded with
    ``torch.hub.load_state_dict_from_url(..., weights_only=True)`` into ``root`` (default
    ``data_root() / "weights"``) unless already there. Downloads follow
    :func:`structlab.data.registry.downloads_allowed` (``STRUCTLAB_OFFLINE=1`` forbids them).

    Raises:
        WeightsUnavailableError: one line saying why and where the file is expected.
    """
    from torchvision.models import VGG11_Weights

    url = VGG11_Weights.IMAGENET1K_V1.url
    folder = Path(root) if root is not None else data_root() / "weights"
    path = folder / url.rsplit("/", 1)[-1]
    if not path.is_file() and not downloads_allowed(download):
        raise WeightsUnavailableError(
            f"VGG-11 ImageNet weights not found at {path} and downloads are not allowed "
            f"(download=False or STRUCTLAB_OFFLINE=1); fetch {url} into {folder}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        state = torch.hub.load_state_dict_from_url(url, model_dir=str(folder), progress=False,
                                                   check_hash=True, weights_only=True)
    except Exception as err:  # network errors come in many types
        reason = " ".join(str(err).split()) or type(err).__name__
        raise WeightsUnavailableError(
            f"VGG-11 ImageNet weights unavailable: could not download {url} into {folder} "
            f"({type(err).__name__}: {reason[:200]})") from None
    keys = _torchvision_key_map(IMAGENET_VGG11_CONFIG)
    mine = {keys[k]: v for k, v in state.items() if k in keys}
    model = _model(IMAGENET_VGG11_CONFIG)
    missing = set(model.state_dict()) - set(mine) - {"mean", "std"}
    if missing:
        raise WeightsUnavailableError(f"unexpected VGG-11 checkpoint: missing {sorted(missing)}")
    model.load_state_dict(mine, strict=False)
    return {"name": "imagenet-vgg11", "config": dict(IMAGENET_VGG11_CONFIG),
            "state": {k: v.detach().cpu() for k, v in model.state_dict().items()}}


@dataclass
class TransferTask:
    """A target of transfer: its data, classes, and the classifier it starts from (``head``:
    rows of the source classifier to keep, or ``None`` for a re-initialised layer)."""

    name: str
    train: LabelledTensors
    test: LabelledTensors
    num_classes: int
    head: tuple[int, ...] | None = None


def fullscale_task(name: str, *, image_size: int = 224, download: bool | None = None
                   ) -> TransferTask:
    """Imagenette, Imagewoof or Galaxy10 (§7.3) through :func:`structlab.data.load_dataset`
    (their real download code; offline it raises one
    :class:`~structlab.data.DatasetUnavailableError`)."""
    heads = {"imagenette": IMAGENETTE_CLASSES, "imagewoof": IMAGEWOOF_CLASSES, "galaxy10": None}
    if name not in heads:
        raise ValueError(f"unknown full-scale target {name!r}; choose from {sorted(heads)}")
    train = load_dataset(name, "train", download=download, image_size=image_size)
    test = load_dataset(name, "test", download=download, image_size=image_size)
    return TransferTask(name, train, test, 10, heads[name])


def class_subset(data: LabelledTensors, classes: Sequence[int], name: str) -> LabelledTensors:
    """The examples of ``classes``, relabelled ``0 .. len(classes) - 1`` in that order."""
    classes = list(classes)
    lookup = torch.full((int(data.targets.max()) + 1,), -1, dtype=torch.long)
    lookup[torch.tensor(classes)] = torch.arange(len(classes))
    keep = lookup[data.targets] >= 0
    names = None if data.classes is None else [data.classes[c] for c in classes]
    return LabelledTensors(data.inputs[keep], lookup[data.targets[keep]], name=name,
                           classes=names)


def book_source_data(n_train: int | None = None, n_test: int | None = None, *, seed: int = 0
                     ) -> tuple[LabelledTensors, LabelledTensors]:
    """Fashion-MNIST classes 0-4 (train, test), optionally seeded subsets."""
    tr = class_subset(load_dataset("fashion-mnist", "train"), range(5), "fashion-0-4/train")
    te = class_subset(load_dataset("fashion-mnist", "test"), range(5), "fashion-0-4/test")
    return tr.subset(n_train, seed=seed), te.subset(n_test, seed=seed)


def book_task(target: str = "fashion-5-9", n_train: int | None = None,
              n_test: int | None = None, *, seed: int = 0) -> TransferTask:
    """A book-scale target: ``"fashion-5-9"`` (Fashion-MNIST classes 5-9 as 0-4) or
    ``"mnist5k"`` (the 5,000 offline MNIST digits); the classifier is re-initialised."""
    if target == "fashion-5-9":
        tr = class_subset(load_dataset("fashion-mnist", "train"), range(5, 10),
                          "fashion-5-9/train")
        te = class_subset(load_dataset("fashion-mnist", "test"), range(5, 10),
                          "fashion-5-9/test")
        k = 5
    elif target == "mnist5k":
        tr, te, k = load_dataset("mnist5k", "train"), load_dataset("mnist5k", "test"), 10
    else:
        raise ValueError(f"unknown book target {target!r}; use 'fashion-5-9' or 'mnist5k'")
    return TransferTask(target, tr.subset(n_train, seed=seed), te.subset(n_test, seed=seed), k)


def _iteration_loader(data: LabelledTensors, steps: int, batch_size: int, seed: int
                      ) -> DataLoader:
    """``steps`` mini-batches of ``batch_size`` (seeded reshuffles, no replacement within a
    pass over the data)."""
    g = torch.Generator().manual_seed(seed)
    sampler = RandomSampler(data, replacement=False, num_samples=steps * batch_size, generator=g)
    return DataLoader(data, batch_size=batch_size, sampler=sampler, drop_last=True)


def pretrain_source(
    train: LabelledTensors,
    test: LabelledTensors,
    *,
    config: Mapping[str, Any] = BOOK_SOURCE_CONFIG,
    epochs: int = 3,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    device: str | torch.device = "auto",
    store: ExperimentStore | None = None,
) -> dict[str, Any]:
    """Pretrain the book's source network (Adam) and return it as a source
    (``{"name", "config", "state", "accuracy"}``, state on the CPU); stored when ``store``."""
    params = {"train": train, "test": test, "config": dict(config), "epochs": epochs,
              "batch_size": batch_size, "lr": lr, "seed": seed}

    def compute() -> dict[str, Any]:
        dev = get_device(device)
        seed_everything(seed)
        model = _model(config).to(dev)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        fit(model, train, epochs=epochs, optimizer=opt, batch_size=batch_size, device=dev,
            seed=seed, quiet=True)
        acc = evaluate(model, test, device=dev)["accuracy"]
        return {"name": train.name, "config": dict(config), "accuracy": acc,
                "state": {k: v.detach().cpu() for k, v in model.state_dict().items()}}

    return run_experiment(store, "pretrain_source", params, compute)


def transfer_model(source: Mapping[str, Any], task: TransferTask, *, seed: int = 0,
                   device: str | torch.device = "cpu") -> TransferVGG:
    """The source network with its classifier replaced for ``task`` (§7.3), on ``device``."""
    model = _model(source["config"])
    model.load_state_dict(source["state"])
    if task.head is not None:
        model.replace_head(rows=task.head)
    else:
        model.replace_head(num_classes=task.num_classes,
                           generator=torch.Generator().manual_seed(seed))
    return model.to(get_device(device))


@torch.no_grad()
def inference_flops(model: nn.Module, input_shape: Sequence[int],
                    device: str | torch.device = "cpu") -> int:
    """FLOPs of one forward pass of one input of shape ``input_shape`` (no batch dimension),
    counted by ``torch.utils.flop_counter.FlopCounterMode`` (2 per multiply-add of the
    convolutions and matrix products) in evaluation mode."""
    was_training = model.training
    model.eval()
    x = torch.zeros((1, *input_shape), device=get_device(device))
    try:
        with FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


class _Trace(Callback):
    """Inference FLOPs and layer widths every ``every`` steps (after the structural changes)."""

    def __init__(self, every: int, input_shape: Sequence[int], device: torch.device) -> None:
        self.every, self.input_shape, self.device = every, tuple(input_shape), device
        self.rows: list[dict] = []

    def _row(self, state: TrainState) -> None:
        self.rows.append({"step": state.step,
                          "flops": inference_flops(state.model, self.input_shape, self.device),
                          **state.model.widths()})

    def on_train_begin(self, state: TrainState) -> None:
        self._row(state)

    def on_step_end(self, state: TrainState) -> None:
        if state.step % self.every == 0:
            self._row(state)


def finetune_run(
    task: TransferTask,
    source: Mapping[str, Any],
    method: str,
    seed: int = 0,
    *,
    steps: int = 1000,
    batch_size: int = 64,
    every: int = 50,
    lr: float = 3e-4,
    weight_decay: float = 1e-3,
    delta: float = 3e-2,
    eps: float = 1e-2,
    candidates_per_unit: int = 100,
    buffer_ratio: float = 2.0,
    min_samples: int = 64,
    initial_phi: float | None = 1.0,
    scaling: str = "samples",
    baseline_data: str = "buffer",
    validation_size: int = 512,
    device: str | torch.device = "auto",
    store: ExperimentStore | None = None,
) -> dict[str, Any]:
    """Fine-tune ``source`` on ``task`` with one method for one seed (§7.3, Figure 35).

    Args:
        task: the target (:func:`book_task`, :func:`fullscale_task`).
        source: a source network (:func:`pretrain_source`, :func:`imagenet_vgg11`).
        method: ``"static"`` (plain fine-tuning), ``"dyno"`` (:class:`DYNO`), ``"sft"``
            (:class:`AutoRGN`) or ``"dyno+sft"``.
        steps, batch_size: iterations and samples per iteration (1000 x 64).
        every: trigger period of DYNO and of the FLOPs / widths trace (50).
        lr, weight_decay: Adam's settings (3e-4, 1e-3).
        delta, eps, candidates_per_unit, buffer_ratio, min_samples, initial_phi, scaling,
            baseline_data: DYNO's settings (:class:`DYNO`).
        validation_size: training images (drawn with ``seed``) ``phi*`` is measured on when
            ``baseline_data="validation"`` (the book targets have no validation split).
        store: an experiment store: the run is stored under ``finetune_run`` and resumed.

    Returns:
        A dict: ``method``, ``seed``, ``task``, ``accuracy`` (final test accuracy in [0, 1]),
        ``flops`` (final inference FLOPs per image), ``flops_initial``, ``trace`` (per
        evaluation: ``step``, ``flops`` and each layer's width), ``widths`` / ``initial_widths``,
        ``grown`` / ``pruned`` (total units per layer), ``events`` (DYNO's changes),
        ``train_time`` (seconds of :func:`~structlab.training.fit`), ``dyno_time``,
        ``train_loss`` (mean over the run).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {METHODS}")
    params = {"task": task, "source": dict(source), "method": method, "seed": seed,
              "steps": steps, "batch_size": batch_size, "every": every, "lr": lr,
              "weight_decay": weight_decay, "delta": delta, "eps": eps,
              "candidates_per_unit": candidates_per_unit, "buffer_ratio": buffer_ratio,
              "min_samples": min_samples, "initial_phi": initial_phi}
    if scaling != "samples" or baseline_data != "buffer":  # older records keep their keys
        params.update(scaling=scaling, baseline_data=baseline_data,
                      validation_size=validation_size)

    def compute() -> dict[str, Any]:
        dev = get_device(device)
        seed_everything(seed)
        model = transfer_model(source, task, seed=seed, device=dev)
        shape = tuple(task.train.inputs.shape[1:])
        initial = model.widths()
        opt = torch.optim.Adam(rgn_param_groups(model), lr=lr, weight_decay=weight_decay)
        callbacks: list[Callback] = []
        dyno = None
        if method in ("dyno", "dyno+sft"):
            dyno = DYNO(every=every, delta=delta, eps=eps,
                        candidates_per_unit=candidates_per_unit, buffer_ratio=buffer_ratio,
                        min_samples=min_samples, initial_phi=initial_phi, seed=seed,
                        scaling=scaling, baseline_data=baseline_data,
                        validation=None if baseline_data == "buffer" else
                        task.train.subset(validation_size, seed=seed).inputs.to(dev))
            callbacks.append(dyno)
        if method in ("sft", "dyno+sft"):
            callbacks.append(AutoRGN(lr))
        trace = _Trace(every, shape, dev)
        callbacks.append(trace)
        loader = _iteration_loader(task.train, steps, batch_size, seed)
        start = time.perf_counter()
        history = fit(model, loader, epochs=1, optimizer=opt, device=dev, callbacks=callbacks,
                      seed=seed, quiet=True)
        train_time = time.perf_counter() - start
        acc = evaluate(model, task.test, device=dev)["accuracy"]
        events = [] if dyno is None else list(dyno.events)
        grown = {n: 0 for n in initial}
        pruned = {n: 0 for n in initial}
        for e in events:
            grown[e["layer"]] += e["grown"]
            pruned[e["layer"]] += e["pruned"]
        return {
            "method": method, "seed": seed, "task": task.name, "accuracy": acc,
            "flops": inference_flops(model, shape, dev), "flops_initial": trace.rows[0]["flops"],
            "trace": trace.rows, "widths": model.widths(), "initial_widths": initial,
            "grown": grown, "pruned": pruned, "events": events, "train_time": train_time,
            "dyno_time": 0.0 if dyno is None else dyno.time,
            "train_loss": history.train_loss[-1] if history.train_loss else float("nan"),
        }

    tag = "" if scaling == "samples" and baseline_data == "buffer" else (
        f"-{scaling}-{baseline_data}")
    name = re.sub(r"[^A-Za-z0-9._=-]+", "-",
                  f"finetune-{task.name}-{method}{tag}-seed{seed}")
    return run_experiment(store, name, params, compute)


def load_targets(source: str, targets: Sequence[str], *, n_train: int | None = None,
                 n_test: int | None = None, image_size: int = 224, seed: int = 0,
                 download: bool | None = None) -> dict[str, TransferTask]:
    """The target tasks of a chapter run, checked against the source before anything loads:
    the book source (``"book"``, 28 x 28 grey images) takes :data:`BOOK_TARGETS`, the ImageNet
    VGG-11 (``"imagenet-vgg11"``) takes :data:`FULLSCALE_TARGETS`. Book targets are subsets of
    ``n_train`` / ``n_test`` images (``None``: all) drawn with ``seed``."""
    allowed = {"book": BOOK_TARGETS, "imagenet-vgg11": FULLSCALE_TARGETS}
    if source not in allowed:
        raise ValueError(f"unknown source {source!r}; choose from {sorted(allowed)}")
    wrong = [t for t in targets if t not in allowed[source]]
    if wrong or not targets:
        raise ValueError(f"source {source!r} transfers to {', '.join(allowed[source])}; "
                         f"got {', '.join(wrong) if wrong else 'no target'}")
    if source == "book":
        return {t: book_task(t, n_train, n_test, seed=seed) for t in targets}
    return {t: fullscale_task(t, image_size=image_size, download=download) for t in targets}


def load_source(source: str, *, n_train: int | None = None, epochs: int = 3, seed: int = 0,
                device: str | torch.device = "auto", store: ExperimentStore | None = None,
                download: bool | None = None,
                config: Mapping[str, Any] = BOOK_SOURCE_CONFIG) -> dict[str, Any]:
    """The pretrained network: ``"book"`` pretrains the small VGG (``config``, default
    :data:`BOOK_SOURCE_CONFIG`) on Fashion-MNIST classes 0-4 (``n_train`` images, ``None``: all
    30,000; tested on all 5,000 test images) with :func:`pretrain_source`;
    ``"imagenet-vgg11"`` is :func:`imagenet_vgg11`."""
    if source == "book":
        train, test = book_source_data(n_train, None, seed=seed)
        return pretrain_source(train, test, config=config, epochs=epochs, seed=seed,
                               device=device, store=store)
    if source == "imagenet-vgg11":
        return imagenet_vgg11(download=download)
    raise ValueError(f"unknown source {source!r}; choose from book, imagenet-vgg11")
