"""The chapter registry and the refusal of bad parameters before anything runs."""

from __future__ import annotations

import pytest

from structlab.cli import main
from structlab.pipeline import ParameterError, get_chapter, list_chapters, parse_cli_value
from structlab.pipeline.chapters import _parameters_of
from structlab.pipeline.execute import default_output


def test_every_chapter_has_parameters_a_full_profile_and_seed_and_device():
    chapters = list_chapters()
    assert chapters and chapters[0].slug == "data_and_baselines"
    for chapter in chapters:
        params = chapter.parameters
        assert {"seed", "device", "quiet"} <= set(params), chapter.slug
        assert params["device"].default == "auto"
        assert chapter.full_params_path.is_file(), chapter.slug
        chapter.profile("full")  # every key of the full profile is declared, with its type


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


def test_cli_values_are_yaml():
    assert parse_cli_value("3") == 3 and parse_cli_value("0.5") == 0.5
    assert parse_cli_value("true") is True and parse_cli_value("[1, 2]") == [1, 2]
    assert parse_cli_value("cuda:0") == "cuda:0"


def test_cli_refuses_bad_parameters_before_running(capsys):
    assert main(["run", "data_and_baselines", "-p", "no_such_param", "1"]) == 2
    err = capsys.readouterr().err
    assert "no_such_param" in err and "accepts" in err
    assert main(["run", "no_such_chapter"]) == 2
    assert "unknown chapter" in capsys.readouterr().err


def test_cli_lists_chapters(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for chapter in list_chapters():
        assert chapter.slug in out
    assert "seed: int = 0" in out


def test_quick_runs_write_in_place_and_others_under_results():
    chapter = get_chapter("data_and_baselines")
    assert default_output(chapter, "quick", {}) == chapter.path
    other = default_output(chapter, "quick", {"epochs": 9})
    assert other.parent.name == "data_and_baselines" and other.parent.parent.name == "results"
    assert default_output(chapter, "full", {}).name == "data_and_baselines-full.ipynb"
