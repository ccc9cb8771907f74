"""The chapter registry, profiles, and the refusal of bad parameters before anything runs."""

from __future__ import annotations

import os
import shutil

import pytest

from structlab.cli import main
from structlab.pipeline import ParameterError, get_chapter, list_chapters, parse_cli_value
from structlab.pipeline.chapters import _parameters_of
from structlab.pipeline.execute import default_output


def test_every_chapter_has_parameters_three_profiles_and_seed_and_device():
    chapters = list_chapters()
    assert chapters and chapters[0].slug == "data_and_baselines"
    for chapter in chapters:
        params = chapter.parameters
        assert {"seed", "device", "quiet"} <= set(params), chapter.slug
        assert params["device"].default == "auto"
        assert chapter.profile("smoke") == {}
        for profile in ("book", "full"):
            assert chapter.profile_path(profile).is_file(), (chapter.slug, profile)
            # every key is declared, of its type, and within its accepted values
            values = chapter.resolve(profile)
            assert set(values) == set(params)
        assert any(p.constraint for p in params.values()), f"{chapter.slug} declares no rules"


def test_parameters_are_parsed_with_types_and_comments():
    params = _parameters_of(
        "seed: int = 0  # the seed\nlr = 0.1\nwidths = [8, 16]\nname: str = 'x'\nflag = True\n",
        "cell")
    assert params["seed"].type_name == "int" and params["seed"].comment == "the seed"
    assert params["lr"].type_name == "float"
    assert params["widths"].type_name == "list[int]"
    assert params["name"].type_name == "str" and params["flag"].type_name == "bool"


def test_validation_refuses_unknown_names_and_wrong_types():
    chapter = get_chapter("data_and_baselines")
    with pytest.raises(ParameterError) as err:
        chapter.validate({"epochz": 3})
    assert "'epochz'" in str(err.value) and "epochs" in str(err.value)
    with pytest.raises(ParameterError, match="expects int"):
        chapter.validate({"epochs": "three"})
    with pytest.raises(ParameterError, match="expects int"):
        chapter.validate({"epochs": 2.5})
    with pytest.raises(ParameterError, match="expects bool"):
        chapter.validate({"quiet": "yes please"})
    assert chapter.validate({"epochs": 3, "seed": 1}) == {"epochs": 3, "seed": 1}
    with pytest.raises(ParameterError, match="unknown profile"):
        chapter.profile("medium")


def test_declared_rules_are_parsed_and_enforced():
    params = _parameters_of(
        "epochs: int = 5  # MLP epochs | at least 1\n"
        "lr: float = 0.05  # rate (SGD) | > 0\n"
        "frac: float = 0.1  # share | in [0, 1)\n"
        "arch: str = 'mlp'  # network | one of mlp, vgg11\n"
        "widths: list[int] = [8, 16]  # widths | at least 1 and at most 512\n", "cell")
    assert params["epochs"].comment == "MLP epochs" and params["epochs"].constraint == "at least 1"
    assert params["lr"].comment == "rate (SGD)"
    assert params["epochs"].coerce(1) == 1
    with pytest.raises(ParameterError, match=r"'epochs' must be at least 1, got -3"):
        params["epochs"].coerce(-3)
    with pytest.raises(ParameterError, match="> 0"):
        params["lr"].coerce(0)
    assert params["frac"].coerce(0) == 0.0
    with pytest.raises(ParameterError, match=r"in \[0, 1\)"):
        params["frac"].coerce(1.0)
    assert params["arch"].coerce("vgg11") == "vgg11"
    with pytest.raises(ParameterError, match="one of mlp, vgg11"):
        params["arch"].coerce("resnet")
    with pytest.raises(ParameterError, match="at most 512"):
        params["widths"].coerce([8, 1024])
    with pytest.raises(ValueError, match="malformed"):
        _parameters_of("x: int = 1  # x | between 1 and 2\n", "cell")
    with pytest.raises(ValueError, match="breaks its own rule"):
        _parameters_of("x: int = 0  # x | at least 1\n", "cell")


def test_cli_values_are_yaml():
    assert parse_cli_value("3") == 3 and parse_cli_value("0.5") == 0.5
    assert parse_cli_value("true") is True and parse_cli_value("[1, 2]") == [1, 2]
    assert parse_cli_value("cuda:0") == "cuda:0"


def test_cli_refuses_bad_parameters_before_running(capsys, monkeypatch):
    import structlab.pipeline.execute as execute

    def must_not_run(*args, **kwargs):
        raise AssertionError("a chapter was executed with a bad parameter")

    monkeypatch.setattr(execute, "run_chapter", must_not_run)
    assert main(["run", "data_and_baselines", "-p", "no_such_param", "1"]) == 2
    err = capsys.readouterr().err
    assert "no_such_param" in err and "accepts" in err
    for chapter in list_chapters():
        for profile in ("smoke", "book", "full"):
            assert main(["run", chapter.slug, "--profile", profile, "-p", "seed", "-3"]) == 2
            err = capsys.readouterr().err.strip()
            assert err == "structlab: error: parameter 'seed' must be at least 0, got -3", err
    assert main(["run", "data_and_baselines", "-p", "epochs", "-3"]) == 2
    assert "'epochs' must be at least 1, got -3" in capsys.readouterr().err
    assert main(["run", "no_such_chapter"]) == 2
    assert "unknown chapter" in capsys.readouterr().err


def test_cli_lists_chapters(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for chapter in list_chapters():
        assert chapter.slug in out
    assert "seed: int = 0" in out


def test_profiles_write_where_they_are_read():
    chapter = get_chapter("data_and_baselines")
    root = chapter.path.parents[1]
    assert default_output(chapter, "book", {}) == chapter.path
    assert default_output(chapter, "smoke", {}) == root / "tests/notebooks/data_and_baselines.ipynb"
    other = default_output(chapter, "smoke", {"epochs": 9})
    assert other.parent.name == "data_and_baselines" and other.parent.parent.name == "results"
    assert default_output(chapter, "full", {}).name == "data_and_baselines-full.ipynb"


def test_book_and_full_runs_resume_unless_fresh(monkeypatch, tmp_path):
    """`structlab run` tells the kernel (STRUCTLAB_RESUME) whether to read back finished
    experiments: yes for book and full, no for smoke and with --fresh; --resume forces it."""
    import papermill

    from structlab.experiment_store import RESUME_ENV

    seen = []

    def fake_execute(source, output, **kwargs):
        seen.append(os.environ.get(RESUME_ENV))
        shutil.copy(source, output)

    monkeypatch.setattr(papermill, "execute_notebook", fake_execute)
    monkeypatch.delenv(RESUME_ENV, raising=False)
    cases = [(["--profile", "book"], "1"), (["--profile", "full"], "1"), ([], "0"),
             (["--profile", "book", "--fresh"], "0"), (["--resume"], "1")]
    for flags, expected in cases:
        out = tmp_path / f"run{len(seen)}.ipynb"
        assert main(["run", "data_and_baselines", *flags, "-q", "-o", str(out)]) == 0
        assert seen[-1] == expected, (flags, seen[-1])
    assert RESUME_ENV not in os.environ  # restored after the run
    with pytest.raises(SystemExit):  # argparse: the two flags exclude each other
        main(["run", "data_and_baselines", "--fresh", "--resume"])
