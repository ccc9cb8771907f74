"""Benchmark records and the performance page built from them (speed itself is never tested)."""

from __future__ import annotations

import json

import nbformat
import pytest

from structlab.benchmarks import (
    PAGE,
    TARGETS,
    load_records,
    page_is_current,
    paired_order,
    print_header,
    ratio_rows,
    record,
    records_digest,
    sync,
)
from structlab.pipeline import project_root


def test_record_round_trips_with_machine_and_arguments(tmp_path):
    path = record("demo", [{"network": "a", "train_ratio": 1.5}], {"repeats": 3}, tmp_path)
    stored = json.loads(path.read_text())
    assert stored["rows"] == [{"network": "a", "train_ratio": 1.5}]
    assert stored["arguments"] == {"repeats": 3}
    assert {"cpu", "threads", "torch", "mode"} <= set(stored["machine"])
    assert load_records(tmp_path)["demo"]["benchmark"] == "demo"


def test_ratio_rows_compare_before_now_and_target(tmp_path):
    record("equivariance", [{"network": "C1 backbone", "train_ratio": 1.0}], {}, tmp_path)
    before = tmp_path / "before"
    record("equivariance", [{"network": "C1 backbone", "train_ratio": 1.3}], {}, before)
    rows = {(r["benchmark"], r["measurement"]): r for r in ratio_rows(load_records(tmp_path))}
    c1 = rows[("equivariance", "C1 backbone")]
    assert (c1["before"], c1["now"], c1["target"], c1["met"]) == (1.3, 1.0, 1.03, True)
    missing = rows[("operators", "global magnitude pruning (1%)")]
    assert missing["now"] is None and missing["met"] is None
    assert len(rows) == sum(len(t) for t in TARGETS.values())


def test_paired_rounds_alternate_their_order_and_helpers_run_on_cpu(capsys):
    names = ["static", "grown", "other"]
    orders = [paired_order(i, names) for i in range(4)]
    assert orders[0] == orders[2] == names and orders[1] == orders[3] == names[::-1]
    assert names == ["static", "grown", "other"]  # the caller's list is left as it was
    sync("cpu")  # nothing queued on a CPU: returns at once
    print_header("round  ratio")
    assert capsys.readouterr().out == "round  ratio\n------------\n"


def test_digest_follows_the_records(tmp_path):
    record("demo", [{"loop": "a", "ratio": 1.0}], {}, tmp_path)
    first = records_digest(tmp_path)
    record("demo", [{"loop": "a", "ratio": 2.0}], {}, tmp_path)
    assert records_digest(tmp_path) != first


def test_performance_page_shows_the_stored_records():
    assert "book/performance" in (project_root() / "_toc.yml").read_text()
    if not load_records():
        pytest.fail("no benchmark records under results/bench: run `make bench`")
    assert page_is_current(), "the performance page is out of date: make bench (or " \
        "python -m structlab.benchmarks page)"
    nb = nbformat.read(PAGE, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "the page has no figure"
