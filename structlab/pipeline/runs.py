"""The runs ``structlab run`` has under way, so that the next one removes what a killed run left.

A run killed with SIGKILL (or by the OOM killer, or a power cut) cannot clean up after itself: the
executed notebook's temporary file (``.<slug>.*.ipynb`` beside the output, see
:func:`structlab.pipeline.execute.run_chapter`) and any half-written atomic file
(``.<name>.*.tmp`` under its ``results_dir``, see :func:`structlab.results.atomic_write_bytes`)
stay behind. Finished experiments are never among them: a result file only ever appears whole.

:func:`registered_run` therefore keeps a record of each run in ``results/.runs/`` for as long as
the run lives: its pid, when it started, and the directories its temporary files go to. The record
is held under an exclusive ``flock``, which the operating system releases when the process dies,
however it dies; so a record that can be locked belongs to a dead run (a reused pid cannot fool
it). Before a new run starts, :func:`clean_dead_runs` removes, for each dead record, the temporary
files in its directories that were last written after that run started, except those a run still
alive could own (written after a live run that uses the same directory started), and atomic
``.tmp`` files younger than :data:`FRESH_SECONDS` (another process may be writing one right now).
Sweep points (``sweeps/`` under a results directory) are left alone here: their workers are
Ray's, and ``structlab sweep`` cleans them itself (:func:`clean_sweep_points`).
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from structlab.pipeline import chapters as _chapters

__all__ = ["registry", "registered_run", "clean_dead_runs", "clean_sweep_points", "temporary_files",
           "FRESH_SECONDS"]

#: An atomic ``.tmp`` file younger than this may be one a live process is writing: it stays.
FRESH_SECONDS = 5.0


def registry(root: Path | None = None) -> Path:
    """``results/.runs/`` of the checkout: one record per live (or killed) run."""
    return (root or _chapters.project_root()) / "results" / ".runs"


@dataclass(frozen=True)
class _Record:
    path: Path
    pid: int
    started: float
    slug: str
    notebook_dir: Path
    results_dir: Path | None


def _read(path: Path) -> _Record | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return _Record(path, int(data["pid"]), float(data["started"]), str(data["chapter"]),
                       Path(data["notebook_dir"]),
                       Path(data["results_dir"]) if data.get("results_dir") else None)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _locked_by_someone(handle: IO[str]) -> bool:
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    return False


def temporary_files(slug: str, notebook_dir: Path, results_dir: Path | None) -> list[Path]:
    """The temporary files a run of chapter ``slug`` (``*``: of any chapter, as ``structlab
    book``) may leave: its notebook's beside the output and the atomic writes under
    ``results_dir`` (sweep points excluded)."""
    found = [p for p in notebook_dir.glob(f".{slug}.*.ipynb") if p.is_file()] \
        if notebook_dir.is_dir() else []
    if results_dir is not None and results_dir.is_dir():
        found += [p for p in results_dir.rglob(".*.tmp")
                  if "sweeps" not in p.relative_to(results_dir).parts]
    return sorted(set(found))


def _dirs(record: _Record) -> set[Path]:
    return {record.notebook_dir, *([record.results_dir] if record.results_dir else [])}


def _live_records(root: Path, exclude: Path | None = None) -> list[_Record]:
    live = []
    for path in sorted(registry(root).glob("*.json")):
        if path == exclude:
            continue
        try:
            with path.open(encoding="utf-8") as handle:
                if _locked_by_someone(handle):
                    record = _read(path)
                    if record is not None:
                        live.append(record)
        except OSError:
            continue
    return live


def _overlaps(a: Path, b: Path) -> bool:
    return a == b or a.is_relative_to(b) or b.is_relative_to(a)


def clean_dead_runs(root: Path | None = None) -> list[tuple[int, list[Path]]]:
    """Remove the temporary files of every dead run in the registry, and its record.

    Returns ``(pid, removed files)`` per dead run found.
    """
    root = root or _chapters.project_root()
    cleaned = []
    for path in sorted(registry(root).glob("*.json")):
        try:
            handle = path.open(encoding="utf-8")
        except OSError:
            continue
        with handle:
            if _locked_by_someone(handle):
                continue  # alive: its process holds the lock
            record = _read(path)  # dead (we hold its lock now), or a torn record
            removed: list[Path] = []
            if record is not None:
                live = _live_records(root, exclude=path)  # read just before removing anything
                now = time.time()
                for file in temporary_files(record.slug, record.notebook_dir, record.results_dir):
                    try:
                        mtime = file.stat().st_mtime
                    except OSError:
                        continue
                    if mtime < record.started - 1:
                        continue  # older than the dead run: not its file
                    if file.suffix == ".tmp" and now - mtime < FRESH_SECONDS:
                        continue
                    if any(other.started - 1 <= mtime and any(_overlaps(file.parent, d)
                                                             for d in _dirs(other))
                           for other in live):
                        continue  # a live run using this directory may own it
                    file.unlink(missing_ok=True)
                    removed.append(file)
            path.unlink(missing_ok=True)
            cleaned.append((record.pid if record else -1, removed))
    return cleaned


@contextmanager
def registered_run(slug: str, notebook_dir: Path, results_dir: Path | None = None,
                   root: Path | None = None) -> Iterator[list[tuple[int, list[Path]]]]:
    """Clean what dead runs left (:func:`clean_dead_runs`), then keep a locked record of this run
    for as long as the ``with`` block lasts. Yields what the cleaning removed."""
    root = root or _chapters.project_root()
    cleaned = clean_dead_runs(root)
    directory = registry(root)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{os.getpid()}-{secrets.token_hex(4)}.json"
    # Written and locked under another name, then renamed (the lock stays with the file): a
    # cleaner never sees this record unlocked or half written.
    draft = path.with_name(f".{path.stem}.draft")
    handle = draft.open("w+", encoding="utf-8")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        handle.write(json.dumps({
            "pid": os.getpid(), "started": time.time(), "chapter": slug,
            "notebook_dir": str(Path(notebook_dir).resolve()),
            "results_dir": str(Path(results_dir).resolve()) if results_dir else None}))
        handle.flush()
        os.replace(draft, path)
        yield cleaned
    finally:
        draft.unlink(missing_ok=True)
        path.unlink(missing_ok=True)
        handle.close()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def clean_sweep_points(slug: str, point_dirs: list[Path], *, local: bool = True) -> list[Path]:
    """Remove the temporary files that killed attempts left in a sweep's point directories
    (:mod:`structlab.pipeline.sweep`): called by ``structlab sweep`` before it submits the points
    and after they all ended, when none of its own tasks runs. A point whose ``running.json``
    names a live process (``local``: a local Ray runtime, whose workers are this machine's) is
    left alone; on a cluster (``local=False``), any point with a ``running.json`` is. Returns the
    files removed."""
    removed = []
    for directory in point_dirs:
        if not directory.is_dir():
            continue
        running = directory / "running.json"
        if running.is_file():
            if not local:
                continue
            try:
                pid = int(json.loads(running.read_text(encoding="utf-8"))["pid"])
            except (OSError, ValueError, KeyError, TypeError):
                pid = None
            if pid is None or _pid_alive(pid):
                continue
        now = time.time()
        for file in temporary_files(slug, directory, directory / "results"):
            try:
                if file.suffix == ".tmp" and now - file.stat().st_mtime < FRESH_SECONDS:
                    continue
                file.unlink()
            except OSError:
                continue
            removed.append(file)
    return removed
