"""Shared test settings: CPU only, few threads, a private dataset cache for the offline path."""

from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    """An empty dataset cache with downloads forbidden."""
    monkeypatch.setenv("STRUCTLAB_DATA_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("STRUCTLAB_OFFLINE", "1")
    return tmp_path / "cache"
