"""Datasets of the book behind one registry.

>>> from structlab.data import load_dataset, list_datasets
>>> train = load_dataset("fashion-mnist", "train")          # doctest: +SKIP
>>> train.inputs.shape                                        # doctest: +SKIP
torch.Size([60000, 1, 28, 28])
"""

from structlab.data.base import (
    DatasetUnavailableError,
    LabelledTensors,
    data_root,
    train_test_split,
)
from structlab.data.registry import DATASETS, list_datasets, load_dataset
from structlab.data.transforms import group_augmented, pad_images, rotate_images, rotated

__all__ = [
    "DATASETS",
    "DatasetUnavailableError",
    "LabelledTensors",
    "data_root",
    "group_augmented",
    "list_datasets",
    "load_dataset",
    "pad_images",
    "rotate_images",
    "rotated",
    "train_test_split",
]
