"""The experiment store: keys that change with everything a result depends on, atomic files, and a
run killed after its first experiment that resumes where it stopped and ends with the numbers of an
uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from structlab.data.base import LabelledTensors
from structlab.experiment_store import (
    RESUME_ENV,
    ExperimentStore,
    fingerprint,
    resume_default,
    run_experiment,
)


def test_key_changes_with_every_argument_and_tensor_content(tmp_path):
    store = ExperimentStore(tmp_path)
    x = torch.arange(6.0).reshape(2, 3)
    base = {"lr": 0.1, "seed": 0, "data": x}
    k = store.key("run", base)
    assert store.key("run", dict(base)) == k
    assert store.key("run", {**base, "lr": 0.2}) != k
    assert store.key("run", {**base, "seed": 1}) != k
    assert store.key("other", base) != k
    y = x.clone()
    y[1, 2] += 1
    assert store.key("run", {**base, "data": y}) != k
    assert store.key("run", {**base, "data": x.double()}) != k
    ds = LabelledTensors(x, torch.tensor([0, 1]), name="toy")
    ds2 = LabelledTensors(x, torch.tensor([1, 0]), name="toy")
    assert fingerprint(ds) != fingerprint(ds2)


def test_numerics_enter_the_key(tmp_path, monkeypatch):
    store = ExperimentStore(tmp_path)
    k = store.key("run", {"a": 1})
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")
    assert store.key("run", {"a": 1}) != k


def test_unknown_objects_are_refused():
    with pytest.raises(TypeError, match="cannot fingerprint"):
        fingerprint({"model": object()})


def test_resume_reads_back_and_fresh_recomputes(tmp_path):
    calls = []

    def work():
        calls.append(1)
        return {"value": torch.tensor([1.0, 2.0]), "n": len(calls)}

    first = ExperimentStore(tmp_path, resume=True).run("exp", {"a": 1}, work)
    again = ExperimentStore(tmp_path, resume=True)
    second = again.run("exp", {"a": 1}, work)
    assert len(calls) == 1 and second["n"] == first["n"] == 1
    assert torch.equal(second["value"], first["value"])
    assert (again.resumed, again.computed) == (1, 0)
    fresh = ExperimentStore(tmp_path, resume=False).run("exp", {"a": 1}, work)
    assert fresh["n"] == 2
    assert run_experiment(None, "exp", {"a": 1}, work)["n"] == 3
    record = json.loads(next(tmp_path.glob("exp-*.json")).read_text())
    assert record["params"] == {"a": 1} and record["wall_seconds"] >= 0
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind


def test_a_failed_experiment_stores_nothing(tmp_path):
    store = ExperimentStore(tmp_path, resume=True)

    def fail():
        raise RuntimeError("diverged")

    with pytest.raises(RuntimeError):
        store.run("exp", {"a": 1}, fail)
    assert not list(tmp_path.iterdir())


def test_resume_default_reads_the_environment(monkeypatch):
    monkeypatch.setenv(RESUME_ENV, "1")
    assert resume_default() and ExperimentStore("/tmp/unused-store").resume
    monkeypatch.setenv(RESUME_ENV, "0")
    assert not resume_default()
    monkeypatch.delenv(RESUME_ENV)
    assert not resume_default()
    monkeypatch.setenv(RESUME_ENV, "maybe")
    with pytest.raises(ValueError, match=RESUME_ENV):
        resume_default()


# A real driver of a chapter: 2 values of n_f x 2 strategies of the n_f sweep, four experiments.
_SWEEP = textwrap.dedent("""
    import json, sys
    from structlab.experiment_store import ExperimentStore
    from structlab.neurogenesis.experiments import nf_sweep
    store = ExperimentStore(sys.argv[1], resume=sys.argv[2] == "resume")
    frame = nf_sweep([2, 8], ["north-random", "gradmax"], depths=[1], initial=4, max_width=32,
                     epochs=2, batch_size=128, buffer_size=256, lr=1e-3, seed=0, store=store)
    print(json.dumps({"computed": store.computed, "resumed": store.resumed,
                      "rows": frame.to_dict("records")}))
""")


def _sweep(directory: Path, mode: str, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", _SWEEP, str(directory), mode],
                            stdout=subprocess.PIPE, text=True, env=os.environ.copy(), **popen)


def test_a_run_killed_after_its_first_experiment_resumes(tmp_path):
    store = tmp_path / "store"
    child = _sweep(store, "resume")
    deadline = time.monotonic() + 300
    while not list(store.glob("*.pt")):
        assert child.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait()
    finished = len(list(store.glob("*.pt")))
    assert 1 <= finished < 4, "the kill came after the last experiment"

    resumed = _sweep(store, "resume")
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0
    result = json.loads(out.splitlines()[-1])
    assert result["resumed"] == finished and result["computed"] == 4 - finished

    fresh = _sweep(tmp_path / "fresh", "fresh")
    out, _ = fresh.communicate(timeout=300)
    uninterrupted = json.loads(out.splitlines()[-1])
    assert uninterrupted["computed"] == 4
    assert result["rows"] == uninterrupted["rows"]  # the same widths and accuracies, exactly
