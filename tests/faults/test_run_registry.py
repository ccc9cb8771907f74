"""The registry of live runs (:mod:`structlab.pipeline.runs`): a dead run's temporary files are
removed, nothing a live run (or a sweep, or an older run) could own is."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from structlab.pipeline.runs import FRESH_SECONDS, clean_dead_runs, registered_run, registry


def _touch(path: Path, age: float = 0.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("partial")
    when = time.time() - age
    os.utime(path, (when, when))
    return path


def _dead_record(root: Path, started: float, notebook_dir: Path, results_dir: Path) -> Path:
    """A record as a run killed with SIGKILL leaves it: on disk, its lock gone with its process."""
    path = registry(root) / "999999-dead.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"pid": 999999, "started": started, "chapter": "tiny",
                                "notebook_dir": str(notebook_dir),
                                "results_dir": str(results_dir)}))
    return path


def test_only_what_the_dead_run_could_have_written_is_removed(tmp_path):
    notebooks, results = tmp_path / "results" / "tiny", tmp_path / "results" / "tiny"
    old = FRESH_SECONDS + 20
    dead_started = time.time() - old - 10
    record = _dead_record(tmp_path, dead_started, notebooks, results)
    leftover_nb = _touch(notebooks / ".tiny.abc123.ipynb", age=old)
    leftover_tmp = _touch(results / "experiments" / ".tiny-0123.pt.x1.tmp", age=old)
    before_it = _touch(notebooks / ".tiny.older.ipynb", age=old + 60)  # older than the dead run
    fresh_tmp = _touch(results / "seed0" / ".metrics.json.x2.tmp")  # being written right now
    sweep_tmp = _touch(results / "sweeps" / "smoke-1" / "seed=0" / ".done.json.x3.tmp", age=old)
    other_chapter = _touch(notebooks / ".other.abc.ipynb", age=old)
    finished = _touch(results / "experiments" / "tiny-0123.pt", age=old)

    cleaned = clean_dead_runs(tmp_path)
    assert cleaned == [(999999, sorted([leftover_tmp, leftover_nb]))]
    for kept in (before_it, fresh_tmp, sweep_tmp, other_chapter, finished):
        assert kept.exists(), kept
    assert not record.exists()


def test_a_live_run_keeps_its_files_and_its_record(tmp_path):
    notebooks = tmp_path / "results" / "tiny"
    dead_started = time.time() - 120
    _dead_record(tmp_path, dead_started, notebooks, notebooks)
    with registered_run("tiny", notebooks, notebooks, root=tmp_path) as cleaned_first:
        assert cleaned_first == [(999999, [])]
        live_file = _touch(notebooks / ".tiny.live.ipynb")  # the live run's, after it started
        _dead_record(tmp_path, dead_started, notebooks, notebooks)  # another dead run, same dir
        assert clean_dead_runs(tmp_path) == [(999999, [])]
        assert live_file.exists()
        records = list(registry(tmp_path).glob("*.json"))
        assert len(records) == 1 and json.loads(records[0].read_text())["pid"] == os.getpid()
        assert clean_dead_runs(tmp_path) == []  # a live record is never taken for a dead one
    assert not list(registry(tmp_path).iterdir())


def test_structlab_book_removes_what_a_killed_book_run_left(tmp_path, monkeypatch, capsys):
    import tinychapter

    import structlab.pipeline.execute as execute
    from structlab.cli import main

    project = tinychapter.make_project(tmp_path / "project")
    tinychapter.point_at(project, monkeypatch.setattr)
    built = []
    monkeypatch.setattr(execute, "build_book", lambda **kwargs: built.append(kwargs))
    old = FRESH_SECONDS + 20
    record = _dead_record(project, time.time() - old - 10, project / "chapters",
                          project / "results")
    record.write_text(record.read_text().replace('"tiny"', '"*"'))  # a killed `structlab book`
    left = _touch(project / "chapters" / ".tiny.k1ll3d.ipynb", age=old)
    assert main(["book", "-q"]) == 0 and built
    assert capsys.readouterr().out.splitlines() == [
        "structlab: removed 1 temporary file of a killed run (pid 999999): "
        "chapters/.tiny.k1ll3d.ipynb"]
    assert not left.exists() and (project / "chapters" / "tiny.ipynb").exists()


def test_structlab_sweep_removes_what_killed_points_left(tmp_path, monkeypatch, capsys):
    """Before its points run and after they ended, ``structlab sweep`` removes the temporary
    files of attempts whose worker is dead, never those of a point a live worker runs."""
    pytest.importorskip("ray", reason="sweeps need Ray")
    import tinychapter

    import structlab.pipeline.sweep as sweep_module
    from structlab.cli import main
    from structlab.pipeline.chapters import get_chapter

    project = tinychapter.make_project(tmp_path / "project")
    tinychapter.point_at(project, monkeypatch.setattr)
    sweep = sweep_module.plan_sweep(get_chapter("tiny"), seeds=[0, 1])
    dead, live = (sweep.point_dir(p) for p in sweep.points)
    old = FRESH_SECONDS + 20
    for point, pid in ((dead, 999999), (live, os.getpid())):
        _touch(point / "running.json").write_text(json.dumps({"pid": pid, "attempt": 1}))
        _touch(point / ".tiny.att3mp.ipynb", age=old)
        _touch(point / "results" / "experiments" / ".tiny-01.pt.x.tmp", age=old)
    ran = []
    monkeypatch.setattr(sweep_module, "run_sweep",
                        lambda *a, **k: ran.append(1) or {"done": [], "skipped": [],
                                                          "failed": []})
    monkeypatch.setattr(sweep_module, "aggregate", lambda directory: [])
    assert main(["sweep", "tiny", "--seeds", "0-1", "-q"]) == 0 and ran
    where = dead.relative_to(project).as_posix()
    assert (f"structlab: removed 2 temporary files of killed points: {where}/.tiny.att3mp.ipynb, "
            f"{where}/results/experiments/.tiny-01.pt.x.tmp") in capsys.readouterr().out
    assert not list(dead.rglob(".tiny*"))
    assert len(list(live.rglob(".tiny*"))) == 2
