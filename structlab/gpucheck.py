"""``structlab gpu-check`` (``make gpu-check``): every method and every chapter on a CUDA GPU.

One command, meant for a GPU machine (at most 8 minutes on one H200 with 16 cores), that

(a) runs the device tests (``tests/test_devices.py`` with ``STRUCTLAB_DEVICE_TESTS=1``): every
    structural method built on the CPU, copied to each GPU and compared with the CPU's results;
(b) runs every chapter's smoke profile with ``device=cuda`` into a fresh temporary directory
    (every ``*_dir`` parameter under ``results/`` is pointed into it and the run is ``--fresh``,
    so no experiment a CPU run stored can be read back), the chapters concurrently, each in its
    own process and kernel with two CPU threads;
(c) compares each chapter's checked numbers, those of the stored CPU smoke run
    (``tests/notebooks/<slug>.ipynb``) with the CUDA run's (:func:`compare_notebooks`): the truth
    of every text claim and the verdict of every seed claim exactly; every number of a seed
    claim's line and every glued number within :data:`RTOL` (integers exactly);
(d) times one training step of each method family on the CPU and on the GPU
    (:func:`time_steps`, synchronised with :class:`structlab.metrics.Timer`);
(e) writes ``results/gpu-check/<device>.json`` (:func:`write_record`) and prints a table.

Without a GPU it refuses in one line before doing any work (:func:`refusal`). Everything it uses
is in the repository and its virtual environment; it needs no network.

**Tolerance of (c).** The chapters' numbers come from training runs, and a GPU sums in another
order than the CPU: the first steps agree to float32 rounding (what the device tests check), but
SGD amplifies those differences over hundreds of steps, so accuracies and widths of a smoke run
differ between devices as they differ between two seeds, by a few points. Numbers within
``RTOL = 5 %`` relative are reported *same*; the others are listed as *differs*, which is a
finding to read (a claim that flips on a GPU is one the text should not make at smoke scale),
not a failure of the command. The command fails (exit code 1) when a device test fails or a
chapter does not execute.
"""

from __future__ import annotations

import ast
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = [
    "RTOL",
    "VOLATILE",
    "GpuUnavailableError",
    "refusal",
    "notebook_numbers",
    "compare_notebooks",
    "chapter_overrides",
    "chapter_command",
    "run_chapters",
    "run_device_tests",
    "parse_junit",
    "time_steps",
    "device_slug",
    "write_record",
    "format_table",
    "missing_datasets",
    "gpu_check",
]

#: Relative tolerance of the comparison of a chapter's numbers (see the module docstring).
RTOL = 0.05
#: Glued values that describe the run rather than its results (machine, wall time): not compared.
VOLATILE = re.compile(r"^(provenance|time_.*|.*_(seconds|wall|time))$")
#: The whole check's default budget in seconds, and what of it is kept for the timing (d).
BUDGET_SECONDS = 480
TIMING_RESERVE = 75
DEVICE_TESTS = "tests/test_devices.py"
GLUE_MIME = "application/papermill.record/"


class GpuUnavailableError(ValueError):
    """No CUDA device: ``structlab gpu-check`` refuses before doing any work."""


def refusal() -> str | None:
    """Why this machine cannot run the check (one line), or ``None`` when it has a CUDA GPU."""
    import torch

    if torch.cuda.is_available():
        return None
    hidden = os.environ.get("CUDA_VISIBLE_DEVICES")
    why = (" (CUDA_VISIBLE_DEVICES is empty: every device is hidden)" if hidden == ""
           else f" (torch {torch.__version__}, built for CUDA {torch.version.cuda})"
           if torch.version.cuda else f" (torch {torch.__version__} is a CPU-only build)")
    return ("gpu-check needs a CUDA GPU and torch.cuda.is_available() is False on this machine"
            f"{why}; nothing was run")


# ------------------------------------------------------------------------------ (c) numbers
def _glue_value(data: dict[str, Any]) -> Any:
    """A glued value: its Markdown text (a glued ``Markdown`` object's plain text is only its
    repr), else its plain text parsed as a Python literal where it is one."""
    if f"{GLUE_MIME}text/markdown" in data:
        text = data[f"{GLUE_MIME}text/markdown"]
        return "".join(text) if isinstance(text, list) else str(text)
    if f"{GLUE_MIME}text/plain" in data:
        text = data[f"{GLUE_MIME}text/plain"]
        text = "".join(text) if isinstance(text, list) else str(text)
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return text
        return value
    for mime, value in data.items():
        if mime.startswith(GLUE_MIME):
            return "".join(value) if isinstance(value, list) else value
    return None


def notebook_numbers(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """What a chapter's run checks: ``claims`` (text claim -> holds), ``seeds`` (CLAIMS.md id ->
    (verdict, numbers), empty for a chapter without seed claims) and ``glue`` (name -> value:
    numbers and Python literals parsed, other values as their text)."""
    import nbformat

    from structlab.claims import parse_report
    from structlab.evidence import parse_seed_claims

    nb = nbformat.read(path, as_version=4)
    claims_text = ""
    glue: dict[str, Any] = {}
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        if "claims.report()" in cell.source:
            claims_text = "".join(o.get("text", "") for o in cell.get("outputs", [])
                                  if o.get("output_type") == "stream")
        for out in cell.get("outputs", []):
            name = out.get("metadata", {}).get("scrapbook", {}).get("name")
            if name is not None:
                glue[name] = _glue_value(out.get("data", {}))
    return {"claims": parse_report(claims_text),
            "seeds": parse_seed_claims(claims_text) or {},
            "glue": glue}


_NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")


def _close(a: Any, b: Any, rtol: float) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a == b
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return abs(a - b) <= rtol * max(abs(a), abs(b)) + 1e-12
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_close(x, y, rtol) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], rtol) for k in a)
    if isinstance(a, str) and isinstance(b, str):
        return _close_text(a, b, rtol)
    return a == b


def _close_text(a: str, b: str, rtol: float) -> bool:
    """Two texts that say the same with numbers within ``rtol`` (integers exactly)."""
    if _NUMBER.sub("#", a) != _NUMBER.sub("#", b):
        return False

    def parse(s: str) -> int | float:
        return float(s) if any(c in s for c in ".eE") else int(s)

    return all(_close(parse(x), parse(y), rtol)
               for x, y in zip(_NUMBER.findall(a), _NUMBER.findall(b)))


def compare_notebooks(reference: dict[str, dict[str, Any]], other: dict[str, dict[str, Any]],
                      rtol: float = RTOL) -> dict[str, Any]:
    """Compare two runs' :func:`notebook_numbers` (the stored CPU run first).

    Returns ``{"compared": n, "same": n, "differs": [rows], "volatile": [names]}``; a row is
    ``{"kind": "claim" | "seed" | "glue", "name", "cpu", "cuda"}`` (``None`` where one run lacks
    the item)."""
    differs: list[dict[str, Any]] = []
    compared = 0
    volatile: list[str] = []

    def check(kind: str, name: str, a: Any, b: Any, same: bool) -> None:
        nonlocal compared
        compared += 1
        if not same:
            differs.append({"kind": kind, "name": name, "cpu": a, "cuda": b})

    for kind, section in (("claim", "claims"), ("seed", "seeds"), ("glue", "glue")):
        ref, got = reference.get(section, {}), other.get(section, {})
        for name in list(ref) + [n for n in got if n not in ref]:
            if kind == "glue" and VOLATILE.match(name):
                volatile.append(name)
                continue
            a, b = ref.get(name), got.get(name)
            if name not in ref or name not in got:
                check(kind, name, a, b, False)
            elif kind == "claim":
                check(kind, name, a, b, a == b)
            elif kind == "seed":  # the verdict exactly, its numbers within rtol
                a, b = list(a), list(b)
                check(kind, name, a, b, a[0] == b[0] and _close_text(a[1], b[1], rtol))
            else:
                check(kind, name, a, b, _close(a, b, rtol))
    return {"compared": compared, "same": compared - len(differs), "differs": differs,
            "volatile": volatile}


# ------------------------------------------------------------------------------ (b) chapters
def chapter_overrides(chapter: Any, directory: Path, device: str = "cuda") -> dict[str, Any]:
    """The parameters of a chapter's check run: ``device`` and every ``*_dir`` parameter whose
    default lies under ``results/`` moved into ``directory`` (same relative layout)."""
    overrides: dict[str, Any] = {"device": device}
    for name, parameter in chapter.parameters.items():
        default = parameter.default
        if name.endswith("_dir") and isinstance(default, str) and default.startswith("results/"):
            overrides[name] = str(directory / default)
    if "device" not in chapter.parameters:
        raise ValueError(f"chapter {chapter.slug} has no device parameter")
    return overrides


def chapter_command(chapter: Any, directory: Path, device: str = "cuda") -> list[str]:
    """``python -m structlab run <slug> -p device cuda -p <dir> <fresh dir> ... --fresh -q -o``
    ``<directory>/<slug>.ipynb``: the chapter's smoke profile on ``device``."""
    command = [sys.executable, "-m", "structlab", "run", chapter.slug, "--profile", "smoke",
               "--fresh", "-q", "-o", str(directory / f"{chapter.slug}.ipynb")]
    for name, value in chapter_overrides(chapter, directory, device).items():
        command += ["-p", name, str(value)]
    return command


@dataclass
class _Job:
    name: str
    command: list[str]
    log: Path
    env: dict[str, str]
    process: subprocess.Popen | None = None
    started: float = 0.0
    wall: float = 0.0
    returncode: int | None = None
    timed_out: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def _start(job: _Job, cwd: Path) -> None:
    job.log.parent.mkdir(parents=True, exist_ok=True)
    with job.log.open("wb") as log:  # the child keeps its own handle
        job.process = subprocess.Popen(job.command, cwd=cwd, env=job.env, stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True)
    job.started = time.perf_counter()


def _process_table() -> dict[int, tuple[int, int]]:
    """``pid -> (parent pid, process group)`` of every process (from ``/proc``)."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        table[int(entry)] = (int(fields[1]), int(fields[2]))
    return table


def _kill_tree(pid: int) -> None:
    """SIGKILL ``pid``, its descendants and their process groups. A chapter's notebook kernel is
    a child of ``structlab run`` in a session of its own (jupyter_client starts it so), which
    killing the run's process group alone would leave running on the GPU."""
    table = _process_table()
    tree, todo = [pid], [pid]
    while todo:
        parent = todo.pop()
        children = [p for p, (ppid, _) in table.items() if ppid == parent]
        tree += children
        todo += children
    own = os.getpgrp()
    for group in {table[p][1] for p in tree if p in table} - {own}:
        try:
            os.killpg(group, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    for p in tree:
        try:
            os.kill(p, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _wait(jobs: Sequence[_Job], deadline: float) -> None:
    """Wait for every job; kill any still running at ``deadline`` with all its processes."""
    pending = [j for j in jobs if j.process is not None]
    try:
        while pending:
            for job in list(pending):
                rc = job.process.poll()
                if rc is None and time.perf_counter() >= deadline:
                    job.timed_out = True
                    _kill_tree(job.process.pid)
                    rc = job.process.wait()
                if rc is not None:
                    job.returncode, job.wall = rc, time.perf_counter() - job.started
                    pending.remove(job)
            if pending:
                time.sleep(0.5)
    except BaseException:  # interrupted (Ctrl-C): leave nothing running on the GPU
        for job in pending:
            _kill_tree(job.process.pid)
        raise


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])


def _child_env(threads: int = 2, **extra: str) -> dict[str, str]:
    """This process's environment (its visible GPUs included) with ``threads`` CPU threads."""
    return {**os.environ, "STRUCTLAB_THREADS": str(threads), **extra}


def run_chapters(chapters: Sequence[Any], directory: Path, *, deadline: float,
                 root: Path, extra_jobs: Sequence[_Job] = ()) -> list[_Job]:
    """Run the chapters' smoke profiles on CUDA concurrently (and ``extra_jobs`` beside them)
    until ``deadline`` (a ``time.perf_counter()`` value). Returns the chapter jobs."""
    jobs = [_Job(c.slug, chapter_command(c, directory), directory / f"{c.slug}.log",
                 _child_env()) for c in chapters]
    for job in [*extra_jobs, *jobs]:
        _start(job, root)
    _wait([*extra_jobs, *jobs], deadline)
    return jobs


# ------------------------------------------------------------------------------ (a) tests
def parse_junit(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Counts (passed, failed, skipped) and the failing test ids of a pytest JUnit XML report."""
    root = ET.parse(path).getroot()
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    failing: list[str] = []
    for case in root.iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        if case.find("failure") is not None or case.find("error") is not None:
            counts["failed"] += 1
            failing.append(name)
        elif case.find("skipped") is not None:
            counts["skipped"] += 1
        else:
            counts["passed"] += 1
    return {**counts, "failing": failing}


def device_tests_job(directory: Path) -> _Job:
    """The pytest run of :data:`DEVICE_TESTS`, the GPU visible (``STRUCTLAB_DEVICE_TESTS=1``)."""
    junit = directory / "device-tests.xml"
    command = [sys.executable, "-m", "pytest", DEVICE_TESTS, "-q", "-p", "no:cacheprovider",
               f"--junitxml={junit}"]
    job = _Job("device tests", command, directory / "device-tests.log",
               _child_env(threads=4, STRUCTLAB_DEVICE_TESTS="1"))
    job.extra["junit"] = junit
    return job


def run_device_tests(directory: Path, timeout: float, root: Path) -> dict[str, Any]:
    """Run the device tests alone; returns :func:`device_tests_result`."""
    job = device_tests_job(directory)
    _start(job, root)
    _wait([job], time.perf_counter() + timeout)
    return device_tests_result(job)


def device_tests_result(job: _Job) -> dict[str, Any]:
    junit = job.extra["junit"]
    result: dict[str, Any] = {"returncode": job.returncode, "wall_seconds": round(job.wall, 1),
                              "timed_out": job.timed_out}
    if Path(junit).is_file():
        result.update(parse_junit(junit))
    else:
        result.update(passed=0, failed=0, skipped=0, failing=[], error=_tail(job.log))
    result["ok"] = job.returncode == 0 and result["failed"] == 0 and result["passed"] > 0
    return result


# ------------------------------------------------------------------------------ (d) timing
def _workloads(size: str) -> dict[str, Callable[[Any], Callable[[], None]]]:
    """Per method family, a builder ``device -> step``: one training step of the family's
    network with its structural machinery in place. ``size``: ``"check"`` or ``"tiny"``."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    tiny = size == "tiny"
    batch = 8 if tiny else 64
    side = 8 if tiny else 32

    def data(device, shape, classes=10):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(shape, generator=g).to(device)
        return x, torch.randint(0, classes, (shape[0],), generator=g).to(device)

    def plain_step(model, opt, x, y, state=None, callback=None):
        """One optimiser step; with a callback, then ``callback.on_step_end(state)`` (buffers,
        triggers, growth or pruning when due), the step counted in ``state``."""
        def step() -> None:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()
            if callback is not None:
                state.step += 1
                callback.on_step_end(state)
        return step

    def operators(device):
        from structlab.models import VGG
        from structlab.operators import prune_global

        torch.manual_seed(0)
        cfg = [4, "M", 8] if tiny else [32, "M", 64, "M", 128]
        model = VGG(cfg, input_size=side, in_channels=3, num_classes=10,
                    dense=[16 if tiny else 256]).to(device)
        prune_global(model, 0.5)  # masked training
        x, y = data(device, (batch, 3, side, side))
        return plain_step(model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9), x, y)

    def darts(device):
        from structlab.darts.supernet import Supernet

        torch.manual_seed(0)
        net = Supernet(2 if tiny else 8, 10, 3 if tiny else 5, in_channels=3).to(device)
        x, y = data(device, (batch // 2 if not tiny else 4, 3, side // 2, side // 2))
        w_opt = torch.optim.SGD(net.weight_parameters(), lr=0.025, momentum=0.9)
        a_opt = torch.optim.Adam(net.arch_parameters(), lr=3e-4)

        def step() -> None:  # DARTS alternate: a w-step and an alpha step
            for opt in (w_opt, a_opt):
                net.zero_grad(set_to_none=True)
                F.cross_entropy(net(x), y).backward()
                opt.step()
        return step

    def equivariance(device):
        from structlab.equivariance import GroupConv2d

        torch.manual_seed(0)
        c = 2 if tiny else 16
        model = nn.Sequential(GroupConv2d(3, c, 3, "D4", lifting=True), nn.ReLU(),
                              GroupConv2d(c, c, 3, "D4"), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                              nn.Flatten(), nn.Linear(8 * c, 10)).to(device)
        x, y = data(device, (batch, 3, side, side))
        return plain_step(model, torch.optim.Adam(model.parameters(), lr=1e-3), x, y)

    def neurogenesis(device):
        from structlab.models import MLP
        from structlab.neurogenesis import ModifiedReLU, Neurogenesis
        from structlab.training import History, TrainState

        torch.manual_seed(0)
        d = 32 if tiny else 784
        model = MLP(d, [8, 8] if tiny else [64, 64], 10, activation=ModifiedReLU).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        x, y = data(device, (batch * 2, d))
        state = TrainState(model=model, optimizer=opt, device=torch.device(device),
                           history=History(), total_steps=10**6)
        state.inputs, state.targets = x, y
        cb = Neurogenesis("north-select", max_width=16 if tiny else 128,
                          buffer_size=batch * 2, candidates=20, seed=0)
        cb.on_train_begin(state)
        return plain_step(model, opt, x, y, state, cb)

    def growprune(device):
        from structlab.growprune import DYNO, TransferVGG
        from structlab.training import History, TrainState

        torch.manual_seed(0)
        model = TransferVGG(cfg=[4, "M", 6, "M"] if tiny else [32, "M", 64, "M", 128, "M"],
                            dense=[8] if tiny else [128], in_channels=3, num_classes=10,
                            input_size=side, pool_to=None, dropout=0.0, mean=None,
                            std=None).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        x, y = data(device, (batch, 3, side, side))
        state = TrainState(model=model, optimizer=opt, device=torch.device(device),
                           history=History(), step=0)
        state.inputs, state.targets = x, y
        dyno = DYNO(every=10, min_samples=batch)
        dyno.on_train_begin(state)
        return plain_step(model, opt, x, y, state, dyno)  # DYNO evaluates every 10th step

    def heuristics(device):
        from structlab.heuristics import HRN

        torch.manual_seed(0)
        model = HRN.conv(3, 10, channels=(4, 8) if tiny else (32, 64),
                         hidden=4 if tiny else 32).to(device)
        x, y = data(device, (batch, 3, side, side))
        return plain_step(model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9), x, y)

    return {"operators (masked VGG)": operators, "darts (supernet w + alpha step)": darts,
            "equivariance (D4 group convs)": equivariance,
            "neurogenesis (MLP + NORTH-Select)": neurogenesis,
            "growprune (VGG + DYNO)": growprune, "heuristics (conv HRN)": heuristics}


def time_steps(devices: Sequence[str], *, repeats: int = 10, warmup: int = 3,
               size: str = "check") -> list[dict[str, Any]]:
    """Median seconds of one training step of each method family on each device, after
    ``warmup`` steps; each step timed by :class:`~structlab.metrics.Timer` (which synchronises a
    CUDA device at both ends, so that the queued kernels are counted). One row per family:
    ``{"family", "<device>_ms", ..., "speedup"}`` (CPU time over the last device's)."""
    import torch

    from structlab.metrics import Timer

    rows = []
    for family, build in _workloads(size).items():
        row: dict[str, Any] = {"family": family}
        for device in devices:
            try:
                step = build(device)
                for _ in range(warmup):
                    step()
                times = []
                for _ in range(repeats):
                    with Timer(torch.device(device)) as timer:
                        step()
                    times.append(timer.seconds)
                row[f"{device}_ms"] = round(1000 * statistics.median(times), 3)
            except Exception as err:  # a family that fails on a device is a finding, not a stop
                row[f"{device}_ms"] = None
                row.setdefault("errors", {})[device] = f"{type(err).__name__}: {err}"[:300]
        first, last = row.get(f"{devices[0]}_ms"), row.get(f"{devices[-1]}_ms")
        row["speedup"] = round(first / last, 2) if first and last and len(devices) > 1 else None
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------ (e) record
def device_slug(name: str) -> str:
    """``"NVIDIA H200"`` -> ``"cuda-nvidia-h200"``: the record's file name."""
    return "cuda-" + (re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "gpu")


def write_record(directory: str | os.PathLike[str], device_name: str,
                 record: dict[str, Any]) -> Path:
    """Write ``<directory>/<device_slug(device_name)>.json`` atomically; returns its path."""
    from structlab.results import atomic_write_json

    return atomic_write_json(Path(directory) / f"{device_slug(device_name)}.json",
                             {"device": device_name, **record})


def format_table(record: dict[str, Any]) -> str:
    """The printed summary: device tests, one line per chapter, one per timed family."""
    lines = []
    tests = record.get("device_tests")
    if tests:
        lines.append(f"device tests: {tests['passed']} passed, {tests['failed']} failed, "
                     f"{tests['skipped']} skipped ({tests['wall_seconds']} s)"
                     + ("" if tests["ok"] else "  <- FAILED"))
        lines += [f"    failed: {name}" for name in tests.get("failing", [])]
        if tests.get("error"):
            lines.append(f"    {tests['error']}")
    chapters = record.get("chapters", {})
    if chapters:
        lines.append(f"{'chapter':20s} {'status':9s} {'wall s':>7s} {'same':>5s} {'differs':>8s}")
        for slug, result in chapters.items():
            cmp = result.get("comparison") or {}
            same = str(cmp.get("same", "-"))
            n_differ = str(len(cmp["differs"])) if cmp else "-"
            lines.append(f"{slug:20s} {result['status']:9s} {result['wall_seconds']:7.1f} "
                         f"{same:>5s} {n_differ:>8s}")
            for row in cmp.get("differs", [])[:8]:
                lines.append(f"    differs ({row['kind']}) {str(row['name'])[:60]}: "
                             f"cpu {str(row['cpu'])[:40]} / cuda {str(row['cuda'])[:40]}")
            if len(cmp.get("differs", [])) > 8:
                lines.append(f"    ... {len(cmp['differs']) - 8} more in the record")
            if result.get("error"):
                lines.append(f"    {result['error'][:200]}")
    timing = record.get("timing", [])
    if timing:
        devices = [k[:-3] for k in timing[0] if k.endswith("_ms")]
        lines.append(f"{'one training step':36s} " + " ".join(f"{d + ' ms':>12s}" for d in devices)
                     + f" {'speedup':>8s}")
        for row in timing:
            cells = " ".join(f"{row[f'{d}_ms']:12.2f}" if row.get(f"{d}_ms") is not None
                             else f"{'error':>12s}" for d in devices)
            speed = f"{row['speedup']:8.2f}" if row.get("speedup") else f"{'-':>8s}"
            lines.append(f"{row['family'][:36]:36s} {cells} {speed}")
            lines += [f"    {d}: {e[:150]}" for d, e in row.get("errors", {}).items()]
    return "\n".join(lines)


# ------------------------------------------------------------------------------ the command
def missing_datasets() -> list[str]:
    """The offline datasets the chapters' smoke runs read that this machine lacks (the check
    uses no network: ``make gpu-check`` runs ``structlab data setup`` first)."""
    from structlab.data.offline import find_fashion_mnist
    from structlab.data.text import find_wordnet

    return [name for name, found in (("Fashion-MNIST", find_fashion_mnist()),
                                     ("WordNet", find_wordnet())) if found is None]


def gpu_check(*, chapters: Sequence[str] | None = None, output: Path | None = None,
              budget: float = BUDGET_SECONDS, run_tests: bool = True,
              run_chapter_checks: bool = True, timing: bool = True, rtol: float = RTOL,
              keep: bool = False) -> tuple[int, Path]:
    """Run the check (module docstring); returns ``(exit code, record path)``. Raises
    :class:`GpuUnavailableError` without a CUDA GPU, before doing anything."""
    why = refusal()
    if why is not None:
        raise GpuUnavailableError(why)
    import shutil

    import torch

    from structlab.benchmarks import machine
    from structlab.pipeline.chapters import list_chapters, project_root
    from structlab.pipeline.execute import smoke_reference

    root = project_root()
    started = time.perf_counter()
    deadline = started + budget - (TIMING_RESERVE if timing else 0)
    known = {c.slug: c for c in list_chapters(root)}
    if chapters:
        unknown = [s for s in chapters if s not in known]
        if unknown:
            raise ValueError(f"unknown chapter(s) {', '.join(unknown)}; chapters: "
                             f"{', '.join(known)}")
    selected = [known[s] for s in (chapters or known)] if run_chapter_checks else []
    name = torch.cuda.get_device_name(0)
    work = Path(tempfile.mkdtemp(prefix="structlab-gpu-check-"))
    record: dict[str, Any] = {"started_at": datetime.now(UTC).isoformat(timespec="seconds"),
                              "machine": machine(), "torch": torch.__version__,
                              "cuda": torch.version.cuda, "rtol": rtol, "work_dir": str(work)}
    print(f"structlab: gpu-check on {name} (work directory {work}; budget {budget:.0f} s)",
          flush=True)
    if selected:
        missing = missing_datasets()
        record["missing_datasets"] = missing
        if missing:
            print(f"structlab: gpu-check: {', '.join(missing)} not installed (structlab data "
                  "setup); the chapters that read them will fail", flush=True)
    code = 0
    try:
        tests_job = [device_tests_job(work)] if run_tests else []
        jobs = run_chapters(selected, work, deadline=deadline, root=root, extra_jobs=tests_job)
        if tests_job:
            record["device_tests"] = device_tests_result(tests_job[0])
            code |= 0 if record["device_tests"]["ok"] else 1
        record["chapters"] = {}
        for job in jobs:
            out = work / f"{job.name}.ipynb"
            result: dict[str, Any] = {"wall_seconds": round(job.wall, 1),
                                      "returncode": job.returncode}
            if job.returncode == 0 and out.is_file():
                result["status"] = "ran"
                reference = smoke_reference(known[job.name], root)
                result["comparison"] = compare_notebooks(notebook_numbers(reference),
                                                         notebook_numbers(out), rtol)
            else:
                result["status"] = "timed out" if job.timed_out else "failed"
                result["error"] = _tail(job.log)
                code |= 1
            record["chapters"][job.name] = result
        if timing:
            record["timing"] = time_steps(["cpu", "cuda"])
        record["wall_seconds"] = round(time.perf_counter() - started, 1)
        path = write_record(root / "results" / "gpu-check" if output is None else output,
                            name, record)
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    print(format_table(record))
    print(f"structlab: gpu-check record written to {path} ({record['wall_seconds']} s)")
    return code, path
