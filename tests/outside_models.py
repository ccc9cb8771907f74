"""The outside models the structlab.graph tests run on: torchvision resnet18, resnet50 and
vgg11_bn (built without weights, offline) and a user nn.Sequential, for 3 x 32 x 32 inputs."""

from __future__ import annotations

import torch
import torchvision
from torch import nn


def sequential() -> nn.Module:
    """A user's plain convolutional network."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 12, 3, padding=1), nn.BatchNorm2d(12), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(12 * 8 * 8, 16), nn.ReLU(), nn.Linear(16, 10),
    )


BUILDERS = {
    "resnet18": lambda: torchvision.models.resnet18(weights=None, num_classes=10),
    "resnet50": lambda: torchvision.models.resnet50(weights=None, num_classes=10),
    "vgg11_bn": lambda: torchvision.models.vgg11_bn(weights=None, num_classes=10),
    "sequential": sequential,
}


def build(name: str) -> nn.Module:
    """Model ``name`` with seed-0 weights."""
    torch.manual_seed(0)
    return BUILDERS[name]()
