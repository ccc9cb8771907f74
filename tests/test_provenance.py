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


def _sanitize(text: str) -> str:
    """Apply ``tests/nbval_sanitize.cfg`` the way nbval does (each section's regex, in order)."""
    import configparser
    import re

    config = configparser.ConfigParser(interpolation=None)
    config.read(Path(__file__).parent / "nbval_sanitize.cfg")
    for section in config.sections():
        text = re.sub(config[section]["regex"], config[section].get("replace", ""), text)
    return text


def test_nbval_ignores_the_machine_and_wall_time_but_not_the_profile():
    """The provenance line is glued inside checked claims cells: a CI machine with another CPU
    (an Intel model name has parentheses of its own) or a slower run must still compare equal,
    while a different profile or numerics must not."""
    lines = [
        "the **smoke** profile, on a CPU (AMD EPYC, 2 threads), portable numerics, in 35 s",
        "the **smoke** profile, on a CPU (Intel(R) Xeon(R) Platinum 8480+, 2 threads), "
        "portable numerics, in 1 min 05 s",
        "the **smoke** profile, on a GPU (NVIDIA H100 80GB HBM3), portable numerics, in 1 h 02 min",
    ]
    assert len({_sanitize(line) for line in lines}) == 1
    assert _sanitize(lines[0].replace("smoke", "book")) != _sanitize(lines[0])
    assert _sanitize(lines[0].replace("portable", "native")) != _sanitize(lines[0])
