"""Run directories whose files are written atomically.

Every file is first written to a temporary file in the same directory and then moved over its
final name with ``os.replace``, which is atomic on POSIX and Windows: an interrupted run leaves
either the previous complete file or the new complete file, never half of one.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_write_json", "RunDirectory",
           "default_file_mode"]


def default_file_mode() -> int:
    """The mode ``open()`` would give a new file under the current umask (``mkstemp`` uses 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically, creating parent directories."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def _jsonable(value: Any) -> Any:
    if hasattr(value, "to_dict") and callable(value.to_dict):
        return value.to_dict()
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return value.item()
    if hasattr(value, "tolist") and callable(value.tolist):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically (tensors, arrays and Paths are converted)."""
    return atomic_write_text(path, json.dumps(obj, indent=2, default=_jsonable) + "\n")


class RunDirectory:
    """A directory holding one run's parameters, metrics, histories and figures.

    >>> run = RunDirectory("results/data_and_baselines", "mlp-seed0")   # doctest: +SKIP
    >>> run.write_params({"epochs": 3}); run.write_metrics({"test_acc": 0.87})  # doctest: +SKIP
    """

    def __init__(self, root: str | os.PathLike[str], name: str) -> None:
        """``root`` relative to the source checkout when it is relative and there is one (so a
        notebook writes to the same ``results/`` whatever its working directory), else to the
        working directory."""
        if not re.fullmatch(r"[A-Za-z0-9._=-]+", name):
            raise ValueError(f"run name {name!r} may hold letters, digits and . _ = - only")
        root = Path(root)
        checkout = Path(__file__).resolve().parents[1]
        if not root.is_absolute() and (checkout / "pyproject.toml").is_file():
            root = checkout / root
        self.path = root / name
        self.path.mkdir(parents=True, exist_ok=True)

    def file(self, name: str) -> Path:
        return self.path / name

    def write_json(self, name: str, obj: Any) -> Path:
        return atomic_write_json(self.file(name), obj)

    def write_params(self, params: Mapping[str, Any]) -> Path:
        return self.write_json("params.json", dict(params))

    def write_metrics(self, metrics: Mapping[str, Any]) -> Path:
        stamped = {**dict(metrics), "written_at": datetime.now(UTC).isoformat(timespec="seconds")}
        return self.write_json("metrics.json", stamped)

    def write_csv(self, name: str, rows: Iterable[Mapping[str, Any]] | Any) -> Path:
        """Write rows (dicts with the same keys) or a pandas DataFrame as CSV."""
        if hasattr(rows, "to_csv"):
            return atomic_write_text(self.file(name), rows.to_csv(index=False))
        rows = list(rows)
        buffer = io.StringIO()
        if rows:
            writer = csv.DictWriter(buffer, fieldnames=list(rows[0].keys()))
            writer.writeheader()
            writer.writerows(rows)
        return atomic_write_text(self.file(name), buffer.getvalue())

    def write_history(self, history: Any, name: str = "history.csv") -> Path:
        """Write a :class:`structlab.training.History` as CSV (one row per epoch)."""
        return self.write_csv(name, history.to_frame())

    def save_figure(self, fig: Any, name: str, *, dpi: int = 150) -> Path:
        """Save a matplotlib figure atomically (format from the name's suffix)."""
        buffer = io.BytesIO()
        fig.savefig(buffer, format=Path(name).suffix.lstrip(".") or "png", dpi=dpi,
                    bbox_inches="tight")
        return atomic_write_bytes(self.file(name), buffer.getvalue())

    def read_json(self, name: str) -> Any:
        return json.loads(self.file(name).read_text(encoding="utf-8"))

    def __repr__(self) -> str:
        return f"RunDirectory({str(self.path)!r})"
