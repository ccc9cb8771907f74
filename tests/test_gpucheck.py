"""``structlab gpu-check``, the parts a CPU machine can test: the one-line refusal before any work,
the comparison of two runs' checked numbers, the chapters' check parameters, the jobs' deadline,
the JUnit counts, the record and its table, the step timings (tiny networks, CPU only)."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time

import pytest

from structlab import gpucheck
from structlab.cli import build_parser, main
from structlab.gpucheck import (
    GpuUnavailableError,
    compare_notebooks,
    device_slug,
    format_table,
    notebook_numbers,
    parse_junit,
    time_steps,
    write_record,
)
from structlab.pipeline import list_chapters
from structlab.pipeline.execute import smoke_reference

CHAPTERS = list_chapters()


def test_without_a_gpu_the_command_refuses_in_one_line_before_any_work(monkeypatch, capsys):
    assert os.environ.get("CUDA_VISIBLE_DEVICES") == "" or not __import__(
        "torch").cuda.is_available()

    def no_work(*args, **kwargs):
        raise AssertionError("gpu-check did work without a GPU")

    monkeypatch.setattr(gpucheck, "gpu_check", no_work)
    monkeypatch.setattr(gpucheck.tempfile, "mkdtemp", no_work)
    for argv in (["gpu-check"], ["gpu-check", "--probe"], ["gpu-check", "--chapters", "x"]):
        assert main(argv) == 2
        out, err = capsys.readouterr()
        assert out == "" and err.count("\n") == 1, (out, err)
        assert err.startswith("structlab: error: gpu-check needs a CUDA GPU") and \
            err.rstrip().endswith("nothing was run")


def test_the_function_itself_refuses_before_making_its_directory(monkeypatch):
    monkeypatch.setattr(gpucheck.tempfile, "mkdtemp", lambda **kw: pytest.fail("made a dir"))
    with pytest.raises(GpuUnavailableError, match="needs a CUDA GPU"):
        gpucheck.gpu_check()


def test_the_command_line_refusal_is_one_line_and_a_non_zero_exit():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, "-m", "structlab", "gpu-check"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [
        "structlab: error: gpu-check needs a CUDA GPU and torch.cuda.is_available() is False on "
        "this machine (CUDA_VISIBLE_DEVICES is empty: every device is hidden); nothing was run"]


# ------------------------------------------------------------------------------ comparison
@pytest.fixture(scope="module")
def stored():
    """The checked numbers of every stored smoke run."""
    return {c.slug: notebook_numbers(smoke_reference(c)) for c in CHAPTERS}


def test_a_stored_run_has_claims_and_glue_and_matches_itself(stored):
    for slug, numbers in stored.items():
        assert len(numbers["claims"]) >= 3, slug
        assert numbers["glue"], slug
        result = compare_notebooks(numbers, copy.deepcopy(numbers))
        assert result["differs"] == [] and result["same"] == result["compared"] > 0, slug
        assert "provenance" in result["volatile"], slug  # the machine's line is not compared
    assert any(n["seeds"] for n in stored.values())  # converted chapters' seed claims are read


def test_glue_values_are_parsed_numbers_where_they_are_numbers(stored):
    glue = stored["neurogenesis"]["glue"]
    assert glue["n_train"] == 2000 and isinstance(glue["n_train"], int)
    assert isinstance(glue["acc_max"], float)
    assert glue["dataset_name"] == "Fashion-MNIST"  # a glued Markdown object: its text
    assert not any("IPython.core.display" in str(v) for n in stored.values()
                   for v in n["glue"].values())


def test_every_kind_of_difference_is_reported(stored):
    slug = next(s for s, n in stored.items() if n["seeds"])
    cpu = stored[slug]
    cuda = copy.deepcopy(cpu)
    claim = next(iter(cuda["claims"]))
    cuda["claims"][claim] = not cuda["claims"][claim]
    seed = next(iter(cuda["seeds"]))
    verdict, numbers = cuda["seeds"][seed]
    cuda["seeds"][seed] = ("a verdict no run gives", numbers)
    floats = [k for k, v in cuda["glue"].items() if isinstance(v, float) and v != 0]
    ints = [k for k, v in cuda["glue"].items() if isinstance(v, int) and not isinstance(v, bool)]
    cuda["glue"][floats[0]] *= 1.2  # beyond 5 %
    cuda["glue"][floats[1]] *= 1.01  # within 5 %: the same
    cuda["glue"][ints[0]] += 1  # integers exactly
    cuda["glue"]["provenance"] = "another machine"  # volatile: not compared
    gone = next(k for k in cuda["glue"] if k not in (floats[0], floats[1], ints[0], "provenance"))
    del cuda["glue"][gone]
    result = compare_notebooks(cpu, cuda)
    found = {(r["kind"], r["name"]) for r in result["differs"]}
    assert found == {("claim", claim), ("seed", seed), ("glue", floats[0]), ("glue", ints[0]),
                     ("glue", gone)}
    assert result["same"] == result["compared"] - 5


def test_numbers_in_texts_compare_within_the_tolerance():
    a = {"claims": {}, "seeds": {"1.1": ("shown", "mean 80.0 ± 1.5, n = 3, p = 0.010")},
         "glue": {"md": "3 of the 4 runs end at 61.2 %"}}
    b = copy.deepcopy(a)
    b["seeds"]["1.1"] = ("shown", "mean 81.0 ± 1.52, n = 3, p = 0.0101")
    b["glue"]["md"] = "3 of the 4 runs end at 62.0 %"
    assert compare_notebooks(a, b)["differs"] == []
    b["seeds"]["1.1"] = ("shown", "mean 81.0 ± 1.52, n = 4, p = 0.0101")  # a count: exactly
    b["glue"]["md"] = "2 of the 4 runs end at 61.2 %"
    assert {r["name"] for r in compare_notebooks(a, b)["differs"]} == {"1.1", "md"}
    b["glue"]["md"] = "3 of the 4 runs end below 61.2 %"  # other words
    assert compare_notebooks(a, b, rtol=1.0)["differs"][-1]["name"] == "md"


# ------------------------------------------------------------------------------ chapters
@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda c: c.slug)
def test_a_chapters_check_run_is_on_cuda_in_a_fresh_directory(chapter, tmp_path):
    overrides = gpucheck.chapter_overrides(chapter, tmp_path)
    assert overrides["device"] == "cuda" and "results_dir" in overrides
    values = chapter.resolve("smoke", overrides)
    for name, value in values.items():  # nothing is read from or written to results/ any more
        if name.endswith("_dir") and isinstance(value, str) and value:
            assert value.startswith(str(tmp_path)), (name, value)
    command = gpucheck.chapter_command(chapter, tmp_path)
    assert command[:3] == [sys.executable, "-m", "structlab"]
    args = build_parser().parse_args(command[3:])
    assert args.chapter == chapter.slug and args.profile == "smoke" and args.resume is False
    assert args.output == str(tmp_path / f"{chapter.slug}.ipynb")
    assert dict(args.param) == {k: str(v) for k, v in overrides.items()}


def test_jobs_past_the_deadline_are_killed_with_their_children(tmp_path):
    # a child in the job's group and one in a session of its own (as a notebook kernel is)
    spawn = ("import subprocess, sys, time; "
             "k = subprocess.Popen(['sleep', '60'], start_new_session=True); "
             "subprocess.Popen(['sleep', '60']); "
             "open(sys.argv[1], 'w').write(str(k.pid)); time.sleep(60)")
    slow = gpucheck._Job("slow", [sys.executable, "-c", spawn, str(tmp_path / "kernel.pid")],
                         tmp_path / "slow.log", dict(os.environ))
    quick = gpucheck._Job("quick", [sys.executable, "-c", "print('done')"],
                          tmp_path / "quick.log", dict(os.environ))
    started = time.perf_counter()
    for job in (slow, quick):
        gpucheck._start(job, tmp_path)
    for _ in range(100):
        if (tmp_path / "kernel.pid").is_file() and (tmp_path / "kernel.pid").read_text():
            break
        time.sleep(0.1)
    kernel = int((tmp_path / "kernel.pid").read_text())
    gpucheck._wait([slow, quick], time.perf_counter() + 1)
    assert time.perf_counter() - started < 20
    assert slow.timed_out and slow.returncode != 0
    assert not quick.timed_out and quick.returncode == 0 and gpucheck._tail(quick.log) == "done"
    for _ in range(50):  # SIGKILL is delivered asynchronously: give the processes a moment
        if not _live_members(slow.process.pid) + _live_members(kernel):
            break
        time.sleep(0.1)
    assert _live_members(slow.process.pid) == []  # the job's group
    assert _live_members(kernel) == []  # and the child in its own session


def _live_members(group: int) -> list[int]:
    """The processes of process group ``group`` that are not zombies (waiting for a reaper)."""
    live = []
    for stat in os.listdir("/proc"):
        if not stat.isdigit():
            continue
        try:
            fields = open(f"/proc/{stat}/stat", encoding="utf-8").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            live.append(int(stat))
    return live


def test_junit_counts(tmp_path):
    path = tmp_path / "r.xml"
    path.write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase classname="tests.test_devices" name="test_a[cuda0]"/>'
        '<testcase classname="tests.test_devices" name="test_b[cuda0]"><failure message="x"/>'
        '</testcase><testcase classname="t" name="c"><skipped message="no"/></testcase>'
        '<testcase classname="t" name="d"><error message="boom"/></testcase>'
        "</testsuite></testsuites>", encoding="utf-8")
    assert parse_junit(path) == {"passed": 1, "failed": 2, "skipped": 1, "failing": [
        "tests.test_devices::test_b[cuda0]", "t::d"]}


# ------------------------------------------------------------------------------ record, timing
def test_the_record_and_its_table(tmp_path):
    record = {
        "device_tests": {"passed": 13, "failed": 1, "skipped": 0, "failing": ["t::x[cuda0]"],
                         "wall_seconds": 40.2, "ok": False},
        "chapters": {
            "equivariance": {"status": "ran", "wall_seconds": 95.3, "returncode": 0,
                             "comparison": {"compared": 40, "same": 39, "volatile": [],
                                            "differs": [{"kind": "glue", "name": "acc",
                                                         "cpu": 61.2, "cuda": 70.1}]}},
            "darts_prime": {"status": "timed out", "wall_seconds": 400.0, "returncode": -9,
                            "error": "killed"}},
        "timing": [{"family": "darts (supernet w + alpha step)", "cpu_ms": 120.0,
                    "cuda_ms": 8.0, "speedup": 15.0},
                   {"family": "heuristics (conv HRN)", "cpu_ms": 10.0, "cuda_ms": None,
                    "speedup": None, "errors": {"cuda": "RuntimeError: x"}}],
        "wall_seconds": 470.0,
    }
    path = write_record(tmp_path, "NVIDIA H200", record)
    assert path == tmp_path / "cuda-nvidia-h200.json"
    assert json.loads(path.read_text(encoding="utf-8")) == {"device": "NVIDIA H200", **record}
    table = format_table(record)
    assert "device tests: 13 passed, 1 failed, 0 skipped (40.2 s)  <- FAILED" in table
    assert "failed: t::x[cuda0]" in table
    assert any(line.startswith("equivariance") and line.split()[-2:] == ["39", "1"]
               for line in table.splitlines())
    assert "differs (glue) acc: cpu 61.2 / cuda 70.1" in table
    assert "timed out" in table and "error" in table and "15.00" in table
    assert "    cuda: RuntimeError: x" in table
    assert device_slug("Tesla V100-SXM2-16GB") == "cuda-tesla-v100-sxm2-16gb"


def test_every_family_times_a_training_step_on_the_cpu():
    rows = time_steps(["cpu"], repeats=1, warmup=1, size="tiny")
    assert [r["family"].split()[0] for r in rows] == [
        "operators", "darts", "equivariance", "neurogenesis", "growprune", "heuristics"]
    for row in rows:
        assert "errors" not in row, row
        assert row["cpu_ms"] > 0 and row["speedup"] is None


def test_the_whole_check_on_a_pretend_gpu(monkeypatch, tmp_path, capsys):
    """The orchestration with the GPU parts stood in for: each chapter "runs" by copying its
    stored smoke run (so it compares as the same), except one that fails; the device tests are
    a one-test pytest run; the timing returns a row. Exit code 1 (a chapter failed), the record
    holds all of it, the temporary directory is removed."""
    import torch

    monkeypatch.setattr(gpucheck, "refusal", lambda: None)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "Pretend GPU")
    chosen = {c.slug: c for c in CHAPTERS}

    def command(chapter, directory, device="cuda"):
        if chapter.slug == "neurogenesis":
            return [sys.executable, "-c", "raise SystemExit('structlab: neurogenesis failed')"]
        return [sys.executable, "-c", "import shutil, sys; shutil.copy(sys.argv[1], sys.argv[2])",
                str(smoke_reference(chosen[chapter.slug])),
                str(directory / f"{chapter.slug}.ipynb")]

    monkeypatch.setattr(gpucheck, "chapter_command", command)
    test_file = tmp_path / "test_pretend.py"
    test_file.write_text("def test_ok():\n    pass\n", encoding="utf-8")

    def tests_job(directory):
        job = gpucheck._Job("device tests", [sys.executable, "-m", "pytest", str(test_file), "-q",
                                             "-p", "no:cacheprovider",
                                             f"--junitxml={directory / 'r.xml'}"],
                            directory / "t.log", dict(os.environ))
        job.extra["junit"] = directory / "r.xml"
        return job

    monkeypatch.setattr(gpucheck, "device_tests_job", tests_job)
    monkeypatch.setattr(gpucheck, "time_steps", lambda devices: [
        {"family": "darts (supernet w + alpha step)", "cpu_ms": 2.0, "cuda_ms": 1.0,
         "speedup": 2.0}])
    code, path = gpucheck.gpu_check(chapters=["equivariance", "neurogenesis"],
                                    output=tmp_path / "out", budget=200)
    assert code == 1 and path == tmp_path / "out" / "cuda-pretend-gpu.json"
    record = json.loads(path.read_text(encoding="utf-8"))
    assert record["device_tests"]["passed"] == 1 and record["device_tests"]["ok"]
    eq, ng = record["chapters"]["equivariance"], record["chapters"]["neurogenesis"]
    assert eq["status"] == "ran" and eq["comparison"]["differs"] == []
    assert eq["comparison"]["same"] == eq["comparison"]["compared"] > 0
    assert ng["status"] == "failed" and "neurogenesis failed" in ng["error"]
    assert record["timing"][0]["speedup"] == 2.0
    assert not os.path.exists(record["work_dir"])
    out = capsys.readouterr().out
    assert "device tests: 1 passed, 0 failed, 0 skipped" in out and "record written" in out


def test_missing_offline_datasets_are_named(monkeypatch):
    import structlab.data.offline as offline
    import structlab.data.text as text

    assert gpucheck.missing_datasets() == []  # this machine has them (make data)
    monkeypatch.setattr(offline, "find_fashion_mnist", lambda: None)
    assert gpucheck.missing_datasets() == ["Fashion-MNIST"]
    monkeypatch.setattr(text, "find_wordnet", lambda: None)
    assert gpucheck.missing_datasets() == ["Fashion-MNIST", "WordNet"]
