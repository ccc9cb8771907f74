"""The vendor rule of the nbval comparison (tests/conftest.py): a stored smoke run's numbers are
compared digit for digit on a CPU of its own vendor, masked on another one."""

from __future__ import annotations

import json
import re
from collections import OrderedDict

import conftest


def _notebook(path, cpu: str | None):
    meta = {"structlab": {"numerics": {"cpu": cpu, "mode": "portable"}}} if cpu else {}
    path.write_text(json.dumps({"cells": [], "metadata": meta, "nbformat": 4,
                                "nbformat_minor": 5}), encoding="utf-8")
    return path


def test_cpu_vendor_reads_the_model_names_of_the_stamps():
    assert conftest.cpu_vendor("AMD EPYC") == "amd"
    assert conftest.cpu_vendor("Intel(R) Xeon(R) Processor") == "intel"
    assert conftest.cpu_vendor("AMD EPYC 7B13") == conftest.cpu_vendor("AMD EPYC")
    assert conftest.cpu_vendor("Neoverse-N1") == "neoverse-n1"


def test_same_vendor_keeps_the_digits(tmp_path, monkeypatch):
    monkeypatch.setattr(conftest, "MASKED", [])
    patterns: OrderedDict[str, str] = OrderedDict()
    nb = _notebook(tmp_path / "a.ipynb", "AMD EPYC")
    assert not conftest.mask_numbers_elsewhere(patterns, nb, here="AMD EPYC 9654")
    assert patterns == {} and conftest.MASKED == []


def test_other_vendor_masks_every_number_and_nothing_else(tmp_path, monkeypatch):
    monkeypatch.setattr(conftest, "MASKED", [])
    patterns: OrderedDict[str, str] = OrderedDict()
    nb = _notebook(tmp_path / "b.ipynb", "AMD EPYC")
    assert conftest.mask_numbers_elsewhere(patterns, nb, here="Intel(R) Xeon(R) Processor")
    assert conftest.MASKED == [("b.ipynb", "AMD EPYC")]

    def sanitize(text: str) -> str:  # as nbval applies its patterns, in order
        for regex, replace in patterns.items():
            text = re.sub(regex, replace, text)
        return text

    text = "<td>658.2 ± 0.0</td> p=0.001, 3.6e-15, -2 units; True   DYNO grows"
    assert sanitize(text) == ("<td>NUMBER ± NUMBER</td> p=NUMBER, NUMBER, NUMBER units; "
                              "True DYNO grows")
    # a column that widens with a longer number on the other CPU
    assert sanitize("  C4       76.5  0.0\n") == sanitize("  C4      76.50  0.0\n")
    # what still differs after masking is still a difference
    assert sanitize("False  DYNO grows") != sanitize("True   DYNO grows")
    assert sanitize("a  b\nc") != sanitize("a  b c")


def test_a_notebook_without_a_stamp_is_compared_as_it_is(tmp_path, monkeypatch):
    monkeypatch.setattr(conftest, "MASKED", [])
    patterns: OrderedDict[str, str] = OrderedDict()
    assert not conftest.mask_numbers_elsewhere(patterns, _notebook(tmp_path / "c.ipynb", None),
                                               here="Intel(R) Xeon(R) Processor")
    assert not conftest.mask_numbers_elsewhere(patterns, tmp_path / "missing.ipynb",
                                               here="Intel(R) Xeon(R) Processor")
    assert patterns == {}
