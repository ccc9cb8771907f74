"""Shared test settings: portable numerics, CPU only, a private dataset cache for the offline path.

The suite runs in structlab's *portable* numerics (:mod:`structlab.numerics`): the environment is
set here, before anything imports torch, so the unit tests and every notebook kernel that nbval
starts (it inherits this process's environment) compute the same bits on any x86-64 CPU with AVX2,
as the stored smoke runs in ``tests/notebooks`` were computed.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

# Load structlab/numerics.py on its own: importing the package would import torch first.
_spec = importlib.util.spec_from_file_location(
    "_structlab_numerics", Path(__file__).resolve().parents[1] / "structlab" / "numerics.py")
assert _spec is not None and _spec.loader is not None
_numerics = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_numerics)
os.environ.update(_numerics.numerics_env("portable"))

import pytest  # noqa: E402
import torch  # noqa: E402

import structlab  # noqa: E402, F401  (applies the in-process part of the portable mode)


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    """An empty dataset cache with downloads forbidden."""
    monkeypatch.setenv("STRUCTLAB_DATA_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("STRUCTLAB_OFFLINE", "1")
    return tmp_path / "cache"


def pytest_report_header(config) -> str:
    return (f"structlab numerics: {os.environ['STRUCTLAB_NUMERICS']}, "
            f"ATen {torch.backends.cpu.get_cpu_capability()}, MKL_CBWR={os.environ['MKL_CBWR']}, "
            f"{torch.get_num_threads()} threads")
