"""The line under each chapter's parameters: which profile, device and wall time made the page."""

from __future__ import annotations

import time
from pathlib import Path

from structlab.pipeline import get_chapter
from structlab.provenance import format_duration, profile_of, provenance


def test_profile_is_recognised_from_the_parameter_values():
    chapter = get_chapter("neurogenesis")
    for profile in ("smoke", "book", "full"):
        values = chapter.resolve(profile)
        values.update(results_dir="results/elsewhere", quiet=not values["quiet"], device="cuda")
        assert profile_of("neurogenesis", values) == profile
    values = chapter.resolve("book")
    values["epochs"] += 1
    assert profile_of("neurogenesis", values) == "custom"


def test_duration_and_line():
    assert format_duration(48.4) == "48 s"
    assert format_duration(2052) == "34 min 12 s"
    assert format_duration(3720) == "1 h 02 min"

    class Store:
        computed, resumed = 5, 2
        root = Path("results/x/experiments")

    line = provenance("data_and_baselines", get_chapter("data_and_baselines").resolve("smoke"),
                      device="cpu", started=time.perf_counter() - 61, store=Store())
    assert line.startswith("the **smoke** profile, on a CPU (")
    assert "in 1 min 01 s" in line and "7 experiments, 2 of them read back" in line
