"""Seeding, determinism and device selection.

Seeded runs give the same numbers on the same machine: `seed_everything` seeds every generator in
play and asks PyTorch for deterministic kernels, so nbval can compare a notebook's results.
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch

__all__ = ["seed_everything", "get_device"]


def seed_everything(seed: int, *, deterministic: bool = True) -> torch.Generator:
    """Seed Python, NumPy and PyTorch (CPU and every CUDA device) and return a fresh generator.

    Args:
        seed: a non-negative integer.
        deterministic: also switch PyTorch to deterministic algorithms (``warn_only`` so that an
            operation without a deterministic implementation warns instead of failing) and turn
            off cuDNN autotuning.

    Returns:
        A ``torch.Generator`` seeded with ``seed``, for data shuffling and sampling that must not
        depend on how much randomness other code consumed.
    """
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - the legacy global generator is what we seed
    torch.manual_seed(seed)
    if deterministic:
        # Required by cuBLAS for deterministic matmuls on CUDA; harmless on the CPU.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def get_device(device: str | torch.device = "auto") -> torch.device:
    """Resolve a device request.

    ``"auto"`` picks the first CUDA device when one is available and the CPU otherwise; any other
    string (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``) or ``torch.device`` is checked for
    availability, and an unavailable device is an error rather than a silent fallback.
    """
    if isinstance(device, torch.device):
        resolved = device
    elif device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            resolved = torch.device(device)
        except RuntimeError as err:
            raise ValueError(
                f"unknown device {device!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'"
            ) from err
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(
                f"device {str(resolved)!r} was asked for but CUDA is not available on this "
                "machine; pass device='auto' or 'cpu'"
            )
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise RuntimeError(
                f"device {str(resolved)!r} does not exist: this machine has "
                f"{torch.cuda.device_count()} CUDA device(s)"
            )
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError("device 'mps' was asked for but is not available on this machine")
    return resolved
