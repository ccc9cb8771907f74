"""Resizable models for structural learning (thesis chapter 3; used by chapters 5-6).

Every model exposes its resizable hidden layers through :meth:`layer_slots`, a list of
:class:`LayerSlot` objects naming the tensors that carry one entry per unit; the operators of
:mod:`structlab.operators` act on models only through that interface.

>>> from structlab.models import MLP
>>> model = MLP(784, [256, 256], 10)
>>> [s.width for s in model.layer_slots()]
[256, 256]
"""

from structlab.models.mlp import MLP
from structlab.models.slots import Consumer, LayerSlot, ResizableModel
from structlab.models.vgg import VGG, VGG_CONFIGS
from structlab.models.wrn import WideBlock, WideResNet

__all__ = [
    "Consumer",
    "LayerSlot",
    "MLP",
    "ResizableModel",
    "VGG",
    "VGG_CONFIGS",
    "WideBlock",
    "WideResNet",
]
