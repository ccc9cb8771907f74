"""Fault injection: ``structlab run`` of a small chapter that stores its experiments, killed with
SIGKILL (the command and its kernel at once, or the command alone) at seeded moments, then run
again with the same command. The resumed run removes the
temporary files the killed one left, computes only the experiments that had not finished, and
ends with exactly the results of an uninterrupted run.

The chapter is ``tiny`` of :mod:`tinychapter` (four experiments of ``delay`` seconds each, every
computation logged with the kernel's pid), in a project of its own under the test's temporary
directory, so that nothing of the checkout is touched.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tinychapter

N, DELAY = 4, 0.8
SCRIPT = Path(tinychapter.__file__)


def _command(project: Path, results: Path) -> list[str]:
    return [sys.executable, str(SCRIPT), str(project), "run", "tiny", "-q", "--resume",
            "-p", "n", str(N), "-p", "delay", str(DELAY), "-p", "results_dir", str(results)]


def _env() -> dict[str, str]:
    checkout = str(tinychapter.CHECKOUT)
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": checkout + (os.pathsep + path if path else "")}


def _log(results: Path) -> list[tuple[str, int, int]]:
    """``(event, experiment, kernel pid)`` of every line of ``calls.log``."""
    log = results / "calls.log"
    if not log.is_file():
        return []
    rows = []
    for line in log.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3:
            rows.append((parts[0], int(parts[1]), int(parts[2])))
    return rows


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _temporary(project: Path) -> list[Path]:
    return sorted(p for p in project.rglob(".*") if p.is_file() and
                  (p.suffix == ".tmp" or p.name.startswith(".tiny.")))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> list[float]:
    """The values of an uninterrupted run."""
    root = tmp_path_factory.mktemp("uninterrupted")
    project = tinychapter.make_project(root / "project")
    results = root / "results"
    done = subprocess.run(_command(project, results), env=_env(), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((results / "results.json").read_text())
    assert record["computed"] == N and record["resumed"] == 0
    return record["values"]


@pytest.mark.parametrize("seed, killed", [(0, "run"), (1, "run"), (2, "command")])
def test_a_killed_run_resumes_to_the_uninterrupted_result(seed, killed, uninterrupted, tmp_path):
    """``killed``: "run" kills the command and its kernel at once (a reset, an OOM kill of the
    group); "command" kills ``structlab run`` alone, whose kernel then exits by itself (ipykernel
    watches its parent), perhaps after finishing the experiment under way, stored whole."""
    rng = random.Random(seed)
    during, fraction = rng.randrange(N), rng.random()  # kill during experiment `during`
    project = tinychapter.make_project(tmp_path / "project")
    results = tmp_path / "results"
    command = _command(project, results)

    run = subprocess.Popen(command, env=_env(), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while sum(event == "start" for event, _, _ in _log(results)) <= during:
        assert run.poll() is None, f"the run ended before it could be killed: {run.stdout}"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(fraction * DELAY / 2)  # in the first half of its sleep: well before it ends
    kernel = _log(results)[0][2]
    for pid in (run.pid, kernel) if killed == "run" else (run.pid,):
        os.kill(pid, signal.SIGKILL)
    run.wait()
    run.stdout.close()
    while _alive(kernel):
        assert time.monotonic() < deadline, "the kernel of the killed run lives on"
        time.sleep(0.05)
    finished = {json.loads(p.with_suffix(".json").read_text())["params"]["i"]
                for p in (results / "experiments").glob("*.pt")}  # the stored experiments
    assert killed == "command" or len(finished) < N, "the kill came after the last experiment"
    left = _temporary(project)
    assert left, "the killed run left no temporary file (the fault did not happen)"

    again = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    shown = ", ".join(p.relative_to(project).as_posix() for p in left)
    assert (f"structlab: removed {len(left)} temporary file{'s' if len(left) > 1 else ''} "
            f"of a killed run (pid {run.pid}): {shown}") in again.stdout.splitlines()
    assert _temporary(project) == [] and _temporary(results) == []
    assert not list((project / "results" / ".runs").glob("*")), "a run record stayed"

    record = json.loads((results / "results.json").read_text())
    assert record["values"] == uninterrupted  # exactly the numbers of an uninterrupted run
    assert record["resumed"] == len(finished) and record["computed"] == N - len(finished)
    recomputed = {i for event, i, pid in _log(results) if event == "start" and pid != kernel}
    assert not recomputed & finished, "a finished experiment was computed again"
    assert recomputed == set(range(N)) - finished
