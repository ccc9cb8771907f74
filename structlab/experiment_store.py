"""Finished experiments kept on disk, so that an interrupted run resumes where it stopped.

A chapter's run is made of *experiments*: one seed of one method, one point of a sweep. Each is a
call of a function whose result the chapter needs. :class:`ExperimentStore` runs it through
:meth:`ExperimentStore.run`, which

* computes a **key** from the experiment's name, everything that determines its result (its
  arguments; tensors and datasets by the SHA-256 of their bytes), the code of the ``structlab``
  package, the library versions and the numerics environment;
* returns the stored result when an experiment with that key has finished before and the store
  resumes, and otherwise runs the function and writes ``<name>-<key>.pt`` (the result, with
  :func:`torch.save`) and ``<name>-<key>.json`` (the arguments, the wall time, when it finished)
  atomically (:func:`structlab.results.atomic_write_bytes`).

A kill at any moment loses at most the experiment under way. Because the code is part of the key,
a stored result is never reused by code that would compute it differently: the book never shows
what code that is gone produced.

``structlab run`` resumes by default for the book and full profiles and starts over with
``--fresh`` (it passes the choice to the kernel in ``STRUCTLAB_RESUME``); a notebook executed any
other way (nbval, JupyterLab) starts over unless ``STRUCTLAB_RESUME=1`` is set.

>>> store = ExperimentStore("results/neurogenesis/experiments")          # doctest: +SKIP
>>> store.expect(3)                                                       # doctest: +SKIP
>>> rec = store.run("train_run", {"strategy": "gradmax", "seed": 0},      # doctest: +SKIP
...                 lambda: train_run(train, test, strategy="gradmax", seed=0))
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import re
import time
import weakref
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import torch
from tqdm.auto import tqdm

from structlab.results import atomic_write_bytes, atomic_write_json

__all__ = ["ExperimentStore", "run_experiment", "expect", "fingerprint", "code_digest",
           "resume_default", "RESUME_ENV"]

T = TypeVar("T")

#: Environment variable through which ``structlab run`` tells a kernel whether to resume.
RESUME_ENV = "STRUCTLAB_RESUME"

#: Environment variables that change the numbers a run produces (:mod:`structlab.numerics`).
_NUMERICS_VARS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_CBWR", "OMP_NUM_THREADS",
                  "MKL_NUM_THREADS", "STRUCTLAB_THREADS")

#: id(tensor) -> (weak reference, version, digest): a tensor hashed once while it lives unchanged.
_TENSOR_CACHE: dict[int, tuple[weakref.ref, int, str]] = {}


def resume_default() -> bool:
    """Whether a store resumes when not told: ``STRUCTLAB_RESUME`` is 1 (``structlab run`` sets it
    for the book and full profiles unless ``--fresh``)."""
    value = os.environ.get(RESUME_ENV, "0").strip().lower()
    if value not in ("0", "1", "true", "false", ""):
        raise ValueError(f"{RESUME_ENV} must be 0 or 1, got {value!r}")
    return value in ("1", "true")


def _tensor_digest(t: torch.Tensor) -> str:
    """SHA-256 of the bytes of ``t``, remembered while ``t`` lives and is not modified in place
    (the check on the weak reference keeps a new tensor at a reused address from matching)."""
    cached = _TENSOR_CACHE.get(id(t))
    if cached is not None and cached[0]() is t and cached[1] == t._version:
        return cached[2]
    flat = t.detach().cpu().contiguous().reshape(-1)
    digest = hashlib.sha256(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    digest = digest.hexdigest()
    key = id(t)
    _TENSOR_CACHE[key] = (weakref.ref(t, lambda _: _TENSOR_CACHE.pop(key, None)), t._version,
                          digest)
    return digest


def fingerprint(value: Any) -> Any:
    """A JSON-able value that identifies ``value``: numbers, strings and containers as they are,
    tensors by dtype, shape and the SHA-256 of their bytes, datasets (a ``TensorDataset`` such as
    :class:`~structlab.data.base.LabelledTensors`) by their tensors and name, dataclasses by their
    fields, objects with a ``fingerprint()`` method by its value. Anything else is refused: a key
    that silently ignored an argument could hand back a result of other settings."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, torch.Tensor):
        return {"tensor": _tensor_digest(value), "dtype": str(value.dtype),
                "shape": list(value.shape)}
    if isinstance(value, torch.device):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): fingerprint(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, list | tuple):
        return [fingerprint(v) for v in value]
    if hasattr(value, "fingerprint") and callable(value.fingerprint):
        return fingerprint(value.fingerprint())
    if isinstance(value, torch.utils.data.TensorDataset):
        return {"dataset": getattr(value, "name", type(value).__name__),
                "tensors": [fingerprint(t) for t in value.tensors]}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"dataclass": type(value).__name__,
                **{f.name: fingerprint(getattr(value, f.name)) for f in dataclasses.fields(value)}}
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return value.item()
    raise TypeError(f"cannot fingerprint a {type(value).__name__}: give the experiment key "
                    "plain values, tensors, datasets or objects with a fingerprint() method")


@cache
def code_digest(module: str = "structlab") -> str:
    """SHA-256 over the ``structlab`` files that importing ``module`` runs (its import closure,
    data files included; :func:`structlab.pipeline.stamps.code_files`) and the versions of torch
    and numpy: what a stored result of an experiment defined in ``module`` depends on besides
    its arguments. ``"structlab"`` alone covers every file of the package."""
    import numpy

    from structlab.pipeline.stamps import code_files

    package = Path(__file__).resolve().parent
    if module == "structlab":
        files = sorted(p for p in package.rglob("*") if p.is_file()
                       and "__pycache__" not in p.parts and p.suffix != ".pyc")
    else:
        files = code_files([f"import {module}"], package.parent)
    h = hashlib.sha256(f"torch {torch.__version__} numpy {numpy.__version__}".encode())
    for path in files:
        h.update(path.relative_to(package).as_posix().encode() + b"\0")
        h.update(path.read_bytes())
    return h.hexdigest()


class ExperimentStore:
    """Finished experiments of one run, one pair of files each, under ``root``.

    ``root`` is relative to the source checkout when relative (like
    :class:`~structlab.results.RunDirectory`). ``resume`` (default :func:`resume_default`) reuses
    finished experiments; without it every experiment runs again and overwrites its files.
    ``quiet`` hides the progress bar, which shows experiments done / expected and an ETA.
    """

    def __init__(self, root: str | os.PathLike[str], *, resume: bool | None = None,
                 quiet: bool = True, desc: str = "experiments") -> None:
        root = Path(root)
        checkout = Path(__file__).resolve().parents[1]
        if not root.is_absolute() and (checkout / "pyproject.toml").is_file():
            root = checkout / root
        self.root = root
        self.resume = resume_default() if resume is None else bool(resume)
        self.resumed = 0
        self.computed = 0
        self._bar = tqdm(total=0, desc=desc, unit="exp", disable=quiet,
                         bar_format="{desc}: {n_fmt}/{total_fmt} done [{elapsed}<{remaining}]"
                                    " {postfix}")

    def expect(self, n: int) -> None:
        """Announce ``n`` more experiments (the progress bar's total)."""
        self._bar.total = (self._bar.total or 0) + int(n)
        self._bar.refresh()

    def key(self, name: str, params: Mapping[str, Any], code: str = "structlab") -> str:
        """The key of experiment ``name`` with ``params`` whose code is the import closure of
        module ``code`` (see the module docstring)."""
        numerics = {v: os.environ.get(v) for v in _NUMERICS_VARS}
        blob = json.dumps({"name": name, "params": fingerprint(dict(params)),
                           "code": code_digest(code), "numerics": numerics}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def path(self, name: str, params: Mapping[str, Any], code: str = "structlab") -> Path:
        """The result file of experiment ``name`` with ``params``."""
        if not re.fullmatch(r"[A-Za-z0-9._=-]+", name):
            raise ValueError(f"experiment name {name!r} may hold letters, digits and . _ = - only")
        return self.root / f"{name}-{self.key(name, params, code)}.pt"

    def done(self, name: str, params: Mapping[str, Any], code: str = "structlab") -> bool:
        """Whether experiment ``name`` with ``params`` has a stored result."""
        return self.path(name, params, code).is_file()

    def run(self, name: str, params: Mapping[str, Any], fn: Callable[[], T],
            code: str | None = None) -> T:
        """The result of ``fn()``, the experiment ``name`` determined by ``params``: read back when
        it has finished before and the store resumes, else computed and stored atomically.
        ``fn`` must seed itself, so that a resumed run computes what a fresh one does. ``code``
        (default: the module that defines ``fn``, when it is part of ``structlab``) names the
        module whose import closure the result depends on."""
        if code is None:
            module = getattr(fn, "__module__", None) or ""
            code = module if module.startswith("structlab.") else "structlab"
        path = self.path(name, params, code)
        self._bar.set_postfix_str(name.replace("_", " "), refresh=False)
        if self.resume and path.is_file():
            result = torch.load(path, map_location="cpu", weights_only=False)["result"]
            self.resumed += 1
        else:
            started = time.perf_counter()
            result = fn()
            wall = time.perf_counter() - started
            atomic_write_json(path.with_suffix(".json"), {
                "name": name, "params": fingerprint(dict(params)), "code": code_digest(code),
                "wall_seconds": round(wall, 3),
                "finished_at": datetime.now(UTC).isoformat(timespec="seconds")})
            buffer = io.BytesIO()
            torch.save({"name": name, "result": result}, buffer)
            atomic_write_bytes(path, buffer.getvalue())
            self.computed += 1
        self._bar.update(1)
        return result

    def close(self) -> None:
        """Close the progress bar."""
        self._bar.close()

    def summary(self) -> str:
        """One line: how many experiments ran and how many were read back."""
        checkout = Path(__file__).resolve().parents[1]
        where = self.root.relative_to(checkout) if self.root.is_relative_to(checkout) else self.root
        return (f"{self.computed} experiments run, {self.resumed} read back from {where}"
                + ("" if self.resume else " (fresh run: nothing read back)"))

    def __repr__(self) -> str:
        return f"ExperimentStore({str(self.root)!r}, resume={self.resume})"


def run_experiment(store: ExperimentStore | None, name: str, params: Mapping[str, Any],
                   fn: Callable[[], T]) -> T:
    """``store.run(name, params, fn)``, or just ``fn()`` when there is no store: how the
    experiment drivers of the chapters call each experiment."""
    return fn() if store is None else store.run(name, params, fn)


def expect(store: ExperimentStore | None, n: int) -> None:
    """``store.expect(n)`` when there is a store."""
    if store is not None:
        store.expect(n)
