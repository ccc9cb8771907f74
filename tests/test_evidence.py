"""Statistics, verdicts by the rules of CLAIMS.md, the claims catalogue and the scorecard page."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from scipy import stats as sp

from structlab import stats
from structlab.claims import parse_report
from structlab.evidence import (
    SEED_HEADER,
    Report,
    compare,
    equivalent,
    exact,
    load_catalog,
    parse_seed_claims,
    threshold,
    weakest,
)
from structlab.evidence.scorecard import NOT_REPORTED, collect, page_path, render, totals

CLAIMS_MD = Path(__file__).resolve().parents[2] / "shared" / "CLAIMS.md"


# --- statistics -------------------------------------------------------------------------------

def test_summary_uses_the_sample_std():
    s = stats.summary([1.0, 2.0, 4.0])
    assert s.n == 3 and s.mean == pytest.approx(7 / 3)
    assert s.std == pytest.approx(sp.tstd([1.0, 2.0, 4.0]))
    assert stats.summary([5.0]).std == 0.0


def test_welch_and_paired_match_scipy_and_their_direction():
    a, b = [3.0, 3.4, 2.9, 3.3], [2.0, 2.8, 2.1]
    ref = sp.ttest_ind(a, b, equal_var=False, alternative="greater").pvalue
    assert stats.welch(a, b).p == pytest.approx(ref)
    assert stats.welch(b, a, alternative="less").p == pytest.approx(ref)
    assert stats.welch(a, b, alternative="less").p == pytest.approx(1 - ref)
    x, y = [1.0, 2.0, 3.5], [0.5, 1.8, 2.9]
    assert stats.paired(x, y).p == pytest.approx(sp.ttest_rel(x, y, alternative="greater").pvalue)


def test_tests_without_spread_are_exact():
    assert stats.welch([1.0, 1.0, 1.0], [0.0, 0.0, 0.0]).p == 0.0
    assert stats.welch([0.0, 0.0], [1.0, 1.0]).p == 1.0
    assert stats.paired([1.0, 2.0], [1.0, 2.0], alternative="two-sided").p == 1.0


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="at least 2"):
        stats.welch([1.0], [2.0, 3.0])
    with pytest.raises(ValueError, match="finite"):
        stats.summary([1.0, float("nan")])
    with pytest.raises(ValueError, match="alternative"):
        stats.welch([1.0, 2.0], [1.0, 2.0], alternative="bigger")


def test_the_interval_of_a_difference_covers_it_with_its_level():
    lo, hi = stats.difference_ci([2.0, 2.2, 2.4], [1.0, 1.1, 1.5])
    assert lo < 1.0 < hi
    plo, phi = stats.difference_ci([2.0, 2.2, 2.4], [1.0, 1.1, 1.5], paired_runs=True)
    d = [1.0, 1.1, 0.9]
    half = sp.t.ppf(0.975, 2) * sp.tstd(d) / 3 ** 0.5
    assert (plo, phi) == pytest.approx((1.0 - half, 1.0 + half))


# --- verdicts ---------------------------------------------------------------------------------

def test_compare_gives_each_verdict():
    assert compare([90.1, 90.3, 90.2], [89.0, 89.1, 88.9]).verdict == "shown"
    assert compare([90.5, 89.0, 90.6], [89.9, 90.0, 89.7]).verdict == "direction only"
    assert compare([88.0, 88.1, 88.2], [89.0, 89.1, 88.9]).verdict == "not shown"
    # lower is better: errors
    assert compare([1.6, 1.7, 1.65], [5.0, 4.1, 5.9], lower_is_better=True).verdict == "shown"
    # fewer than 3 seeds can never be shown, however large the difference
    assert compare([99.0, 99.1], [10.0, 10.1]).verdict == "direction only"
    # one deterministic run each: a margin stated before the run decides
    assert compare([5.0], [3.0], margin=1.0).verdict == "shown"
    assert compare([5.0], [4.5], margin=1.0).verdict == "direction only"
    assert compare([5.0], [3.0]).verdict == "direction only"


def test_compare_prints_the_numbers_that_decided_it():
    v = compare([84.1, 84.3, 84.0], [83.0, 83.4, 83.1], names=("iterative", "one-shot"),
                paired=True, unit=" %")
    assert v.numbers == ("iterative 84.1 ± 0.2 % vs one-shot 83.2 ± 0.2 % (n=3, paired t "
                         "one-sided p=0.002)")
    assert v.values["iterative"] == [84.1, 84.3, 84.0]


def test_equivalent_needs_no_difference_and_a_narrow_interval():
    same = equivalent([1.78, 1.79, 1.77], [1.80, 1.76, 1.79], effect=0.4)
    assert same.verdict == "shown"
    wide = equivalent([1.78, 1.74, 1.82], [1.64, 1.86, 1.42], effect=0.4)
    assert wide.verdict == "direction only" and "width" in wide.numbers
    apart = equivalent([1.0, 1.01, 0.99], [2.0, 2.01, 1.99], effect=5.0)
    assert apart.verdict == "not shown"


def test_threshold_and_exact_and_weakest():
    assert threshold(0.6, 0.5, name="z").verdict == "shown"
    assert threshold(0.3, 0.5, name="z", start=1 / 6).verdict == "direction only"
    assert threshold(0.1, 0.5, name="z", start=1 / 6).verdict == "not shown"
    assert threshold([2.0, 3.0], 2.4, name="skips", above=False).verdict == "not shown"
    assert exact(1e-9, 1e-6, name="max change").verdict == "shown"
    assert exact(1e-3, 1e-6, name="max change").verdict == "not shown"
    combined = weakest(exact(0.0, 1e-6, name="a"), threshold(0.1, 0.5, name="b"))
    assert combined.verdict == "not shown" and "; " in combined.numbers


def test_a_report_needs_every_id_of_its_chapter_and_round_trips(capsys):
    report = Report("neural_operators")
    report.seed("3.5", compare([1.0, 1.1, 1.2], [0.0, 0.1, 0.2]))
    with pytest.raises(ValueError, match="twice"):
        report.seed("3.5", compare([1.0, 1.1, 1.2], [0.0, 0.1, 0.2]))
    with pytest.raises(ValueError, match="not a claim of chapter"):
        report.seed("4.4", compare([1.0, 1.1, 1.2], [0.0, 0.1, 0.2]))
    report.check("a fixed sentence", True)
    with pytest.raises(ValueError, match="does not report seed claims 3.3, 3.4, 3.6, 3.1"):
        report.report()
    for claim_id in ("3.3", "3.4", "3.6"):
        report.seed(claim_id, threshold(1.0, 0.5, name="x"))
    report.not_run("3.1", "the corpus is damaged")
    report.report()
    text = capsys.readouterr().out
    seeds = parse_seed_claims(text)
    assert list(seeds) == ["3.3", "3.4", "3.5", "3.6", "3.1"]
    assert seeds["3.5"][0] == "shown" and seeds["3.1"] == ("not run", "the corpus is damaged")
    assert parse_report(text) == {"a fixed sentence": True}
    assert parse_seed_claims("True   a claim of an old report") is None


def test_a_chapter_without_ids_reports_none():
    report = Report("data_and_baselines")
    report.check("x", 1)
    assert report.lines()[:2] == [SEED_HEADER,
                                  "(none: CLAIMS.md lists no claim for this chapter)"]


# --- the catalogue ----------------------------------------------------------------------------

def test_the_catalogue_has_the_47_ids_of_six_chapters():
    catalog = load_catalog()
    assert len(catalog) == 47 and len({c["id"] for c in catalog}) == 47
    assert {c["chapter"] for c in catalog} == {"neural_operators", "equivariance", "darts_prime",
                                               "neurogenesis", "grow_and_prune", "heuristics_nas"}


@pytest.mark.skipif(not CLAIMS_MD.is_file(), reason="../shared/CLAIMS.md is not beside this "
                                                    "checkout")
def test_the_catalogue_is_a_copy_of_claims_md():
    rows = [re.split(r" \| ", line.strip().strip("|").strip())
            for line in CLAIMS_MD.read_text(encoding="utf-8").splitlines()
            if re.match(r"^\| [0-9N][0-9.]* \|", line)]
    assert [(r[0], r[1], r[3]) for r in rows] == [
        (c["id"], c["claim"], c["source_numbers"]) for c in load_catalog()]


# --- the scorecard ----------------------------------------------------------------------------

def test_the_scorecard_page_is_current_with_the_stored_runs():
    assert page_path().read_text(encoding="utf-8") == render(collect()), (
        "book/scorecard.md is not current: structlab scorecard --write")


def test_the_scorecard_reads_verdicts_from_a_stored_run(tmp_path, monkeypatch):
    rows = collect()
    assert len(rows) == 47 and sum(totals(rows).values()) == 47
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("claims.report()")
    cell.outputs = [nbformat.v4.new_output(
        "stream", name="stdout", text=f"{SEED_HEADER}\n[4.4] not shown | E 16.8 vs C4 7.4\n")]
    nb.cells = [cell]
    nb.metadata["structlab"] = {"profile": "book"}
    from structlab.evidence import scorecard

    real = nbformat.read

    def fake_read(path, as_version):
        return nb if Path(path).name == "equivariance.ipynb" else real(path, as_version=as_version)

    monkeypatch.setattr(nbformat, "read", fake_read)
    rows = scorecard.collect()
    by_id = {r.id: r for r in rows}
    assert by_id["4.4"].verdict == "not shown" and by_id["4.4"].numbers == "E 16.8 vs C4 7.4"
    assert by_id["4.5"].verdict == NOT_REPORTED  # a converted chapter that misses an id
    assert "| 4.4 |" in scorecard.render(rows)
