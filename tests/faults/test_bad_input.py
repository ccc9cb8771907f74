"""Bad input, one line each: every entry of the command line (``run``, ``sweep``, ``book``,
``data``, ``status``, ``list``, ``lab``, ``gpu-check``) refuses it before any work starts, with
one line naming what is wrong and what it accepts (exit code 2); an error raised inside a chapter
reaches the user as one line with the path of the partial notebook (exit code 1).

Each row of :data:`CASES` is one input, the exact line it gives and the exit code. Every row fails
on the command line before this suite (a traceback, a kernel started for nothing, another line or
exit code). Placeholders: ``{tmp}`` is the test's temporary directory, ``{root}`` the checkout.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import tinychapter
import torch

from structlab.cli import main
from structlab.pipeline.chapters import project_root

ROOT = project_root()
D = "data_and_baselines"
CHAPTERS = ("data_and_baselines, neural_operators, own_models, equivariance, darts_prime, "
            "neurogenesis, heuristics_nas, grow_and_prune")
DATASETS = ("fashion-mnist, mnist5k, digits, nf-features, two-spirals, regression-2d, mnist, "
            "cifar10, cifar100, rotmnist, galaxy10, imagenette, imagewoof, isic2019, wordnet, ptb")
MAPPING = "a mapping of parameter names to values"
GRID = "a mapping of parameter names to lists of values"
NO_GPU = ("structlab: error: gpu-check needs a CUDA GPU and torch.cuda.is_available() is False on "
          "this machine (CUDA_VISIBLE_DEVICES is empty: every device is hidden); nothing was run")


def _files(tmp: Path) -> None:
    """The bad files the cases name."""
    (tmp / "bad.yaml").write_text("epochs: [1\n")
    (tmp / "list.yaml").write_text("- epochs\n- 3\n")
    (tmp / "latin1.yaml").write_bytes("epochs: 1  # d\xe9j\xe0\n".encode("latin-1"))
    (tmp / "adir.yaml").mkdir()
    (tmp / "afile").write_text("not a directory\n")
    (tmp / "meta-bad.yaml").write_text("neurons_to_add: [8\n")
    (tmp / "meta-unknown.yaml").write_text("neurons_to_ad: 8\n")
    (tmp / "other-sweep").mkdir()
    (tmp / "other-sweep" / "sweep.json").write_text(json.dumps({"chapter": D}))
    (tmp / "torn-sweep").mkdir()
    (tmp / "torn-sweep" / "sweep.json").write_text('{"chapter": "neurog')


@dataclass(frozen=True)
class Case:
    """``structlab <argv>`` prints ``line`` (on stderr, or stdout) and exits with ``code``."""

    id: str
    argv: list[str]
    line: str
    code: int = 2
    stream: str = "err"
    tiny: bool = False  # run in the tiny project of tinychapter.py, not the checkout
    setup: Callable[[Path], None] | None = field(default=None)


def _torn_smoke_run(project: Path) -> None:
    (project / "tests" / "notebooks").mkdir(parents=True)
    (project / "tests" / "notebooks" / "tiny.ipynb").write_text('{"cells": [')


CASES = [
    # run: parameter files
    Case("run -f malformed", ["run", D, "-f", "{tmp}/bad.yaml"],
         "structlab: error: -f {tmp}/bad.yaml: not valid YAML (line 2, column 1: expected ',' or "
         "']', but got '<stream end>')"),
    Case("run -f not a mapping", ["run", D, "-f", "{tmp}/list.yaml"],
         f"structlab: error: -f {{tmp}}/list.yaml: holds a list, not {MAPPING}"),
    Case("run -f missing", ["run", D, "-f", "{tmp}/missing.yaml"],
         f"structlab: error: -f {{tmp}}/missing.yaml: no such file (give a YAML file holding "
         f"{MAPPING})"),
    Case("run -f directory", ["run", D, "-f", "{tmp}/adir.yaml"],
         f"structlab: error: -f {{tmp}}/adir.yaml: is a directory, not a YAML file holding "
         f"{MAPPING}"),
    Case("run -f not UTF-8", ["run", D, "-f", "{tmp}/latin1.yaml"],
         f"structlab: error: -f {{tmp}}/latin1.yaml: not a UTF-8 text file (give a YAML file "
         f"holding {MAPPING})"),
    # run: chapter, options
    Case("run unknown chapter", ["run", "neurogenesys"],
         "structlab: error: unknown chapter 'neurogenesys' (did you mean 'neurogenesis'?); "
         f"chapters: {CHAPTERS}"),
    Case("run unknown profile", ["run", D, "--profile", "paper"],
         "structlab: error: run: argument --profile: invalid choice: 'paper' (choose from "
         "'smoke', 'book', 'full') (structlab run -h for help)"),
    Case("run -o directory", ["run", D, "-o", "{tmp}"],
         "structlab: error: -o {tmp}: is a directory; give the path of a notebook (.ipynb) to "
         "write"),
    # run: device
    Case("run device quantum", ["run", D, "-p", "device", "quantum"],
         "structlab: error: parameter 'device' must be auto, cpu, cuda or cuda:N, got 'quantum'"),
    Case("run device cuda:x", ["run", D, "-p", "device", "cuda:x"],
         "structlab: error: parameter 'device' must be auto, cpu, cuda or cuda:N, got 'cuda:x'"),
    Case("run device cuda without GPU", ["run", D, "-p", "device", "cuda"],
         "structlab: error: parameter 'device' is 'cuda', but torch sees no CUDA GPU on this "
         "machine: use auto or cpu"),
    # run: results_dir
    Case("run results_dir a file", ["run", D, "-p", "results_dir", "{tmp}/afile"],
         "structlab: error: parameter 'results_dir': {tmp}/afile is a file, not a directory"),
    Case("run results_dir under a file", ["run", D, "-p", "results_dir", "{tmp}/afile/sub"],
         "structlab: error: parameter 'results_dir': {tmp}/afile/sub cannot be created: "
         "{tmp}/afile is a file"),
    Case("run results_dir not writable", ["run", D, "-p", "results_dir", "/proc/structlab"],
         "structlab: error: parameter 'results_dir': /proc/structlab cannot be created in /proc "
         "(No such file or directory)"),
    # run: meta_file (heuristics_nas)
    Case("run meta_file missing", ["run", "heuristics_nas", "-p", "meta_file", "{tmp}/no.yaml"],
         "structlab: error: parameter 'meta_file': no such file: {tmp}/no.yaml (give a YAML or "
         "JSON file of meta-parameters, absolute or relative to chapters/, or \"\" for none)"),
    Case("run meta_file malformed",
         ["run", "heuristics_nas", "-p", "meta_file", "{tmp}/meta-bad.yaml"],
         "structlab: error: parameter 'meta_file': {tmp}/meta-bad.yaml is not valid YAML (while "
         "parsing a flow sequence)"),
    Case("run meta_file unknown name",
         ["run", "heuristics_nas", "-p", "meta_file", "{tmp}/meta-unknown.yaml"],
         "structlab: error: parameter 'meta_file': {tmp}/meta-unknown.yaml: unknown "
         "meta-parameters ['neurons_to_ad']; known: ['neurons_to_add', 'add_to_remove_ratio', "
         "'learning_rate', 'max_epochs', 'min_epochs', 'decay_epochs', 'neurons_to_remove']"),
    # run: from_sweep (neurogenesis, equivariance)
    Case("run from_sweep missing", ["run", "neurogenesis", "-p", "from_sweep", "{tmp}/nosweep"],
         "structlab: error: from_sweep: no such directory {tmp}/nosweep (no sweep of "
         "neurogenesis yet: structlab sweep neurogenesis ... makes one)"),
    Case("run from_sweep a file", ["run", "equivariance", "-p", "from_sweep", "{tmp}/afile"],
         "structlab: error: from_sweep: {tmp}/afile is a file, not a sweep directory (no sweep "
         "of equivariance yet: structlab sweep equivariance ... makes one)"),
    Case("run from_sweep of another chapter",
         ["run", "neurogenesis", "-p", "from_sweep", "{tmp}/other-sweep"],
         "structlab: error: from_sweep: {tmp}/other-sweep is a sweep of 'data_and_baselines', not "
         "of 'neurogenesis' (no sweep of neurogenesis yet: structlab sweep neurogenesis ... makes "
         "one)"),
    Case("run from_sweep torn sweep.json",
         ["run", "neurogenesis", "-p", "from_sweep", "{tmp}/torn-sweep"],
         "structlab: error: from_sweep: {tmp}/torn-sweep/sweep.json is not a readable sweep record "
         "(JSONDecodeError: Unterminated string starting at: line 1 column 13 (char 12)); run the "
         "sweep again to rewrite it"),
    # run: parameters that contradict each other
    Case("run nf_buffer not above nf_max_width", ["run", "neurogenesis", "-p", "nf_buffer", "64"],
         "structlab: error: parameter 'nf_buffer' must be greater than nf_max_width (96), got 64"),
    Case("run nf_values decreasing", ["run", "neurogenesis", "-p", "nf_values", "[16, 4]"],
         "structlab: error: parameter 'nf_values' must be increasing, got [16, 4]"),
    Case("run sparsities decreasing",
         ["run", "neural_operators", "-p", "sparsities", "[0.9, 0.5]"],
         "structlab: error: parameter 'sparsities' must be increasing, got [0.9, 0.5]"),
    Case("run variants without DARTS", ["run", "darts_prime", "-p", "variants", "[CS10, FIMT]"],
         "structlab: error: parameter 'variants' must include DARTS and DARTS-PRIME (the chapter "
         "compares them), got ['CS10', 'FIMT']"),
    Case("run targets of another source",
         ["run", "grow_and_prune", "-p", "targets", "[imagenette]"],
         "structlab: error: parameter 'targets' must be among fashion-5-9, mnist5k with source "
         "'book', got ['imagenette']"),
    # run: errors raised inside the chapter (a tiny chapter)
    Case("run DatasetUnavailableError inside", ["run", "tiny", "-q", "-p", "fail", "dataset",
                                                "-p", "results_dir", "{tmp}/res"],
         "structlab: tiny failed: DatasetUnavailableError: dataset 'tiny' is not in the cache "
         "and downloads are off (partial notebook: results/tiny/tiny-failed.ipynb)",
         code=1, tiny=True),
    Case("run ValueError inside", ["run", "tiny", "-q", "-p", "fail", "value",
                                   "-p", "results_dir", "{tmp}/res"],
         "structlab: tiny failed: ValueError: tiny diverged (partial notebook: "
         "results/tiny/tiny-failed.ipynb)", code=1, tiny=True),
    # sweep
    Case("sweep -f malformed", ["sweep", D, "--seeds", "0-1", "-f", "{tmp}/bad.yaml"],
         "structlab: error: -f {tmp}/bad.yaml: not valid YAML (line 2, column 1: expected ',' or "
         "']', but got '<stream end>')"),
    Case("sweep -f not a mapping", ["sweep", D, "--seeds", "0-1", "-f", "{tmp}/list.yaml"],
         f"structlab: error: -f {{tmp}}/list.yaml: holds a list, not {GRID}"),
    Case("sweep unknown chapter", ["sweep", "equivarience", "--seeds", "0-1"],
         "structlab: error: unknown chapter 'equivarience' (did you mean 'equivariance'?); "
         f"chapters: {CHAPTERS}"),
    Case("sweep device quantum", ["sweep", D, "--seeds", "0-1", "-p", "device", "cpu,quantum"],
         "structlab: error: sweep point {'seed': 0, 'device': 'quantum'}: parameter 'device' must "
         "be auto, cpu, cuda or cuda:N, got 'quantum'"),
    Case("sweep contradicting point",
         ["sweep", "neurogenesis", "--seeds", "0", "-p", "nf_buffer", "256,32"],
         "structlab: error: sweep point {'seed': 0, 'nf_buffer': 32}: parameter 'nf_buffer' must "
         "be greater than nf_max_width (96), got 32"),
    Case("sweep retries negative", ["sweep", D, "--seeds", "0-1", "--retries", "-1"],
         "structlab: error: --retries must be at least 0, got -1"),
    Case("sweep cpus per task zero", ["sweep", D, "--seeds", "0-1", "--cpus-per-task", "0"],
         "structlab: error: --cpus-per-task must be > 0, got 0.0"),
    # book
    Case("book --force --no-execute", ["book", "--force", "--no-execute"],
         "structlab: error: --force re-executes every chapter and --no-execute none: give one"),
    Case("book unknown option", ["book", "--frce"],
         "structlab: error: unrecognized arguments: --frce (structlab -h for help)"),
    # data
    Case("data fetch without names", ["data", "fetch"],
         f"structlab: error: data fetch needs the names of datasets to fetch: {DATASETS}"),
    Case("data fetch unknown name", ["data", "fetch", "cifar10", "cifar11"],
         f"structlab: error: data fetch: unknown dataset 'cifar11'; datasets: {DATASETS}"),
    Case("data list with names", ["data", "list", "mnist"],
         "structlab: error: data list takes no dataset names, got mnist (data fetch NAME ... "
         "fetches datasets)"),
    Case("data unknown action", ["data", "download"],
         "structlab: error: data: argument action: invalid choice: 'download' (choose from "
         "'list', 'setup', 'fetch') (structlab data -h for help)"),
    # status, list, lab
    Case("status torn stored run", ["status"],
         "tiny [smoke] tests/notebooks/tiny.ipynb: UNREADABLE (NotJSONError: Notebook does not "
         "appear to be JSON: '{\"cells\": [')", code=1, stream="out", tiny=True,
         setup=_torn_smoke_run),
    Case("status with an argument", ["status", "--all"],
         "structlab: error: unrecognized arguments: --all (structlab -h for help)"),
    Case("list with an argument", ["list", "neurogenesis"],
         "structlab: error: unrecognized arguments: neurogenesis (structlab -h for help)"),
    Case("lab bad port", ["lab", "--port", "70000"],
         "structlab: error: --port must be in [1, 65535], got 70000"),
    Case("unknown command", ["rnu", D],
         "structlab: error: argument command: invalid choice: 'rnu' (choose from 'list', 'run', "
         "'sweep', 'status', 'scorecard', 'book', 'data', 'lab', 'gpu-check') (structlab -h for "
         "help)"),
    # gpu-check: without a GPU (the suite hides CUDA) refused before anything else is looked at
    Case("gpu-check without GPU", ["gpu-check", "--chapters", "equivariance"], NO_GPU),
    Case("gpu-check without GPU, bad budget", ["gpu-check", "--budget", "0"], NO_GPU),
    Case("gpu-check unknown option", ["gpu-check", "--devices", "2"],
         "structlab: error: unrecognized arguments: --devices 2 (structlab -h for help)"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gives_one_line(case: Case, tmp_path, monkeypatch, capsys):
    if case.id == "run device cuda without GPU" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    if case.id == "run results_dir not writable" and not Path("/proc").is_dir():
        pytest.skip("no /proc")
    _files(tmp_path)
    if case.tiny:
        project = tinychapter.make_project(tmp_path / "project")
        tinychapter.point_at(project, monkeypatch.setattr)
        if case.setup is not None:
            case.setup(project)
    def fill(text: str) -> str:
        return text.replace("{tmp}", str(tmp_path)).replace("{root}", str(ROOT))

    argv = [fill(a) for a in case.argv]
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse
        code = exit_.code
    captured = capsys.readouterr()
    text = captured.err if case.stream == "err" else captured.out
    expected = fill(case.line)
    if case.stream == "err":
        assert text.strip().splitlines() == [expected], text
    else:
        assert expected in text.splitlines(), text
    assert code == case.code
