"""Sweeps on a real local Ray runtime (2 CPUs, no mocks): planning, bad input, a killed worker,
resumption and the mean ± std report."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from structlab.cli import main
from structlab.pipeline import ParameterError, get_chapter
from structlab.pipeline.sweep import (
    SweepError,
    _glued_numbers,
    aggregate,
    parse_seeds,
    parse_values,
    plan_sweep,
)

ray = pytest.importorskip("ray", reason="sweeps need Ray: pip install -e '.[sweep]'")

CHAPTER = "data_and_baselines"
TINY = {"epochs": [1], "cnn_epochs": [1], "cnn_train_size": [1000]}


def test_seeds_and_values_parse():
    assert parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert parse_seeds("0,3,7-8") == [0, 3, 7, 8]
    for bad in ("4-0", "a", "1,1", ""):
        with pytest.raises(SweepError):
            parse_seeds(bad)
    assert parse_values("0.05,0.1") == [0.05, 0.1]
    assert parse_values("[8, 16],[32, 64]") == [[8, 16], [32, 64]]
    assert parse_values("mlp,vgg11") == ["mlp", "vgg11"]


def test_plan_validates_every_point_before_anything_runs(tmp_path):
    chapter = get_chapter(CHAPTER)
    sweep = plan_sweep(chapter, seeds=[0, 1], grid={"lr": [0.05, 0.1]}, root=tmp_path)
    assert [p.overrides for p in sweep.points] == [
        {"seed": 0, "lr": 0.05}, {"seed": 0, "lr": 0.1}, {"seed": 1, "lr": 0.05},
        {"seed": 1, "lr": 0.1}]
    assert len({p.name for p in sweep.points}) == 4
    again = plan_sweep(chapter, seeds=[0, 1], grid={"lr": [0.05, 0.1]}, root=tmp_path)
    assert again.directory == sweep.directory  # the same sweep resumes in the same place
    with pytest.raises(SweepError, match="empty grid"):
        plan_sweep(chapter, grid={"lr": []}, root=tmp_path)
    with pytest.raises(SweepError, match="empty grid"):
        plan_sweep(chapter, root=tmp_path)
    with pytest.raises(ParameterError, match="no parameter 'lrr'"):
        plan_sweep(chapter, seeds=[0], grid={"lrr": [1]}, root=tmp_path)
    with pytest.raises(ParameterError, match="must be at least 1"):
        plan_sweep(chapter, seeds=[0], grid={"epochs": [1, -3]}, root=tmp_path)


@pytest.mark.parametrize("argv, message", [
    (["sweep", "no_such_chapter", "--seeds", "0-2"], "unknown chapter"),
    (["sweep", CHAPTER, "--seeds", "0-2", "-p", "lrr", "0.1"], "no parameter 'lrr'"),
    (["sweep", CHAPTER, "-p", "lr", ","], "empty grid"),
    (["sweep", CHAPTER, "--seeds", "0-1", "--address", "127.0.0.1:9"], "cannot reach"),
    (["sweep", CHAPTER, "--seeds", "0-1", "--address", "nowhere"], "bad Ray address"),
])
def test_bad_input_gets_one_line_before_any_task(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


def _point_value(point_dir: Path, key: str) -> float:
    return _glued_numbers(nbformat.read(point_dir / "notebook.ipynb", as_version=4))[key]


def test_three_seed_sweep_survives_a_killed_worker_and_reports_mean_and_std(tmp_path):
    chapter = get_chapter(CHAPTER)
    sweep = plan_sweep(chapter, seeds=[0, 1, 2], grid=TINY)
    import shutil

    shutil.rmtree(sweep.directory, ignore_errors=True)
    argv = [sys.executable, "-m", "structlab.cli", "sweep", CHAPTER, "--seeds", "0-2",
            "--num-cpus", "2", "-q"]
    for name, values in TINY.items():
        argv += ["-p", name, ",".join(map(str, values))]
    log = tmp_path / "sweep.log"
    with log.open("w") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        killed = None
        deadline = time.time() + 300
        while killed is None and time.time() < deadline and proc.poll() is None:
            for running in sweep.directory.glob("*/running.json"):
                try:
                    pid = json.loads(running.read_text())["pid"]
                except (json.JSONDecodeError, FileNotFoundError):
                    continue
                time.sleep(3)  # let it get into the notebook
                os.kill(pid, signal.SIGKILL)
                killed = running.parent.name
                break
            time.sleep(0.5)
        assert proc.wait(timeout=600) == 0, log.read_text()[-3000:]
    assert killed is not None, "no worker was seen running"
    done = {p.name: json.loads((sweep.point_dir(p) / "done.json").read_text())
            for p in sweep.points}
    assert set(done) == {p.name for p in sweep.points}
    assert done[killed]["attempt"] == 2
    assert all(d["attempt"] == 1 for name, d in done.items() if name != killed)

    # the same command again skips every finished point
    again = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "0 done, 3 already finished" in again.stdout

    report = aggregate(sweep.directory)
    assert (sweep.directory / "report.md").is_file()
    assert set(report.n) == {3}
    numbers = report[~report.quantity.str.startswith("claim: ")
                     & (report.quantity != "wall seconds")]
    assert len(numbers) > 0, "the chapter glues no number"
    for row in numbers.itertuples():
        values = [_point_value(sweep.point_dir(p), row.quantity) for p in sweep.points]
        mean = sum(values) / 3
        std = (sum((v - mean) ** 2 for v in values) / 2) ** 0.5
        assert row.mean == pytest.approx(mean) and row.std == pytest.approx(std)


#: The neurogenesis smoke profile, trimmed to what a test needs (still every trigger and claim).
NEURO_TINY = {"nf_values": [4], "nf_strategies": ["north-random"],
              "preset_strategies": ["north-random"], "schedules": ["linear"], "gammas": [0.9],
              "cost_steps": 1}


def test_a_chapter_assembles_its_multi_seed_tables_from_a_sweep(tmp_path):
    """Two single-seed points on local Ray, then the chapter with two seeds and ``from_sweep``:
    it trains nothing again (every stored experiment is read back) and its per-seed table is
    exactly the points' tables put together."""
    from structlab.pipeline.execute import run_chapter
    from structlab.pipeline.sweep import run_sweep

    chapter = get_chapter("neurogenesis")
    grid = {"n_seeds": [1], **{k: [v] for k, v in NEURO_TINY.items()}}
    sweep = plan_sweep(chapter, seeds=[0, 1], grid=grid, root=tmp_path)
    try:
        outcome = run_sweep(sweep, num_cpus=2, progress=False)
    finally:
        ray.shutdown()
    assert sorted(outcome["done"]) == sorted(p.name for p in sweep.points), outcome

    out = tmp_path / "assembled.ipynb"
    run_chapter(chapter, profile="smoke", output=out, progress=False, overrides={
        **NEURO_TINY, "n_seeds": 2, "from_sweep": str(sweep.directory),
        "results_dir": str(tmp_path / "assembled")})
    nb = nbformat.read(out, as_version=4)
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                      for o in c.outputs if o.output_type == "stream")
    gathered = re.search(r"(\d+) experiments gathered from", printed)
    summary = re.search(r"(\d+) experiments run, (\d+) read back", printed)
    assert gathered and summary, printed[-2000:]
    assert int(summary[1]) == 0 and int(summary[2]) > 0, summary[0]
    assert int(gathered[1]) >= int(summary[2])

    assembled = pd.read_csv(tmp_path / "assembled" / "seed0" / "mlp_runs.csv")
    points = pd.concat([pd.read_csv(sweep.point_dir(p) / "results" / f"seed{p.overrides['seed']}"
                                    / "mlp_runs.csv") for p in sweep.points])
    assert sorted(assembled.seed.unique()) == [0, 1]
    key = ["label", "seed"]
    merged = assembled.merge(points, on=key, suffixes=("", "_point"), validate="one_to_one")
    assert len(merged) == len(assembled) == len(points)
    assert (merged.accuracy == merged.accuracy_point).all()
    assert (merged.neurons == merged.neurons_point).all()


def test_from_sweep_is_checked_before_the_run(tmp_path, capsys):
    def refused(extra: list[str], message: str) -> None:
        assert main(["run", "neurogenesis", *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err

    (tmp_path / "not-a-sweep").mkdir()
    refused(["-p", "from_sweep", str(tmp_path / "not-a-sweep")], "not a sweep directory")
    sweep = plan_sweep(get_chapter(CHAPTER), seeds=[0], grid=TINY, root=tmp_path)
    sweep.directory.mkdir(parents=True)
    (sweep.directory / "sweep.json").write_text(json.dumps({"chapter": CHAPTER}))
    refused(["-p", "from_sweep", str(sweep.directory)], "not of 'neurogenesis'")
    (sweep.directory / "sweep.json").write_text(json.dumps({"chapter": "neurogenesis"}))
    refused(["-p", "from_sweep", str(sweep.directory)], "no point")
    (sweep.directory / "p").mkdir()
    (sweep.directory / "p" / "done.json").write_text("{}")
    refused(["-p", "from_sweep", str(sweep.directory), "--fresh"], "--fresh")
