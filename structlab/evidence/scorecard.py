"""The reproduction scorecard: every claim of CLAIMS.md with the verdict of the stored book run.

:func:`collect` reads the claims cell of every stored book run (``chapters/<slug>.ipynb``; nothing
is executed) and pairs each catalogue id with the verdict and numbers that chapter printed. A
chapter whose claims cell does not yet report seed claims (:class:`~structlab.evidence.Report`)
lists its ids as *not reported*. :func:`render` turns the rows into the book page
``book/scorecard.md``, which ``structlab scorecard --write`` (and ``structlab book``) rewrites
and the test suite requires to be current.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from structlab.evidence.verdicts import VERDICTS, load_catalog, parse_seed_claims

__all__ = ["Row", "collect", "totals", "render", "page_path", "write_page", "NOT_REPORTED",
           "COLUMNS"]

NOT_REPORTED = "not reported"
#: The columns of the totals, in the order the page prints them.
COLUMNS = (*VERDICTS, NOT_REPORTED)


@dataclass(frozen=True)
class Row:
    """One claim on the scorecard."""

    chapter: str
    id: str
    claim: str
    source: str
    source_numbers: str
    numbers: str
    verdict: str
    profile: str


def _claims_text(nb) -> str:
    cells = [c for c in nb.cells if c.cell_type == "code" and "claims.report()" in c.source]
    if len(cells) != 1:
        return ""
    return "".join(o.get("text", "") for o in cells[0].get("outputs", [])
                   if o.get("output_type") == "stream")


def collect(root: Path | None = None) -> list[Row]:
    """The scorecard's rows from the stored book runs, in catalogue order."""
    import nbformat

    from structlab.pipeline.chapters import list_chapters, project_root

    root = root or project_root()
    runs: dict[str, tuple[dict | None, str]] = {}
    for chapter in list_chapters(root):
        path = root / "chapters" / f"{chapter.slug}.ipynb"
        if not path.is_file():
            continue
        nb = nbformat.read(path, as_version=4)
        profile = nb.metadata.get("structlab", {}).get("profile", "unstamped")
        runs[chapter.slug] = (parse_seed_claims(_claims_text(nb)), profile)
    rows = []
    for claim in load_catalog():
        seeds, profile = runs.get(claim["chapter"], (None, "no run"))
        verdict, numbers = (seeds or {}).get(claim["id"], (NOT_REPORTED, ""))
        rows.append(Row(claim["chapter"], claim["id"], claim["claim"], claim["source"],
                        claim["source_numbers"], numbers, verdict, profile))
    return rows


def totals(rows: list[Row]) -> dict[str, int]:
    """How many claims have each verdict (every column of :data:`COLUMNS`)."""
    counts = Counter(r.verdict for r in rows)
    return {c: counts.get(c, 0) for c in COLUMNS}


def _cell(text: str) -> str:
    return (text.replace("\\", "\\\\").replace("|", "\\|").replace("*", "\\*")
            .replace("<", "&lt;").replace("$", "\\$") or "—")


def render(rows: list[Row]) -> str:
    """The Markdown of the scorecard page."""
    from structlab.pipeline.chapters import list_chapters

    titles = {c.slug: c.title for c in list_chapters()}
    chapters = list(dict.fromkeys(r.chapter for r in rows))
    head = "| chapter | claims | " + " | ".join(COLUMNS) + " |"
    lines = [
        "# Reproduction scorecard", "",
        "Every headline claim of the sources that this book tests (the 47 ids of the project's "
        "`CLAIMS.md`), with the verdict of the stored **book** run of its chapter. A verdict is "
        "computed by the chapter from its per-seed values, by one rule for all chapters: a "
        "comparison is *shown* when its mean goes the source's way over at least 3 seeds and a "
        "one-sided t-test (Welch's, or paired by seed) gives p < 0.05; *direction only* when the "
        "mean goes that way but the test falls short; *not shown* otherwise. \"Within noise\" "
        "needs a two-sided test without a difference and a confidence interval narrower than the "
        "effect the source reports; a mechanism must cross a threshold the chapter states before "
        "its run. *Not run* marks claims that need data this book cannot have offline; *not "
        "reported* marks chapters whose book run has not yet been redone with verdicts. The book "
        "scale is far below the sources' (CPU minutes instead of GPU days), so a *not shown* "
        "here says what this scale shows, not that the source is wrong; each chapter says why.",
        "",
        "This page is built from the stored runs (`structlab scorecard --write`) and the test "
        "suite checks that it is current.", "",
        "## Totals", "", head, "|" + " --- |" * (len(COLUMNS) + 2)]
    for slug in chapters:
        t = totals([r for r in rows if r.chapter == slug])
        lines.append(f"| {titles.get(slug, slug)} | {sum(t.values())} | "
                     + " | ".join(str(t[c]) for c in COLUMNS) + " |")
    t = totals(rows)
    lines.append(f"| **all** | **{sum(t.values())}** | "
                 + " | ".join(f"**{t[c]}**" for c in COLUMNS) + " |")
    for slug in chapters:
        chapter_rows = [r for r in rows if r.chapter == slug]
        profile = chapter_rows[0].profile
        lines += ["", f"## {titles.get(slug, slug)}", "",
                  f"Stored run: the **{profile}** profile of {{doc}}`../chapters/{slug}`.", "",
                  "| id | claim | source | source's numbers | this book's numbers | verdict |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for r in chapter_rows:
            lines.append(f"| {r.id} | {_cell(r.claim)} | {_cell(r.source)} | "
                         f"{_cell(r.source_numbers)} | {_cell(r.numbers)} | *{r.verdict}* |")
    return "\n".join(lines) + "\n"


def page_path(root: Path | None = None) -> Path:
    """``book/scorecard.md`` of the checkout."""
    from structlab.pipeline.chapters import project_root

    return (root or project_root()) / "book" / "scorecard.md"


def write_page(root: Path | None = None) -> tuple[Path, bool]:
    """Rewrite the scorecard page from the stored runs; returns its path and whether it
    changed."""
    from structlab.results import atomic_write_text

    path = page_path(root)
    text = render(collect(root))
    changed = not path.is_file() or path.read_text(encoding="utf-8") != text
    if changed:
        atomic_write_text(path, text)
    return path, changed
