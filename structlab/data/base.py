"""The dataset type every loader returns, the cache location and the error for missing data."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

__all__ = ["LabelledTensors", "DatasetUnavailableError", "data_root", "train_test_split"]


class DatasetUnavailableError(RuntimeError):
    """A dataset could be found neither in the cache, nor in a system copy, nor downloaded."""


class LabelledTensors(TensorDataset):
    """A ``TensorDataset`` of ``(inputs, targets)`` with a name and class names.

    ``inputs`` are float32: images (N, C, H, W) in [0, 1], or features (N, D). ``targets`` are
    int64 class indices (N,) for classification or float32 (N, T) for regression.
    """

    def __init__(
        self,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        *,
        name: str,
        classes: Sequence[str] | None = None,
    ) -> None:
        if len(inputs) != len(targets):
            raise ValueError(f"{len(inputs)} inputs but {len(targets)} targets")
        super().__init__(inputs, targets)
        self.name = name
        self.classes = list(classes) if classes is not None else None

    @property
    def inputs(self) -> torch.Tensor:
        return self.tensors[0]

    @property
    def targets(self) -> torch.Tensor:
        return self.tensors[1]

    @property
    def num_classes(self) -> int | None:
        return len(self.classes) if self.classes is not None else None

    def subset(self, n: int | None, *, seed: int = 0, name: str | None = None) -> LabelledTensors:
        """A seeded random subset of ``n`` examples (all of them when ``n`` is None)."""
        if n is None or n >= len(self):
            return self
        if n <= 0:
            raise ValueError(f"subset size must be positive, got {n}")
        generator = torch.Generator().manual_seed(seed)
        index = torch.randperm(len(self), generator=generator)[:n]
        return LabelledTensors(self.inputs[index], self.targets[index],
                               name=name or f"{self.name}[{n}]", classes=self.classes)

    def to(self, device: str | torch.device) -> LabelledTensors:
        """The same data on ``device`` (useful on a GPU where the data fits in memory)."""
        return LabelledTensors(self.inputs.to(device), self.targets.to(device), name=self.name,
                               classes=self.classes)

    def __repr__(self) -> str:
        return (f"LabelledTensors(name={self.name!r}, n={len(self)}, "
                f"inputs={tuple(self.inputs.shape)}, targets={tuple(self.targets.shape)})")


def data_root() -> Path:
    """Where datasets are cached.

    ``$STRUCTLAB_DATA_DIR`` when set; otherwise ``data/cache`` of the source checkout (the
    repository's ``data/`` folder), or ``~/.cache/structlab`` for a non-editable install.
    """
    env = os.environ.get("STRUCTLAB_DATA_DIR")
    if env:
        return Path(env).expanduser()
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "data").is_dir() and (checkout / "pyproject.toml").is_file():
        return checkout / "data" / "cache"
    return Path.home() / ".cache" / "structlab"


def train_test_split(
    inputs: torch.Tensor, targets: torch.Tensor, *, test_fraction: float, seed: int
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """A seeded split into (train, test) with ``round(test_fraction * N)`` test examples."""
    n = len(inputs)
    n_test = round(test_fraction * n)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    test, train = perm[:n_test], perm[n_test:]
    return (inputs[train], targets[train]), (inputs[test], targets[test])
