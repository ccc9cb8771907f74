"""ResNet-18 of several widths: the hand-designed yardstick of the paper's convolutional search
(section 3 and appendix C: "we change the number of parameters by changing the width (number of
channels) of the residual blocks", Adam at learning rate 0.001 with a cosine schedule).

The network is the CIFAR variant of ResNet-18 (He et al. 2016): a 3x3 stem convolution, four
stages of two basic blocks with ``width``, ``2 width``, ``4 width`` and ``8 width`` channels
(strides 1, 2, 2, 2), global average pooling and a dense classifier. ``width=64`` is the usual
ResNet-18 (11.2 M parameters on CIFAR-10); the parameter count grows as ``width**2``.

>>> from structlab.heuristics.baselines import ResNet18
>>> sum(p.numel() for p in ResNet18(3, 10, width=64).parameters())
11173962
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from structlab.data.base import LabelledTensors
from structlab.experiment_store import ExperimentStore, run_experiment
from structlab.metrics import count_parameters
from structlab.reproducibility import get_device, seed_everything
from structlab.training import evaluate, fit

__all__ = ["BasicBlock", "ResNet18", "resnet18_width_for", "resnet_run"]


class BasicBlock(nn.Module):
    """``relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))`` with 3x3 convolutions; the shortcut
    is a strided 1x1 convolution with batch norm where the shape changes, else the identity.

    Shapes: ``(N, c_in, H, W) -> (N, c_out, H / stride, W / stride)``."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 for small images with base ``width`` (64 in the original).

    Shapes: ``(N, in_channels, H, W) -> (N, n_classes)``."""

    def __init__(self, in_channels: int, n_classes: int, width: int = 64) -> None:
        super().__init__()
        if in_channels < 1 or n_classes < 2 or width < 1:
            raise ValueError("in_channels and width must be at least 1, n_classes at least 2")
        self.width = width
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU())
        blocks: list[nn.Module] = []
        c_in = width
        for stage, stride in enumerate((1, 2, 2, 2)):
            c_out = width * 2 ** stage
            blocks += [BasicBlock(c_in, c_out, stride), BasicBlock(c_out, c_out)]
            c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(c_in, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)).mean(dim=(2, 3)))


def resnet18_width_for(params: int, in_channels: int, n_classes: int) -> int:
    """The smallest base width whose :class:`ResNet18` has at least ``params`` parameters: the
    ResNet-18 "with similar parameters" that the paper sets beside a searched network."""
    if params < 1:
        raise ValueError(f"params must be positive, got {params}")
    width = 1
    while count_parameters(ResNet18(in_channels, n_classes, width)) < params:
        width += 1
    return width


def resnet_run(train: LabelledTensors, test: LabelledTensors, *, width: int, epochs: int,
               lr: float, batch_size: int, seed: int, device: str | torch.device = "auto",
               quiet: bool = True, store: ExperimentStore | None = None) -> dict[str, Any]:
    """A :class:`ResNet18` of base ``width`` trained from scratch with Adam at ``lr`` and a
    cosine schedule over ``epochs`` epochs (the paper's appendix C protocol, with ``epochs``
    instead of its 200). Returns ``width``, ``params``, ``epochs``, the test ``accuracy`` and
    ``loss``, and the test accuracy after every epoch (``curve``)."""
    if width < 1 or epochs < 1:
        raise ValueError("width and epochs must be at least 1")
    n_classes = len(train.classes) if train.classes else int(train.targets.max()) + 1

    def compute() -> dict[str, Any]:
        seed_everything(seed)
        dev = get_device(device)
        model = ResNet18(train.inputs.shape[1], n_classes, width).to(dev)
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
        history = fit(model, train, epochs=epochs, optimizer=optimizer, scheduler=scheduler,
                      batch_size=batch_size, device=dev, val=test, seed=seed, quiet=quiet,
                      desc=f"ResNet-18 width {width}")
        scores = evaluate(model, test, device=dev)
        return {"width": width, "params": count_parameters(model), "epochs": epochs,
                "accuracy": scores["accuracy"], "loss": scores["loss"],
                "curve": list(history.val_acc)}

    key = dict(train=train, test=test, width=width, epochs=epochs, lr=lr,
               batch_size=batch_size, seed=seed)
    return run_experiment(store, f"resnet18-w{width}-seed{seed}", key, compute)
