"""Shared test settings: portable numerics, CPU only, a private dataset cache for the offline path.

The suite runs in structlab's *portable* numerics (:mod:`structlab.numerics`): the environment is
set here, before anything imports torch, so the unit tests and every notebook kernel that nbval
starts (it inherits this process's environment) compute the same bits on any x86-64 CPU with AVX2,
as the stored smoke runs in ``tests/notebooks`` were computed.

It also runs on the CPU only, on any host: ``CUDA_VISIBLE_DEVICES`` is set to the empty string
here, before torch is imported, so that ``device="auto"`` (the smoke notebooks' default) resolves
to the CPU in the tests and in every kernel nbval starts, and the stored CPU runs are compared
with CPU runs on a GPU machine too. The device tests (``tests/test_devices.py``) need the GPU:
``make gpu-check`` (``structlab gpu-check``) runs them with ``STRUCTLAB_DEVICE_TESTS=1``
(:data:`DEVICE_TESTS_ENV`), which leaves the visible devices as they are.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import MutableMapping
from pathlib import Path

# Load structlab/numerics.py on its own: importing the package would import torch first.
_spec = importlib.util.spec_from_file_location(
    "_structlab_numerics", Path(__file__).resolve().parents[1] / "structlab" / "numerics.py")
assert _spec is not None and _spec.loader is not None
_numerics = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_numerics)
os.environ.update(_numerics.numerics_env("portable"))

#: Set to 1 (``make gpu-check`` does) to leave the accelerators visible for tests/test_devices.py.
DEVICE_TESTS_ENV = "STRUCTLAB_DEVICE_TESTS"


def hide_accelerators(environ: MutableMapping[str, str]) -> bool:
    """Hide every CUDA device from this process and its children (``CUDA_VISIBLE_DEVICES=""``)
    unless ``STRUCTLAB_DEVICE_TESTS=1``. Returns whether it hid them."""
    if environ.get(DEVICE_TESTS_ENV) == "1":
        return False
    environ["CUDA_VISIBLE_DEVICES"] = ""  # inherited by every subprocess and notebook kernel
    return True


hide_accelerators(os.environ)

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
    devices = ("CUDA hidden (CPU only)" if os.environ.get(DEVICE_TESTS_ENV) != "1"
               else f"device tests: {torch.cuda.device_count()} CUDA device(s) visible")
    return (f"structlab numerics: {os.environ['STRUCTLAB_NUMERICS']}, "
            f"ATen {torch.backends.cpu.get_cpu_capability()}, MKL_CBWR={os.environ['MKL_CBWR']}, "
            f"{torch.get_num_threads()} threads, {devices}")
