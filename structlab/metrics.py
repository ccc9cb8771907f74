"""Measurements every chapter reports: accuracy, parameters, inference FLOPs and wall time."""

from __future__ import annotations

import time
from collections.abc import Sequence
from types import TracebackType

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode

from structlab.training import evaluate

__all__ = ["accuracy", "count_parameters", "inference_flops", "Timer"]


def accuracy(
    model: nn.Module,
    data: Dataset | DataLoader,
    *,
    device: str | torch.device = "auto",
    batch_size: int = 1024,
) -> float:
    """Top-1 accuracy of ``model`` on ``data`` in evaluation mode, in [0, 1]."""
    return evaluate(model, data, device=device, batch_size=batch_size)["accuracy"]


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of scalar parameters (shared tensors counted once).

    Pruning masks do not change this count; count non-zero weights separately where sparsity
    matters.
    """
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return total


def inference_flops(
    model: nn.Module,
    example: torch.Tensor | Sequence[int],
    *,
    device: str | torch.device | None = None,
) -> int:
    """Floating-point operations of one forward pass, counted by ``torch.utils.flop_counter``.

    Args:
        model: the network; it is run once in evaluation mode without gradients.
        example: an input batch, or the shape of one (``(1, 1, 28, 28)`` counts per image).

    Returns:
        The total FLOPs (a multiply-add counts as 2) of the batch, as PyTorch's flop counter
        reports them for matmuls and convolutions.
    """
    if not isinstance(example, torch.Tensor):
        shape = tuple(int(s) for s in example)
        if any(s <= 0 for s in shape):
            raise ValueError(f"input shape must be positive, got {shape}")
        param = next(model.parameters(), None)
        dev = device or (param.device if param is not None else "cpu")
        example = torch.zeros(shape, device=dev)
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(example)
    model.train(was_training)
    return int(counter.get_total_flops())


class Timer:
    """Wall-clock timer: ``with Timer() as t: ...`` then ``t.seconds``.

    On CUDA the device is synchronized at both ends so that queued kernels are counted.
    """

    def __init__(self, device: str | torch.device | None = None) -> None:
        self.device = torch.device(device) if device is not None else None
        self.seconds = float("nan")
        self._start = 0.0

    def _sync(self) -> None:
        if self.device is not None and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __enter__(self) -> Timer:
        self._sync()
        self._start = time.perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._sync()
        self.seconds = time.perf_counter() - self._start
