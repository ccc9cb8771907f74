"""Full-scale datasets, obtained through their real download code.

Each loader looks in the cache (``data_root() / name``) first and downloads there when allowed.
Any failure (no network, a missing optional package, a corrupt archive) becomes one
:class:`DatasetUnavailableError` that names the dataset, where it looked and how to get it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from structlab.data.base import DatasetUnavailableError, LabelledTensors

__all__ = ["FULLSCALE_SOURCES", "load_fullscale"]

ROTMNIST_URL = "http://www.iro.umontreal.ca/~lisa/icml2007data/mnist_rotation_new.zip"
GALAXY10_URL = "https://zenodo.org/records/10845026/files/Galaxy10_DECals.h5"
IMAGEWOOF_URL = "https://s3.amazonaws.com/fast-ai-imageclas/imagewoof2-160.tgz"
ISIC2019_URL = "https://isic-challenge-data.s3.amazonaws.com/2019/"
ISIC2019_FILES = ("ISIC_2019_Training_Input.zip", "ISIC_2019_Training_GroundTruth.csv")

#: Where each full-scale dataset comes from, as shown in error messages and data/README.md.
FULLSCALE_SOURCES = {
    "mnist": "torchvision.datasets.MNIST (yann.lecun.com mirrors)",
    "cifar10": "torchvision.datasets.CIFAR10 (www.cs.toronto.edu/~kriz)",
    "cifar100": "torchvision.datasets.CIFAR100 (www.cs.toronto.edu/~kriz)",
    "rotmnist": ROTMNIST_URL,
    "galaxy10": GALAXY10_URL + " (needs `pip install h5py`)",
    "imagenette": "torchvision.datasets.Imagenette (fast.ai, 160px)",
    "imagewoof": IMAGEWOOF_URL,
    "isic2019": ISIC2019_URL + " + ".join(ISIC2019_FILES) + " (9.1 GB; ISIC Archive, CC BY-NC)",
}


def _to_tensors(images: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0)
    if x.ndim == 3:
        x = x.unsqueeze(1)
    elif x.ndim == 4 and x.shape[-1] in (1, 3):
        x = x.permute(0, 3, 1, 2).contiguous()
    return x, torch.from_numpy(np.asarray(labels, dtype=np.int64))


def _torchvision_arrays(cls_name: str, root: Path, split: str, download: bool):
    import torchvision.datasets as tvd

    ds = getattr(tvd, cls_name)(str(root), train=(split == "train"), download=download)
    data = ds.data.numpy() if hasattr(ds.data, "numpy") else ds.data
    return _to_tensors(data, np.asarray(ds.targets)), list(ds.classes)


def _rotmnist(root: Path, split: str, download: bool):
    """Rotated MNIST (Larochelle et al., 2007): 12,000 train and 50,000 test digits."""
    from torchvision.datasets.utils import download_and_extract_archive

    name = ("mnist_all_rotation_normalized_float_train_valid.amat" if split == "train"
            else "mnist_all_rotation_normalized_float_test.amat")
    if not (root / name).is_file():
        if not download:
            raise FileNotFoundError(root / name)
        download_and_extract_archive(ROTMNIST_URL, str(root))
    table = np.loadtxt(root / name, dtype=np.float32)
    # The .amat images are stored column-major; transpose to the usual orientation.
    images = table[:, :-1].reshape(-1, 28, 28).transpose(0, 2, 1)
    x = torch.from_numpy(np.ascontiguousarray(images)).unsqueeze(1)
    return (x, torch.from_numpy(table[:, -1].astype(np.int64))), [str(d) for d in range(10)]


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear",
                                           antialias=True, align_corners=False)


def _galaxy10(root: Path, split: str, download: bool, image_size: int = 64):
    """Galaxy10 DECals: 17,736 galaxy images (256x256x3), 10 classes; seeded 90/10 split."""
    try:
        import h5py
    except ImportError as err:
        raise ImportError("galaxy10 needs h5py: `pip install h5py`") from err
    from torchvision.datasets.utils import download_url

    path = root / "Galaxy10_DECals.h5"
    if not path.is_file():
        if not download:
            raise FileNotFoundError(path)
        download_url(GALAXY10_URL, str(root))
    with h5py.File(path, "r") as handle:
        labels = np.asarray(handle["ans"], dtype=np.int64)
        chunks = []
        for start in range(0, len(labels), 512):
            block = torch.from_numpy(np.asarray(handle["images"][start:start + 512]))
            block = block.permute(0, 3, 1, 2).float().div_(255.0)
            chunks.append(_resize(block, image_size))
    x = torch.cat(chunks)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    n_test = len(x) // 10
    index = perm[n_test:] if split == "train" else perm[:n_test]
    classes = ["disturbed", "merging", "round smooth", "in-between round smooth",
               "cigar-shaped smooth", "barred spiral", "unbarred tight spiral",
               "unbarred loose spiral", "edge-on without bulge", "edge-on with bulge"]
    return (x[index], torch.from_numpy(labels)[index]), classes


def _image_folder(folder: Path, image_size: int):
    from torchvision import transforms
    from torchvision.datasets import ImageFolder

    tf = transforms.Compose([transforms.Resize(image_size), transforms.CenterCrop(image_size),
                             transforms.ToTensor()])
    ds = ImageFolder(str(folder), transform=tf)
    xs, ys = zip(*[ds[i] for i in range(len(ds))])
    return (torch.stack(xs), torch.tensor(ys, dtype=torch.int64)), list(ds.classes)


def _imagenette(root: Path, split: str, download: bool, image_size: int = 64):
    from torchvision.datasets import Imagenette

    folder_split = "train" if split == "train" else "val"
    ds = Imagenette(str(root), split=folder_split, size="160px", download=download
                    and not (root / "imagenette2-160").is_dir())
    return _image_folder(root / "imagenette2-160" / folder_split, image_size)[0], [
        names[0] for names in ds.classes]


def _imagewoof(root: Path, split: str, download: bool, image_size: int = 64):
    from torchvision.datasets.utils import download_and_extract_archive

    folder = root / "imagewoof2-160" / ("train" if split == "train" else "val")
    if not folder.is_dir():
        if not download:
            raise FileNotFoundError(folder)
        download_and_extract_archive(IMAGEWOOF_URL, str(root))
    return _image_folder(folder, image_size)


def _isic2019(root: Path, split: str, download: bool, image_size: int = 64):
    """ISIC 2019 training set: 25,331 dermoscopic images, 8 diagnoses plus the unknown class
    (the 9 columns of the ground truth), resized to ``image_size`` and cached as a tensor file;
    a seeded 90/10 split of it gives train and test (thesis §4.5)."""
    from PIL import Image
    from torchvision.datasets.utils import download_and_extract_archive, download_url
    from torchvision.transforms.functional import pil_to_tensor

    cache = root / f"isic2019_{image_size}px.pt"
    if cache.is_file():
        x, y, classes = torch.load(cache)
    else:
        zip_name, csv_name = ISIC2019_FILES
        images_dir = root / "ISIC_2019_Training_Input"
        if not (root / csv_name).is_file() or not images_dir.is_dir():
            if not download:
                raise FileNotFoundError(images_dir)
            download_url(ISIC2019_URL + csv_name, str(root))
            download_and_extract_archive(ISIC2019_URL + zip_name, str(root))
        lines = (root / csv_name).read_text().strip().splitlines()
        classes = lines[0].split(",")[1:]
        names, labels = [], []
        for line in lines[1:]:
            fields = line.split(",")
            names.append(fields[0])
            labels.append(int(np.argmax([float(v) for v in fields[1:]])))
        chunks = []
        for name in names:
            with Image.open(images_dir / f"{name}.jpg") as img:
                t = pil_to_tensor(img.convert("RGB")).float().div_(255.0).unsqueeze(0)
            chunks.append(_resize(t, image_size))
        x, y = torch.cat(chunks), torch.tensor(labels, dtype=torch.int64)
        tmp = cache.with_suffix(".tmp")
        torch.save((x, y, classes), tmp)
        tmp.replace(cache)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    n_test = len(x) // 10
    index = perm[n_test:] if split == "train" else perm[:n_test]
    return (x[index], y[index]), list(classes)


_LOADERS: dict[str, Callable] = {
    "mnist": lambda root, split, download: _torchvision_arrays("MNIST", root, split, download),
    "cifar10": lambda root, split, download: _torchvision_arrays("CIFAR10", root, split,
                                                                 download),
    "cifar100": lambda root, split, download: _torchvision_arrays("CIFAR100", root, split,
                                                                  download),
    "rotmnist": _rotmnist,
    "galaxy10": _galaxy10,
    "imagenette": _imagenette,
    "imagewoof": _imagewoof,
    "isic2019": _isic2019,
}


def load_fullscale(name: str, split: str, *, root: Path, download: bool,
                   **kwargs: object) -> LabelledTensors:
    """Load a full-scale dataset into memory, downloading it into ``root / name`` if allowed."""
    folder = root / name
    try:
        (inputs, targets), classes = _LOADERS[name](folder, split, download, **kwargs)
    except Exception as err:
        how = ("downloads were not allowed (download=False or STRUCTLAB_OFFLINE=1)"
               if not download else f"{type(err).__name__}: {err}")
        raise DatasetUnavailableError(
            f"dataset {name!r} ({split}) is not available: {how}. Looked in {folder}. "
            f"Source: {FULLSCALE_SOURCES[name]}. On a machine with internet access run "
            f"`structlab data fetch {name}` (or load_dataset({name!r}, download=True)), or copy "
            f"the files into {folder} (see data/README.md)."
        ) from err
    return LabelledTensors(inputs, targets, name=f"{name}/{split}", classes=classes)
