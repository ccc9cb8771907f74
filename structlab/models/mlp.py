"""A multilayer perceptron whose hidden layers are resizable slots."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from structlab.models.slots import Consumer, LayerSlot, ResizableModel, check_widths

__all__ = ["MLP"]


class MLP(ResizableModel):
    """``in_features -> hidden[0] -> ... -> hidden[-1] -> out_features``, flattening its input.

    Each hidden layer is ``Linear -> [BatchNorm1d] -> activation`` with its own activation module
    (``acts[i]``), so a forward hook on ``acts[i]`` sees the post-activations ``H`` of layer ``i``.

    Args:
        in_features: size of the flattened input.
        hidden: widths of the hidden layers (may be empty: a linear model).
        out_features: number of outputs.
        activation: factory called once per hidden layer, e.g. ``nn.ReLU`` or
            ``lambda: nn.LeakyReLU(0.1)``.
        batchnorm: put a ``BatchNorm1d`` between each hidden ``Linear`` and its activation.
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int],
        out_features: int,
        activation: Callable[[], nn.Module] = nn.ReLU,
        batchnorm: bool = False,
    ) -> None:
        super().__init__()
        hidden = list(hidden)
        check_widths([in_features, out_features, *hidden], "MLP sizes")
        sizes = [in_features, *hidden, out_features]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.norms = nn.ModuleList(
            nn.BatchNorm1d(w) if batchnorm else nn.Identity() for w in hidden
        )
        self.acts = nn.ModuleList(activation() for _ in hidden)
        self.batchnorm = batchnorm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for layer, norm, act in zip(self.layers[:-1], self.norms, self.acts):
            x = act(norm(layer(x)))
        return self.layers[-1](x)

    def layer_slots(self) -> list[LayerSlot]:
        """One slot per hidden layer, named ``hidden0``, ``hidden1``, ..."""
        return [
            LayerSlot(
                name=f"hidden{i}",
                producers=[self.layers[i]],
                norms=[self.norms[i]] if self.batchnorm else [],
                consumers=[Consumer(self.layers[i + 1])],
                activation=self.acts[i],
                kind="dense",
            )
            for i in range(len(self.acts))
        ]
