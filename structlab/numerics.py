"""Portable CPU numerics: the same floating-point results on every x86-64 CPU with AVX2.

PyTorch's CPU results depend on more than the seed. Three libraries pick their code path from the
processor they run on, and each path adds floating-point numbers in its own order:

- **ATen** (PyTorch's own kernels: reductions, element-wise ops) dispatches to its ``default``,
  ``avx2`` or ``avx512`` build; ``ATEN_CPU_CAPABILITY`` caps the choice.
- **oneDNN** (convolutions) JIT-compiles kernels for the best ISA it finds;
  ``ONEDNN_MAX_CPU_ISA=AVX2`` caps it. oneDNN promises bitwise reproducibility only on the same
  platform, and some of its blocking heuristics read cache sizes, so this is the one setting that
  is not a documented cross-processor guarantee. Turning oneDNN off instead (ATen's im2col
  convolution) was measured 40 times slower on a VGG-11 step, so the portable mode keeps it,
  capped, and the test suite's nbval run is where a difference would show.
- **MKL** (matrix products) picks a kernel per processor. Its conditional numerical
  reproducibility mode ``MKL_CBWR=COMPATIBLE`` is the only one that gives the same bits on Intel
  and AMD processors alike (a named branch such as ``AVX2`` is honoured on Intel processors only;
  on AMD, MKL reports it as ``CNR:AUTO``).

The number of threads changes how reductions are split, so it is pinned too, with MKL's and
OpenMP's dynamic adjustment off (2 threads by default, the cores of the project's reference
machine; ``STRUCTLAB_THREADS`` changes it, and the stamp of an executed notebook records it).

Two modes, chosen by the ``STRUCTLAB_NUMERICS`` environment variable of the process that imports
torch:

- ``portable``: the settings above. The pipeline (``structlab run`` / ``book``) starts every
  notebook kernel in this mode for the smoke and book profiles, and the test suite runs in it, so
  stored outputs reproduce bit for bit on another machine of this kind.
- ``native`` (or unset): whatever the libraries choose; fastest, not portable. The full profile
  (a GPU run) uses it.

Environment variables only take effect if they are set before torch loads the libraries, which is
why the pipeline sets them for the kernel process rather than inside the notebook;
:func:`apply_in_process` (called when ``structlab`` is imported) applies the settings that are
Python calls and refuses to go on if the environment arrived too late.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

__all__ = ["MODES", "numerics_env", "apply_in_process", "describe", "pinned_environment",
           "NumericsError"]

MODES = ("portable", "native")
DEFAULT_THREADS = 2


class NumericsError(RuntimeError):
    """The portable mode was asked for, but the process cannot honour it."""


def _threads() -> int:
    value = os.environ.get("STRUCTLAB_THREADS", str(DEFAULT_THREADS))
    if not value.isdigit() or int(value) < 1:
        raise NumericsError(f"STRUCTLAB_THREADS must be a positive integer, got {value!r}")
    return int(value)


def numerics_env(mode: str = "portable", *, threads: int | None = None) -> dict[str, str]:
    """The environment variables that put a fresh Python process into ``mode``.

    ``native`` returns only ``STRUCTLAB_NUMERICS=native`` and removes nothing: the caller's own
    settings stand.
    """
    if mode not in MODES:
        raise ValueError(f"numerics mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "native":
        return {"STRUCTLAB_NUMERICS": "native"}
    n = str(threads if threads is not None else _threads())
    return {
        "STRUCTLAB_NUMERICS": "portable",
        "STRUCTLAB_THREADS": n,
        "ATEN_CPU_CAPABILITY": "avx2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "MKL_CBWR": "COMPATIBLE",
        "OMP_NUM_THREADS": n,
        "MKL_NUM_THREADS": n,
        # MKL's reproducibility conditions: no dynamic adjustment of the thread count.
        "MKL_DYNAMIC": "FALSE",
        "OMP_DYNAMIC": "FALSE",
    }


@contextmanager
def pinned_environment(mode: str = "portable") -> Iterator[dict[str, str]]:
    """Set :func:`numerics_env` in ``os.environ`` for child processes started inside the block."""
    env = numerics_env(mode)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield env
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def current_mode() -> str:
    mode = os.environ.get("STRUCTLAB_NUMERICS", "native") or "native"
    if mode not in MODES:
        raise NumericsError(
            f"STRUCTLAB_NUMERICS must be one of {', '.join(MODES)}, got {mode!r}")
    return mode


def apply_in_process() -> str:
    """Apply the in-process part of the current mode and check that the environment took effect.

    In ``portable`` mode: torch's threads pinned, and a check that ATen runs its AVX2 kernels
    (an ``ATEN_CPU_CAPABILITY`` set after torch started is ignored silently by torch; here it is
    an error).
    """
    import torch

    mode = current_mode()
    if mode == "portable":
        capability = torch.backends.cpu.get_cpu_capability()
        if capability != "AVX2":
            raise NumericsError(
                f"portable numerics need ATen's AVX2 kernels, but torch runs {capability}: set "
                "STRUCTLAB_NUMERICS and the variables of structlab.numerics.numerics_env() before "
                "Python starts (a CPU without AVX2 cannot run the portable mode)")
        threads = _threads()
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
    return mode


def describe() -> dict[str, Any]:
    """What decides this process's CPU numerics, for the stamp of an executed notebook."""
    import torch

    info: dict[str, Any] = {
        "mode": current_mode(),
        "torch": torch.__version__,
        "aten_capability": torch.backends.cpu.get_cpu_capability(),
        "mkl_cbwr": os.environ.get("MKL_CBWR", ""),
        "onednn": bool(torch.backends.mkldnn.enabled),
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "cpu": _cpu_model(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment_differs(env: Mapping[str, str]) -> list[str]:
    """The names in ``env`` whose value differs from this process's environment."""
    return [k for k, v in env.items() if os.environ.get(k) != v]
