"""Portable numerics: the checked results do not depend on the CPU's instruction set.

The proof executes a real chapter through the pipeline twice, from two shells that look like two
different machines: one with the libraries free to use this CPU's best kernels, one capped to the
pre-AVX2 instruction sets (ATen's scalar build, oneDNN SSE4.1, MKL's SSE4.2 branch). In portable
mode (the smoke and book profiles) the checked outputs and the full-precision training histories
are identical. As a control, the same two shells in native mode give different histories, so the
comparison is sensitive enough to see the instruction set.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import torch

from structlab.numerics import NumericsError, describe, numerics_env, pinned_environment

CHAPTER = "data_and_baselines"
TINY = {"epochs": 1, "cnn_epochs": 1, "cnn_train_size": 1000}
# What a different machine looks like to the libraries: other kernels for the same operations.
OTHER_ISA = {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41",
             "MKL_CBWR": "SSE4_2"}
NUMERICS_VARS = set(numerics_env("portable"))


def _machine_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in NUMERICS_VARS}
    return {**env, **extra}


def _run(tmp: Path, label: str, numerics: str, machine: dict[str, str]) -> tuple[list, pd.Series]:
    out = tmp / f"{label}.ipynb"
    results = tmp / label
    args = [sys.executable, "-m", "structlab.cli", "run", CHAPTER, "-q", "--numerics", numerics,
            "-o", str(out), "-p", "results_dir", str(results)]
    for name, value in TINY.items():
        args += ["-p", name, str(value)]
    done = subprocess.run(args, env=_machine_env(machine), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    nb = nbformat.read(out, as_version=4)
    checked = [[o.get("text") or o.get("data", {}).get("text/plain") for o in c.outputs]
               for c in nb.cells if "nbval-check-output" in c.metadata.get("tags", [])]
    assert nb.metadata["structlab"]["numerics"]["mode"] == numerics
    history = pd.read_csv(next(results.rglob("mlp-history.csv")))
    return checked, history.train_loss


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, tuple[list, pd.Series]]:
    tmp = tmp_path_factory.mktemp("isa")
    return {
        (mode, machine): _run(tmp, f"{mode}-{machine}", mode, env)
        for mode in ("portable", "native")
        for machine, env in (("this-cpu", {}), ("other-isa", OTHER_ISA))
    }


def test_checked_outputs_are_identical_under_two_instruction_sets(runs):
    here, there = runs["portable", "this-cpu"], runs["portable", "other-isa"]
    assert here[0] and here[0] == there[0]
    assert here[1].tolist() == there[1].tolist()  # bit-identical, not merely close


def test_the_comparison_can_see_the_instruction_set(runs):
    here, there = runs["native", "this-cpu"], runs["native", "other-isa"]
    assert here[1].tolist() != there[1].tolist()


def test_the_suite_itself_runs_in_portable_numerics():
    info = describe()
    assert info["mode"] == "portable" and info["aten_capability"] == "AVX2"
    assert info["mkl_cbwr"] == "COMPATIBLE" and os.environ["ONEDNN_MAX_CPU_ISA"] == "AVX2"
    assert info["threads"] == torch.get_num_threads() == int(numerics_env()["STRUCTLAB_THREADS"])


def test_numerics_env_and_its_context():
    env = numerics_env("portable", threads=3)
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "3"
    assert numerics_env("native") == {"STRUCTLAB_NUMERICS": "native"}
    with pytest.raises(ValueError, match="portable, native"):
        numerics_env("fast")
    before = os.environ.get("MKL_CBWR")
    with pinned_environment("portable"):
        assert os.environ["MKL_CBWR"] == "COMPATIBLE"
    assert os.environ.get("MKL_CBWR") == before


def test_portable_mode_refuses_an_environment_set_too_late():
    code = ("import os, torch; torch.ones(1).sum(); "
            "os.environ.update(STRUCTLAB_NUMERICS='portable'); import structlab")
    env = _machine_env({"ATEN_CPU_CAPABILITY": "default"})
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode != 0
    assert NumericsError.__name__ in done.stderr and "before Python starts" in done.stderr
