"""The ordinary suite runs on the CPU on any host (tests/conftest.py): CUDA is hidden from the
tests, from the processes they start and from the notebook kernels nbval starts, so that the
smoke notebooks' ``device="auto"`` is the CPU their stored runs were computed on. Only
``STRUCTLAB_DEVICE_TESTS=1`` (``make gpu-check``) leaves the devices visible."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import nbformat
import torch
from conftest import DEVICE_TESTS_ENV, hide_accelerators
from nbclient import NotebookClient

PROBE = ("import json, os, torch; print(json.dumps({'visible': os.environ.get("
         "'CUDA_VISIBLE_DEVICES'), 'cuda': torch.cuda.is_available(), "
         "'count': torch.cuda.device_count()}))")


def test_the_suite_hides_cuda():
    if os.environ.get(DEVICE_TESTS_ENV) == "1":
        return  # the device run: nothing hidden, by design
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""
    assert not torch.cuda.is_available() and torch.cuda.device_count() == 0


def test_hiding_is_skipped_only_for_the_device_tests():
    env: dict[str, str] = {"CUDA_VISIBLE_DEVICES": "0,1"}
    assert hide_accelerators(env) and env["CUDA_VISIBLE_DEVICES"] == ""
    env = {DEVICE_TESTS_ENV: "1", "CUDA_VISIBLE_DEVICES": "0"}
    assert not hide_accelerators(env) and env["CUDA_VISIBLE_DEVICES"] == "0"
    env = {DEVICE_TESTS_ENV: "0"}
    assert hide_accelerators(env) and env["CUDA_VISIBLE_DEVICES"] == ""


def test_a_subprocess_and_a_notebook_kernel_see_no_cuda():
    if os.environ.get(DEVICE_TESTS_ENV) == "1":
        return
    seen = json.loads(subprocess.run([sys.executable, "-c", PROBE], capture_output=True,
                                     text=True, check=True).stdout)
    assert seen == {"visible": "", "cuda": False, "count": 0}
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(PROBE)])
    NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    text = "".join(o.get("text", "") for o in nb.cells[0].outputs)
    assert json.loads(text) == {"visible": "", "cuda": False, "count": 0}
