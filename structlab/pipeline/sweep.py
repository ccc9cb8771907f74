"""Multi-seed sweeps: one papermill execution per parameter point, run as Ray tasks.

A sweep is a chapter, a profile, and a grid: seeds times the values of some parameters. Every
point is validated before any task starts, then executed by :func:`run_chapter` inside a Ray task
(on a local Ray runtime by default, or on a cluster given by its address). Each point lives in
``results/<chapter>/sweeps/<sweep-id>/<point>/``:

- ``notebook.ipynb`` — the executed, stamped notebook (written atomically);
- ``results/`` — the chapter's own result files (its ``results_dir``);
- ``running.json`` while a worker runs it (the worker's pid and the attempt);
- ``done.json`` once it finished (written atomically, last: a point with it is final) or
  ``failed.json`` with the error once Ray gave up on it.

The sweep id is a digest of the chapter, profile and points, so running the same sweep again skips
the finished points and retries the failed ones. A killed worker costs only its own point: Ray
reschedules that task (``retries`` times at most) while the others go on.

:func:`aggregate` merges the points into mean ± std over seeds, per parameter point, of every
number the chapter glues into its text (and the fraction of runs in which each claim holds).
:func:`gather_experiments` lets a chapter's own notebook build its tables from a sweep: a run with
``-p from_sweep <sweep directory>`` reads every experiment the points finished (its per-seed
results, keyed by parameters, data and code as :class:`~structlab.experiment_store.ExperimentStore`
keys them) instead of computing it, and aggregates them over seeds as the chapter always does.
"""

from __future__ import annotations

import ast
import hashlib
import itertools
import json
import math
import os
import re
import socket
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import pandas as pd

from structlab.claims import parse_report
from structlab.pipeline.chapters import Chapter, ParameterError, parse_cli_value, project_root
from structlab.results import atomic_write_bytes, atomic_write_json, atomic_write_text

__all__ = ["SweepPoint", "Sweep", "parse_seeds", "parse_values", "plan_sweep", "run_sweep",
           "aggregate", "check_sweep_directory", "gather_experiments", "SweepError"]

GLUE_PREFIX = "application/papermill.record/"


class SweepError(ValueError):
    """A sweep that cannot start: an empty grid, a bad seed range, an unreachable cluster."""


@dataclass(frozen=True)
class SweepPoint:
    """One execution of the sweep: its directory name and its parameter overrides."""

    name: str
    overrides: dict[str, Any]


@dataclass(frozen=True)
class Sweep:
    """A planned sweep: every point validated, its directory fixed."""

    chapter: Chapter
    profile: str
    points: list[SweepPoint]
    directory: Path

    def point_dir(self, point: SweepPoint) -> Path:
        return self.directory / point.name

    def finished(self, point: SweepPoint) -> bool:
        return (self.point_dir(point) / "done.json").is_file()


def parse_seeds(text: str) -> list[int]:
    """``"0-4"`` -> [0, 1, 2, 3, 4]; ``"0,3,7"`` -> [0, 3, 7]; ranges and lists combine."""
    seeds: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if match is None:
            raise SweepError(f"bad seeds {text!r}: use a range '0-4', a list '0,3,7', or both")
        lo, hi = int(match[1]), int(match[2] or match[1])
        if hi < lo:
            raise SweepError(f"bad seed range {part!r}: the end is below the start")
        seeds.extend(range(lo, hi + 1))
    if len(set(seeds)) != len(seeds):
        raise SweepError(f"seeds {text!r} repeat a seed")
    return seeds


def parse_values(text: str) -> list[Any]:
    """Comma-separated values, each parsed as YAML; commas inside ``[...]`` stay in a value."""
    values, depth, current = [], 0, ""
    for char in text:
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        if char == "," and depth == 0:
            values.append(current)
            current = ""
        else:
            current += char
    values.append(current)
    return [parse_cli_value(v.strip()) for v in values if v.strip()]


def _slug(value: Any) -> str:
    text = json.dumps(value, separators=(",", ":")) if not isinstance(value, str) else value
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", text).strip("_") or "_"


def plan_sweep(chapter: Chapter, *, profile: str = "smoke", seeds: list[int] | None = None,
               grid: dict[str, list[Any]] | None = None, root: Path | None = None) -> Sweep:
    """Expand seeds x grid into points, each validated like a ``structlab run``, before any run."""
    grid = dict(grid or {})
    for name, values in grid.items():
        if not isinstance(values, list) or not values:
            raise SweepError(f"empty grid: parameter {name!r} has no values")
    if "seed" in grid and seeds:
        raise SweepError("give the seeds either with --seeds or as a grid of 'seed', not both")
    if seeds is not None:
        if not seeds:
            raise SweepError("empty grid: no seeds")
        grid = {"seed": list(seeds), **grid}
    if "results_dir" in grid:
        raise SweepError("a sweep sets each point's results_dir itself")
    if not grid:
        raise SweepError("empty grid: give --seeds or at least one -p NAME V1,V2")
    names = list(grid)
    points = []
    for combo in itertools.product(*(grid[n] for n in names)):
        overrides = dict(zip(names, combo))
        try:
            checked = chapter.validate(overrides)
            chapter.resolve(profile, checked)
        except ParameterError as err:
            raise ParameterError(f"sweep point {overrides}: {err}") from None
        name = "-".join(f"{k}={_slug(v)}" for k, v in checked.items())
        if len(name) > 100:
            name = name[:80] + "-" + hashlib.sha256(name.encode()).hexdigest()[:8]
        points.append(SweepPoint(name, checked))
    key = json.dumps({"chapter": chapter.slug, "profile": profile,
                      "points": [p.overrides for p in points]}, sort_keys=True)
    sweep_id = f"{profile}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"
    directory = (root or project_root()) / "results" / chapter.slug / "sweeps" / sweep_id
    return Sweep(chapter, profile, points, directory)


def _execute_point(slug: str, profile: str, overrides: dict[str, Any], point_dir: str,
                   numerics: str | None) -> dict[str, Any]:
    """The body of a Ray task: run one point, write ``done.json`` last (atomically)."""
    from structlab.pipeline.chapters import get_chapter
    from structlab.pipeline.execute import run_chapter

    directory = Path(point_dir)
    directory.mkdir(parents=True, exist_ok=True)
    running = directory / "running.json"
    attempt = 1
    if running.is_file():
        attempt = json.loads(running.read_text()).get("attempt", 0) + 1
    atomic_write_json(running, {"pid": os.getpid(), "attempt": attempt,
                                "started": time.time()})
    started = time.perf_counter()
    run_chapter(get_chapter(slug), profile=profile,
                overrides={**overrides, "results_dir": str(directory / "results")},
                output=directory / "notebook.ipynb", progress=False, numerics=numerics)
    done = {"overrides": overrides, "wall_seconds": round(time.perf_counter() - started, 1),
            "attempt": attempt, "worker_pid": os.getpid()}
    atomic_write_json(directory / "done.json", done)
    running.unlink(missing_ok=True)
    return done


def _connect(address: str | None, num_cpus: int | None) -> None:
    import ray

    if ray.is_initialized():
        return
    quiet = {"log_to_driver": False, "logging_level": "ERROR"}
    if address is None:
        ray.init(num_cpus=num_cpus, include_dashboard=False, **quiet)
        return
    match = re.fullmatch(r"(ray://)?(?P<host>[A-Za-z0-9.\-]+|\[[0-9a-fA-F:]+\]):(?P<port>\d+)",
                         address)
    if match is None and address != "auto":
        raise SweepError(f"bad Ray address {address!r}: use host:port (from `ray start`), "
                         "ray://host:port (Ray Client) or auto")
    if match is not None:  # Ray itself waits minutes for an address nobody answers on
        host, port = match["host"].strip("[]"), int(match["port"])
        try:
            socket.create_connection((host, port), timeout=5).close()
        except OSError as err:
            raise SweepError(f"cannot reach the Ray cluster at {address}: {err}") from None
    try:
        ray.init(address=address, **quiet)
    except Exception as err:  # Ray raises ConnectionError, RuntimeError or its own errors
        raise SweepError(f"cannot reach the Ray cluster at {address}: "
                         f"{str(err).splitlines()[0] if str(err) else type(err).__name__}") \
            from None


def run_sweep(sweep: Sweep, *, address: str | None = None, retries: int = 2,
              cpus_per_task: float = 1, gpus_per_task: float | None = None,
              num_cpus: int | None = None, numerics: str | None = None,
              progress: bool = True) -> dict[str, list[str]]:
    """Run the sweep's unfinished points as Ray tasks and wait for all of them.

    ``gpus_per_task`` defaults to 1 for the full profile on a cluster that has GPUs, else 0.
    Returns the point names by outcome: ``done`` (this run), ``skipped`` (already final),
    ``failed``.
    """
    import ray
    from tqdm import tqdm

    if retries < 0:
        raise SweepError("retries must be >= 0")
    _connect(address, num_cpus)
    if gpus_per_task is None:
        has_gpu = ray.cluster_resources().get("GPU", 0) > 0
        gpus_per_task = 1 if sweep.profile == "full" and has_gpu else 0
    sweep.directory.mkdir(parents=True, exist_ok=True)
    atomic_write_json(sweep.directory / "sweep.json", {
        "chapter": sweep.chapter.slug, "profile": sweep.profile,
        "points": {p.name: p.overrides for p in sweep.points}})
    outcome: dict[str, list[str]] = {"done": [], "skipped": [], "failed": []}
    task = ray.remote(_execute_point).options(
        num_cpus=cpus_per_task, num_gpus=gpus_per_task, max_retries=retries,
        retry_exceptions=True)
    pending: dict[Any, SweepPoint] = {}
    for point in sweep.points:
        if sweep.finished(point):
            outcome["skipped"].append(point.name)
            continue
        (sweep.point_dir(point) / "failed.json").unlink(missing_ok=True)
        ref = task.remote(sweep.chapter.slug, sweep.profile, point.overrides,
                          str(sweep.point_dir(point)), numerics)
        pending[ref] = point
    bar = tqdm(total=len(sweep.points), initial=len(outcome["skipped"]), unit="point",
               desc=f"sweep {sweep.chapter.slug}", disable=not progress)
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=2.0)
        running = sum((sweep.point_dir(p) / "running.json").is_file() for p in pending.values())
        bar.set_postfix(done=len(outcome["done"]) + len(outcome["skipped"]), running=running,
                        failed=len(outcome["failed"]))
        for ref in ready:
            point = pending.pop(ref)
            try:
                done = ray.get(ref)
                outcome["done"].append(point.name)
                bar.write(f"structlab: {point.name} done in {done['wall_seconds']:.0f} s"
                          + (f" (attempt {done['attempt']})" if done["attempt"] > 1 else ""))
            except Exception as err:  # the task's own error, after its retries
                outcome["failed"].append(point.name)
                atomic_write_json(sweep.point_dir(point) / "failed.json", {
                    "overrides": point.overrides, "error": str(err).splitlines()[-1:],
                    "traceback": traceback.format_exception_only(type(err), err)})
                bar.write(f"structlab: {point.name} FAILED: {type(err).__name__}")
            bar.update(1)
    bar.set_postfix(done=len(outcome["done"]) + len(outcome["skipped"]), running=0,
                    failed=len(outcome["failed"]))
    bar.close()
    return outcome


def _glued_numbers(nb: nbformat.NotebookNode) -> dict[str, float]:
    values: dict[str, float] = {}
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            name = output.get("metadata", {}).get("scrapbook", {}).get("name")
            text = output.get("data", {}).get(GLUE_PREFIX + "text/plain")
            if name is None or text is None:
                continue
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                continue
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                values[name] = float(value)
    return values


def _claims(nb: nbformat.NotebookNode) -> dict[str, bool]:
    for cell in nb.cells:
        if cell.cell_type == "code" and "claims.report()" in cell.source:
            text = "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")
            return parse_report(text)
    return {}


def aggregate(directory: Path, *, write: bool = True) -> pd.DataFrame:
    """Mean ± std over seeds, per parameter point, of a sweep's glued numbers and claims.

    The quantities are every number the chapter glues into its text (``myst_nb.glue``), every
    claim of its claims cell, and each point's wall time.

    Returns a long table: one row per (parameter point, quantity) with ``mean``, ``std`` (sample
    standard deviation, 0 for one seed), ``n`` and ``seeds``. A claim's mean is the fraction of
    seeds in which it holds. With ``write``, the table is also written as ``report.csv`` and a
    readable ``report.md`` (``mean ± std``) beside the points.
    """
    directory = Path(directory)
    rows = []
    for done in sorted(directory.glob("*/done.json")):
        record = json.loads(done.read_text())
        overrides = record["overrides"]
        nb = nbformat.read(done.parent / "notebook.ipynb", as_version=4)
        point = {k: v for k, v in overrides.items() if k != "seed"}
        key = json.dumps(point, sort_keys=True)
        seed = overrides.get("seed")
        rows.append({"point": key, "quantity": "wall seconds", "seed": seed,
                     "value": float(record["wall_seconds"])})
        for name, value in _glued_numbers(nb).items():
            rows.append({"point": key, "quantity": name, "seed": seed, "value": value})
        for claim, holds in _claims(nb).items():
            rows.append({"point": key, "quantity": f"claim: {claim}", "seed": seed,
                         "value": float(holds)})
    if not rows:
        raise SweepError(f"no finished point under {directory}")
    frame = pd.DataFrame(rows)
    table = frame.groupby(["point", "quantity"], sort=False).agg(
        mean=("value", "mean"), std=("value", lambda v: v.std(ddof=1) if len(v) > 1 else 0.0),
        n=("value", "size"), seeds=("seed", lambda s: ",".join(str(x) for x in s)))
    table = table.reset_index()
    if write:
        atomic_write_text(directory / "report.csv", table.to_csv(index=False))
        lines = ["| point | quantity | mean ± std | n |", "|---|---|---|---|"]
        for r in table.itertuples():
            spread = "" if math.isnan(r.std) else f" ± {r.std:.4g}"
            lines.append(f"| {r.point} | {r.quantity} | {r.mean:.4g}{spread} | {r.n} |")
        atomic_write_text(directory / "report.md", "\n".join(lines) + "\n")
    return table


def check_sweep_directory(directory: str | os.PathLike[str], chapter: str | None = None) -> Path:
    """``directory`` as a :class:`~pathlib.Path` if it is a sweep (of ``chapter``, when given) with
    at least one finished point, else a :class:`SweepError` saying what is wrong. A relative path
    is taken from the source checkout when it is not found from the working directory."""
    path = Path(directory)
    if not path.is_absolute() and not path.exists():
        path = project_root() / path
    record = path / "sweep.json"
    if not record.is_file():
        raise SweepError(f"from_sweep: {directory} is not a sweep directory (no sweep.json; "
                         "sweeps live under results/<chapter>/sweeps/<sweep-id>)")
    swept = json.loads(record.read_text())["chapter"]
    if chapter is not None and swept != chapter:
        raise SweepError(f"from_sweep: {directory} is a sweep of {swept!r}, not of {chapter!r}")
    if not any(path.glob("*/done.json")):
        raise SweepError(f"from_sweep: no point of {directory} has finished yet")
    return path


def gather_experiments(directory: str | os.PathLike[str], store: Any,
                       chapter: str | None = None) -> int:
    """Make the experiments that a sweep's finished points computed available to ``store``.

    Every result file under ``<point>/results/experiments/`` of each finished point (one with
    ``done.json``) is copied, atomically, into ``store.root`` unless a file of that name is already
    there. File names carry the experiment's key (its parameters, data, code and numerics), so the
    store reads back exactly the experiments whose settings match the notebook's, and computes the
    others. For example a sweep over ``seeds`` [0], [1], [2] of one chapter, then a run of the same
    profile with ``seeds`` [0, 1, 2] and ``from_sweep`` set, assembles the three-seed tables
    without training anything again. Returns the number of files copied.
    """
    path = check_sweep_directory(directory, chapter)
    if not getattr(store, "resume", False):
        raise SweepError("from_sweep reads the sweep's finished experiments back: it needs a "
                         "resuming run (drop --fresh)")
    root = Path(store.root)
    root.mkdir(parents=True, exist_ok=True)
    copied = 0
    for done in sorted(path.glob("*/done.json")):
        for result in sorted((done.parent / "results" / "experiments").glob("*.pt")):
            for source in (result.with_suffix(".json"), result):  # the .pt last: it marks done
                target = root / source.name
                if source.is_file() and not target.exists():
                    atomic_write_bytes(target, source.read_bytes())
                    copied += source.suffix == ".pt"
    return copied
