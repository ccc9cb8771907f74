"""The stored runs are what the current code produces, and the book asserts only what holds.

- ``chapters/<slug>.ipynb`` (the book profile, what the book renders) and
  ``tests/notebooks/<slug>.ipynb`` (the smoke profile, what nbval re-executes) carry stamps that
  match the current code, parameters and numerics: the book never shows results of code that is
  gone, and a fresh clone's ``make book`` has nothing to execute.
- Every chapter has a claims cell checked by nbval, and in the book run every claim holds.
- A chapter converted to :class:`structlab.evidence.Report` reports every CLAIMS.md id of its
  chapter with a verdict, prints no standard error, and words its text claims identically in the
  smoke and the book run: a claim's sentence is fixed, never chosen from the condition it checks.
"""

from __future__ import annotations

import nbformat
import pytest

from structlab.claims import Claims, parse_report
from structlab.evidence import catalog_for, parse_seed_claims
from structlab.pipeline import default_output, list_chapters, stale

CHAPTERS = list_chapters()


def _claims_text(nb: nbformat.NotebookNode) -> str:
    cells = [c for c in nb.cells if c.cell_type == "code" and "claims.report()" in c.source]
    assert len(cells) == 1, "a chapter has exactly one claims cell"
    assert "nbval-check-output" in cells[0].metadata.get("tags", [])
    return "".join(o.get("text", "") for o in cells[0].outputs if o.output_type == "stream")


def _claims(nb: nbformat.NotebookNode) -> dict[str, bool]:
    return parse_report(_claims_text(nb))


def _converted(chapter) -> bool:
    return parse_seed_claims(_claims_text(nbformat.read(chapter.path, as_version=4))) is not None


CONVERTED = [c for c in CHAPTERS if _converted(c)]


@pytest.mark.parametrize("profile", ["book", "smoke"])
@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda c: c.slug)
def test_stored_run_is_current(chapter, profile):
    path = default_output(chapter, profile, {})
    assert path.is_file(), f"missing {path}: structlab run {chapter.slug} --profile {profile}"
    reasons = stale(chapter, profile)
    assert not reasons, (f"{path.name} ({profile}) is out of date: {'; '.join(reasons)}. "
                         f"Re-run: structlab run {chapter.slug} --profile {profile}")
    stamp = nbformat.read(path, as_version=4).metadata["structlab"]
    assert stamp["profile"] == profile and stamp["numerics"]["mode"] == "portable"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda c: c.slug)
def test_every_claim_of_the_book_holds(chapter):
    claims = _claims(nbformat.read(chapter.path, as_version=4))
    assert len(claims) >= 3, f"{chapter.slug}: too few claims computed"
    failing = [c for c, holds in claims.items() if not holds]
    assert not failing, f"{chapter.slug}: the book's text asserts claims its run refutes: {failing}"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda c: c.slug)
def test_smoke_run_has_the_same_claims(chapter):
    """nbval checks, in the smoke run, every claim the book makes. A claim that can turn out
    either way is worded from the result ("the CNN already reaches" / "stays below" 90 %), so
    the two runs may word it differently; most claims keep their wording."""
    book = list(_claims(nbformat.read(chapter.path, as_version=4)))
    smoke = list(_claims(nbformat.read(default_output(chapter, "smoke", {}), as_version=4)))
    assert len(smoke) == len(book), "the smoke run computes a different list of claims"
    same = sum(a == b for a, b in zip(smoke, book))
    assert same >= len(book) / 2, f"smoke and book claims differ: {set(smoke) ^ set(book)}"


def test_claims_report_round_trips(capsys):
    claims = Claims()
    claims.check("a holds", True)
    claims.check("b fails", 0)
    claims.report()
    assert parse_report(capsys.readouterr().out) == {"a holds": True, "b fails": False}
    with pytest.raises(ValueError, match="twice"):
        claims.check("a holds", True)
    assert not claims.all_hold


@pytest.mark.parametrize("profile", ["book", "smoke"])
@pytest.mark.parametrize("chapter", CONVERTED, ids=lambda c: c.slug)
def test_a_converted_chapter_reports_every_seed_claim(chapter, profile):
    nb = nbformat.read(default_output(chapter, profile, {}), as_version=4)
    seeds = parse_seed_claims(_claims_text(nb))
    assert seeds is not None, f"{chapter.slug} ({profile}) prints no seed claims"
    assert list(seeds) == list(catalog_for(chapter.slug)), "every CLAIMS.md id, in its order"


@pytest.mark.parametrize("chapter", CONVERTED, ids=lambda c: c.slug)
def test_a_converted_chapter_words_its_text_claims_before_the_run(chapter):
    book = list(_claims(nbformat.read(chapter.path, as_version=4)))
    smoke = list(_claims(nbformat.read(default_output(chapter, "smoke", {}), as_version=4)))
    assert book == smoke, ("a text claim is worded from its result: "
                           f"{sorted(set(book) ^ set(smoke))}")


@pytest.mark.parametrize("profile", ["book", "smoke"])
@pytest.mark.parametrize("chapter", CONVERTED, ids=lambda c: c.slug)
def test_a_converted_chapter_prints_no_stderr(chapter, profile):
    nb = nbformat.read(default_output(chapter, profile, {}), as_version=4)
    stderr = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"
              for o in c.get("outputs", []) if o.get("name") == "stderr"]
    assert not stderr, f"{chapter.slug} ({profile}): standard error in cells {stderr}"


def test_the_two_first_chapters_are_converted():
    assert {"data_and_baselines", "neural_operators"} <= {c.slug for c in CONVERTED}
