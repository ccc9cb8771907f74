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

The portable mode gives the same bits on CPUs of one vendor, not across vendors: the element-wise
functions ATen hands to MKL's vector math (``sqrt``, ``sin``, ``cos``, ... ; Adam's square root
among them) return other last bits on an Intel Xeon than on an AMD EPYC even with
``MKL_CBWR=COMPATIBLE`` (measured: the two-spiral data of ``structlab.data.toy`` hash differently on
the two), and a training run amplifies them. So nbval compares the checked outputs of a stored
smoke run digit for digit only on a CPU of the vendor that computed it (the ``cpu`` of the
notebook's stamp). On another vendor it masks every number in them (:data:`NUMBER`, and the runs
of blanks that align a printed table's columns) and still compares the rest: the text, the rows
and columns of tables, the claims' True/False. The session's summary names those notebooks.
"""

from __future__ import annotations

import importlib.util
import json
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


#: A number in a notebook output: what is masked where the stored run's CPU vendor differs.
NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"

#: A run of blanks, collapsed to one with the numbers (a table's column width follows them).
SPACES = r"[ \t]+"

#: (notebook, the CPU it was computed on) whose numbers this session compared masked.
MASKED: list[tuple[str, str]] = []


def cpu_vendor(model: str) -> str:
    """The vendor of a CPU model name (as :func:`structlab.numerics.describe` records it)."""
    lowered = model.lower()
    return next((v for v in ("intel", "amd") if v in lowered), lowered)


def stored_cpu(notebook: Path) -> str | None:
    """The CPU model in a stored notebook's stamp, or None when it has none."""
    try:
        meta = json.loads(notebook.read_text(encoding="utf-8"))["metadata"]
    except (OSError, ValueError, KeyError):
        return None
    return meta.get("structlab", {}).get("numerics", {}).get("cpu")


def mask_numbers_elsewhere(patterns: MutableMapping[str, str], notebook: Path,
                           here: str | None = None) -> bool:
    """Add :data:`NUMBER` to nbval's ``patterns`` when ``notebook`` was computed on a CPU of
    another vendor than ``here`` (this machine's). Returns whether it did."""
    stored = stored_cpu(notebook)
    here = here if here is not None else _numerics._cpu_model()
    if stored is None or cpu_vendor(stored) == cpu_vendor(here):
        return False
    patterns[NUMBER] = "NUMBER"
    patterns[SPACES] = " "  # a column of a printed table widens with its longest number
    MASKED.append((notebook.name, stored))
    return True


try:
    from nbval import plugin as _nbval
except ImportError:  # the unit tests run without nbval too
    _nbval = None

if _nbval is not None:
    _setup_sanitize_files = _nbval.IPyNbFile.setup_sanitize_files

    def _sanitize_files_and_vendor(self) -> None:
        _setup_sanitize_files(self)
        mask_numbers_elsewhere(self.sanitize_patterns, Path(str(self.fspath)))

    _nbval.IPyNbFile.setup_sanitize_files = _sanitize_files_and_vendor


def pytest_terminal_summary(terminalreporter) -> None:
    if MASKED:
        here = _numerics._cpu_model()
        terminalreporter.write_line(
            f"nbval: numbers masked in the checked outputs of {len(MASKED)} stored smoke run(s) "
            f"computed on another CPU vendor than this {here} (MKL's vector math differs): "
            + ", ".join(f"{name} ({cpu})" for name, cpu in MASKED))
