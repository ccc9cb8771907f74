"""Stored speed measurements and the book's performance page built from them.

Every script in ``benchmarks/`` prints its table and records it with :func:`record` as
``results/bench/<name>.json`` (rows, arguments, machine), atomically. ``results/bench/before/``
holds the same benchmarks run on the code before the speed work of the structural machinery, so
the gain stays visible. The performance page ``book/performance.ipynb`` reads these files; it is
executed by :func:`build_page` (``make bench`` does both) and stores the digest of the records it
was built from, so the test suite can tell when the page no longer shows the stored numbers.

    python -m structlab.benchmarks page     # re-execute the page from the stored records
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import os
import platform
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from structlab.results import atomic_write_json, atomic_write_text

__all__ = [
    "BENCH_DIR",
    "PAGE",
    "TARGETS",
    "THESIS_TABLE9",
    "paired_order",
    "print_header",
    "record",
    "sync",
    "load_records",
    "records_digest",
    "ratio_rows",
    "build_page",
    "page_is_current",
]

ROOT = Path(__file__).resolve().parent.parent
#: Where the records live (``STRUCTLAB_BENCH_DIR`` overrides it).
BENCH_DIR = ROOT / "results" / "bench"
PAGE = ROOT / "book" / "performance.ipynb"

#: The ratios the structural machinery should reach (issue "Structural learning almost free"):
#: benchmark -> row label -> (measured column, at most).
TARGETS: dict[str, dict[str, tuple[str, float]]] = {
    "equivariance": {
        "C1 backbone": ("train_ratio", 1.03),
        "C4 backbone": ("train_ratio", 1.10),
        "D4 backbone": ("train_ratio", 1.10),
        "mixed, 6 groups": ("train_ratio", 1.25),
    },
    "neurogenesis": {
        "north-random": ("ratio", 1.15),
        "north-select": ("ratio", 1.15),
        "north-pre": ("ratio", 1.2),
        "north-weight": ("ratio", 1.3),
        "gradmax": ("ratio", 1.5),
        "firefly": ("ratio", 1.5),
        "nest": ("ratio", 1.5),
    },
    "operators": {
        "global magnitude pruning (1%)": ("ratio", 0.2),
        "NeST regrowth (1000 connections)": ("ratio", 0.2),
    },
    # benchmarks/bench_darts.py: time per w-step of a DARTS-PRIME search against first-order
    # DARTS (about (1 + a / 11) / (1 + a) for an alpha step costing a w-steps), and of FIMT +
    # proximity against CS10 at the same alpha-step frequency (the machinery's own cost)
    "darts": {
        "DARTS-PRIME vs DARTS per w-step": ("ratio", 0.7),
        "FIMT + proximity vs CS10": ("ratio", 1.05),
    },
    # benchmarks/bench_growprune.py: DYNO fine-tuning (buffers, triggers every 50 iterations,
    # pruning and growth) against static fine-tuning on the near target (§7.3)
    "growprune": {
        "dyno (fashion-5-9)": ("ratio", 1.3),
    },
}

#: Thesis Table 9 (VGG-11 on CIFAR-10, Tesla V100): time per mini-batch with trigger evaluation,
#: as printed, and relative to Medium Static (5.49).
THESIS_TABLE9: dict[str, float] = {
    "north-select": 5.97,
    "north-random": 5.77,
    "north-weight": 10.05,
    "gradmax": 14.00,
    "firefly": 18.52,
    "nest": 23.79,
    "medium static": 5.49,
}


_T = TypeVar("_T")


def sync(device: Any) -> None:
    """Wait until the kernels queued on ``device`` have run (CUDA runs asynchronously), so that
    a timer read after it includes them; nothing to wait for on a CPU."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def paired_order(round_index: int, names: Sequence[_T]) -> list[_T]:
    """The order of the runs in one paired round of a benchmark: as given in even rounds and
    reversed in odd ones, so that a drift of the machine's speed cancels in the median ratio."""
    return list(names) if round_index % 2 == 0 else list(reversed(names))


def print_header(header: str) -> None:
    """Print a benchmark table's header line, underlined."""
    print(header)
    print("-" * len(header))


def _bench_dir(directory: str | os.PathLike[str] | None = None) -> Path:
    if directory is not None:
        return Path(directory)
    return Path(os.environ.get("STRUCTLAB_BENCH_DIR", BENCH_DIR))


def machine() -> dict[str, Any]:
    """What the numbers were measured on: CPU, threads, numerics, torch, GPU if any."""
    import torch

    from structlab.numerics import describe

    info = dict(describe())
    info["python"] = platform.python_version()
    info["cores"] = os.cpu_count()
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def record(
    name: str,
    rows: list[dict[str, Any]],
    args: argparse.Namespace | Mapping[str, Any],
    directory: str | os.PathLike[str] | None = None,
) -> Path:
    """Write ``<directory>/<name>.json``: the rows of a benchmark's table, its arguments and the
    machine, atomically. Returns the path."""
    arguments = dict(vars(args) if isinstance(args, argparse.Namespace) else args)
    path = atomic_write_json(
        _bench_dir(directory) / f"{name}.json",
        {
            "benchmark": name,
            "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "arguments": {k: v for k, v in arguments.items() if not k.startswith("_")},
            "machine": machine(),
            "rows": rows,
        },
    )
    print(f"recorded: {path}")
    return path


def _record_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*.json") if not p.name.startswith("."))


def load_records(directory: str | os.PathLike[str] | None = None) -> dict[str, dict[str, Any]]:
    """Every stored record under ``directory``, keyed by its path relative to it without
    ``.json`` (``"equivariance"``, ``"before/equivariance"``)."""
    import json

    root = _bench_dir(directory)
    return {
        str(p.relative_to(root).with_suffix("")): json.loads(p.read_text(encoding="utf-8"))
        for p in _record_files(root)
    }


def records_digest(directory: str | os.PathLike[str] | None = None) -> str:
    """SHA-256 over the stored records (names and contents): what the page was built from."""
    root = _bench_dir(directory)
    h = hashlib.sha256()
    for p in _record_files(root):
        h.update(str(p.relative_to(root)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def _label(row: Mapping[str, Any]) -> str:
    """A row's name: its label column, followed by its setting unless that is the default
    (``"north-random"`` for the MLP setting of the neurogenesis benchmark, ``"north-random
    (cnn)"`` for its CNN setting)."""
    setting = row.get("setting")
    for key in ("network", "strategy", "operation", "workload", "loop"):
        if key in row:
            return str(row[key]) if setting in (None, "mlp") else f"{row[key]} ({setting})"
    raise KeyError(f"a benchmark row needs a label column, got {sorted(row)}")


def ratio_rows(records: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per targeted measurement: benchmark, label, the ratio before and now, the target
    and whether it is met (``None`` where a record is missing)."""
    out = []
    for bench, targets in TARGETS.items():
        now = {_label(r): r for r in records.get(bench, {}).get("rows", [])}
        before = {_label(r): r for r in records.get(f"before/{bench}", {}).get("rows", [])}
        for label, (column, limit) in targets.items():
            value = now.get(label, {}).get(column)
            previous = before.get(label, {}).get(column)
            out.append({
                "benchmark": bench,
                "measurement": label,
                "before": previous,
                "now": value,
                "target": limit,
                "met": None if value is None else bool(value <= limit),
            })
    return out


def page_is_current(page: str | os.PathLike[str] = PAGE,
                    directory: str | os.PathLike[str] | None = None) -> bool:
    """Whether the stored page was built from the records stored now."""
    import nbformat

    nb = nbformat.read(page, as_version=4)
    return nb.metadata.get("structlab", {}).get("records_digest") == records_digest(directory)


def build_page(page: str | os.PathLike[str] = PAGE,
               directory: str | os.PathLike[str] | None = None) -> Path:
    """Execute the performance page on the stored records and store it with their digest."""
    import nbformat
    from nbclient import NotebookClient

    page = Path(page)
    nb = nbformat.read(page, as_version=4)
    env_dir = str(_bench_dir(directory))
    os.environ["STRUCTLAB_BENCH_DIR"] = env_dir
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT)}}).execute()
    nb.metadata["structlab"] = {
        "records_digest": records_digest(env_dir),
        "executed_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    atomic_write_text(page, nbformat.writes(nb) + "\n")
    print(f"structlab: performance page rebuilt from {env_dir}: {page}")
    return page


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m structlab.benchmarks", description=__doc__)
    parser.add_argument("command", choices=["page", "status"])
    args = parser.parse_args(argv)
    if not _record_files(_bench_dir()):
        print(f"structlab: no benchmark records under {_bench_dir()}: run `make bench`",
              file=sys.stderr)
        return 2
    if args.command == "page":
        build_page()
    else:
        current = page_is_current()
        print("up to date" if current else "OUT OF DATE: python -m structlab.benchmarks page")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
