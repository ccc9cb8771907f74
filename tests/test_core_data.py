"""The dataset registry, the offline error path and the derived datasets."""

from __future__ import annotations

import pytest
import torch

from structlab.data import (
    DatasetUnavailableError,
    group_augmented,
    list_datasets,
    load_dataset,
    pad_images,
    rotate_images,
    rotated,
)
from structlab.data import offline as offline_module


@pytest.mark.parametrize(
    ("name", "n_train", "shape"),
    [("mnist5k", 4000, (1, 28, 28)), ("digits", 1438, (1, 8, 8)),
     ("two-spirals", 800, (2,)), ("regression-2d", 1280, (2,))],
)
def test_offline_datasets_have_documented_shapes(name, n_train, shape):
    train, test = load_dataset(name, "train"), load_dataset(name, "test")
    assert len(train) == n_train
    assert tuple(train.inputs.shape[1:]) == shape
    assert train.inputs.dtype == torch.float32
    assert float(train.inputs.min()) >= -1.5 and float(train.inputs.max()) <= 1.5
    # train and test are disjoint pieces of one seeded split
    assert len(train) + len(test) == {"mnist5k": 5000, "digits": 1797, "two-spirals": 1000,
                                      "regression-2d": 1600}[name]


def test_fashion_mnist_is_available_offline():
    train = load_dataset("fashion-mnist", "train", download=False)
    test = load_dataset("fashion-mnist", "test", download=False)
    assert train.inputs.shape == (60000, 1, 28, 28) and len(test) == 10000
    assert train.targets.bincount().tolist() == [6000] * 10
    assert 0.0 <= float(train.inputs.min()) and float(train.inputs.max()) <= 1.0
    assert train.classes[0] == "T-shirt/top"


def test_nf_features_has_exactly_nf_independent_features():
    for n_f in (1, 8, 32):
        data = load_dataset("nf-features", "train", n_f=n_f)
        assert data.inputs.shape == (4500, 64)
        # float32 storage leaves ~1e-7 relative noise in the dependent columns
        assert int(torch.linalg.matrix_rank(data.inputs.double(), rtol=1e-4)) == n_f
        # thresholding at the mean gives roughly balanced classes
        assert 0.35 < float(data.targets.float().mean()) < 0.65
    with pytest.raises(ValueError, match="n_f"):
        load_dataset("nf-features", n_f=0)


def test_seeded_generation_is_deterministic():
    a = load_dataset("nf-features", n_f=4, seed=3)
    b = load_dataset("nf-features", n_f=4, seed=3)
    c = load_dataset("nf-features", n_f=4, seed=4)
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
    assert not torch.equal(a.inputs, c.inputs)


def test_unknown_dataset_lists_known_names():
    with pytest.raises(ValueError) as err:
        load_dataset("imagenet-22k")
    for name in ("fashion-mnist", "mnist5k", "cifar10"):
        assert name in str(err.value)
    with pytest.raises(ValueError, match="splits"):
        load_dataset("digits", "validation")


def test_fullscale_dataset_offline_error_names_dataset_place_and_remedy(offline_cache):
    with pytest.raises(DatasetUnavailableError) as err:
        load_dataset("cifar10", "train")
    message = str(err.value)
    assert "'cifar10'" in message
    assert str(offline_cache / "cifar10") in message
    assert "structlab data fetch cifar10" in message


def test_fashion_mnist_offline_error_when_nowhere(offline_cache, monkeypatch):
    monkeypatch.setattr(offline_module, "FASHION_MNIST_SYSTEM_DIRS", [offline_cache / "nowhere"])
    with pytest.raises(DatasetUnavailableError) as err:
        load_dataset("fashion-mnist", "train")
    assert "apt-get install dataset-fashion-mnist" in str(err.value)
    assert str(offline_cache / "fashion-mnist") in str(err.value)


def test_list_datasets_marks_offline_ones():
    offline = list_datasets(offline_only=True)
    assert set(offline) == {"fashion-mnist", "mnist5k", "digits", "nf-features", "two-spirals",
                            "regression-2d"}
    assert {"mnist", "cifar10", "cifar100", "rotmnist", "galaxy10", "imagenette",
            "imagewoof"} <= set(list_datasets())


def test_rotation_by_quarter_turns_equals_rot90():
    x = torch.rand(5, 2, 12, 12)
    for k in range(4):
        out = rotate_images(x, torch.full((5,), 90.0 * k))
        torch.testing.assert_close(out, torch.rot90(x, k, dims=(-2, -1)), atol=1e-5, rtol=0)


def test_rotation_preserves_mass_of_centred_blob():
    yy, xx = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    blob = torch.exp(-((xx - 13.5) ** 2 + (yy - 10.0) ** 2) / 8.0)[None, None]
    out = rotate_images(blob.repeat(3, 1, 1, 1), torch.tensor([30.0, 145.0, 290.0]))
    torch.testing.assert_close(out.sum(dim=(1, 2, 3)), blob.sum().repeat(3), rtol=1e-3, atol=0)


def test_rotated_dataset_is_seeded_and_keeps_labels():
    data = load_dataset("digits", "test")
    a, b = rotated(data, seed=1), rotated(data, seed=1)
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, data.targets)
    assert not torch.equal(a.inputs, rotated(data, seed=2).inputs)


@pytest.mark.parametrize("group", ["C1", "C2", "C4", "D1", "D2", "D4"])
def test_group_augmentation_is_an_exact_pixel_permutation(group):
    from structlab.equivariance import get_group

    data = load_dataset("digits", "test")
    aug = group_augmented(data, group, seed=0)
    G = get_group(group)
    assert torch.equal(aug.targets, data.targets)
    for i in range(20):
        candidates = [G.act_on_image(data.inputs[i], g) for g in G.elements]
        assert any(torch.equal(aug.inputs[i], c) for c in candidates)
    # the multiset of pixel values of every image is unchanged
    assert torch.equal(aug.inputs.flatten(1).sort(dim=1).values,
                       data.inputs.flatten(1).sort(dim=1).values)
    if group == "C1":
        assert torch.equal(aug.inputs, data.inputs)


def test_group_augmentation_uses_every_element():
    data = load_dataset("digits", "train")
    aug = group_augmented(data, "D4", seed=0)
    from structlab.equivariance import get_group

    G = get_group("D4")
    used = set()
    for i in range(200):
        for j, g in enumerate(G.elements):
            if torch.equal(aug.inputs[i], G.act_on_image(data.inputs[i], g)):
                used.add(j)
                break
    assert used == set(range(8))


def test_pad_images_centres_and_refuses_shrinking():
    data = load_dataset("mnist5k", "test").subset(10)
    padded = pad_images(data, 32)
    assert padded.inputs.shape == (10, 1, 32, 32)
    assert torch.equal(padded.inputs[..., 2:30, 2:30], data.inputs)
    with pytest.raises(ValueError):
        pad_images(data, 20)


def test_isic2019_loader_reads_resizes_and_caches(tmp_path):
    from PIL import Image

    from structlab.data.fullscale import load_fullscale

    folder = tmp_path / "isic2019"
    images = folder / "ISIC_2019_Training_Input"
    images.mkdir(parents=True)
    header = "image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK"
    rows = [header]
    for i in range(20):
        Image.new("RGB", (40, 30), color=(10 * i, 5, 200)).save(images / f"ISIC_{i:07d}.jpg")
        onehot = ["0.0"] * 9
        onehot[i % 8] = "1.0"
        rows.append(f"ISIC_{i:07d}," + ",".join(onehot))
    (folder / "ISIC_2019_Training_GroundTruth.csv").write_text("\n".join(rows) + "\n")
    train = load_fullscale("isic2019", "train", root=tmp_path, download=False, image_size=16)
    test = load_fullscale("isic2019", "test", root=tmp_path, download=False, image_size=16)
    assert train.inputs.shape == (18, 3, 16, 16) and len(test) == 2
    assert train.classes[:2] == ["MEL", "NV"] and int(train.targets.max()) <= 7
    assert (folder / "isic2019_16px.pt").is_file()
    with pytest.raises(DatasetUnavailableError, match="isic2019"):
        load_fullscale("isic2019", "train", root=tmp_path / "empty", download=False)
