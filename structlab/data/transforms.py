"""Derived datasets: randomly rotated images (as rotMNIST) and group-augmented images.

``group_augmented`` applies to each image a uniformly drawn element of one of the pixel-grid
groups C1, C2, C4, D1, D2, D4 (:mod:`structlab.equivariance.groups`); these actions permute
pixels, so they are exact. ``rotated`` rotates each image by a uniform angle in [0, 360) degrees
with bilinear interpolation and zero fill, as rotMNIST was made.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from structlab.data.base import LabelledTensors

__all__ = ["rotate_images", "rotated", "group_augmented", "pad_images"]


def rotate_images(images: torch.Tensor, angles_deg: torch.Tensor) -> torch.Tensor:
    """Rotate each image counter-clockwise (as displayed, row 0 on top) by its angle.

    Args:
        images: (N, C, H, W).
        angles_deg: (N,) angles in degrees. Multiples of 90 degrees on square images equal
            ``torch.rot90(images, k, dims=(-2, -1))`` up to float rounding.

    Returns:
        (N, C, H, W), bilinear interpolation about the image centre, zeros outside.
    """
    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    theta = torch.deg2rad(angles_deg.to(torch.float64))
    cos, sin = torch.cos(theta), torch.sin(theta)
    # affine_grid maps output (x right, y down) coordinates to input coordinates; a
    # counter-clockwise rotation on screen samples the input at R(-angle) in (x, y-down) axes.
    matrix = torch.zeros(len(images), 2, 3, dtype=torch.float64)
    matrix[:, 0, 0], matrix[:, 0, 1] = cos, -sin
    matrix[:, 1, 0], matrix[:, 1, 1] = sin, cos
    grid = F.affine_grid(matrix.to(images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros",
                         align_corners=False)


def rotated(dataset: LabelledTensors, *, seed: int = 0,
            max_angle: float = 360.0) -> LabelledTensors:
    """Every image rotated by a seeded uniform angle in [0, ``max_angle``) degrees."""
    g = torch.Generator().manual_seed(seed)
    angles = torch.rand(len(dataset), generator=g) * max_angle
    chunks = [rotate_images(dataset.inputs[i:i + 4096], angles[i:i + 4096])
              for i in range(0, len(dataset), 4096)]
    return LabelledTensors(torch.cat(chunks), dataset.targets.clone(),
                           name=f"rotated({dataset.name})", classes=dataset.classes)


def group_augmented(dataset: LabelledTensors, group: str, *, seed: int = 0) -> LabelledTensors:
    """Every image transformed by a seeded uniformly drawn element of ``group`` (pixel-exact)."""
    from structlab.equivariance import get_group

    G = get_group(group)
    g = torch.Generator().manual_seed(seed)
    choice = torch.randint(G.order, (len(dataset),), generator=g)
    out = dataset.inputs.clone()
    for index, element in enumerate(G.elements):
        mask = choice == index
        if mask.any():
            out[mask] = G.act_on_image(dataset.inputs[mask], element)
    return LabelledTensors(out, dataset.targets.clone(), name=f"{G.name}({dataset.name})",
                           classes=dataset.classes)


def pad_images(dataset: LabelledTensors, size: int) -> LabelledTensors:
    """Zero-pad square images symmetrically to ``size`` x ``size`` (28x28 -> 32x32)."""
    h, w = dataset.inputs.shape[-2:]
    if size < max(h, w):
        raise ValueError(f"cannot pad {h}x{w} images to the smaller size {size}")
    top, left = (size - h) // 2, (size - w) // 2
    padded = F.pad(dataset.inputs, (left, size - w - left, top, size - h - top))
    return LabelledTensors(padded, dataset.targets, name=dataset.name, classes=dataset.classes)
