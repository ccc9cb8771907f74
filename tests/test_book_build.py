"""Build the book from the stored outputs and check that every chapter renders with figures."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from structlab.pipeline import list_chapters, project_root


@pytest.fixture(scope="module")
def built_book(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("book")
    jb = Path(sys.executable).with_name("jupyter-book")
    result = subprocess.run(
        [str(jb), "build", str(project_root()), "--path-output", str(out), "-W", "-n",
         "--keep-going"],
        capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return out / "_build" / "html"


def test_front_matter_pages_exist(built_book):
    for page in ("index.html", "book/intro.html", "book/reproduce.html", "book/bibliography.html"):
        assert (built_book / page).is_file(), page
    bibliography = (built_book / "book/bibliography.html").read_text()
    assert "Dynamic Architectural Optimization" in bibliography


@pytest.mark.parametrize("chapter", list_chapters(), ids=lambda c: c.slug)
def test_chapter_page_has_its_figures(built_book, chapter):
    page = built_book / "chapters" / f"{chapter.slug}.html"
    assert page.is_file()
    html = page.read_text()
    images = re.findall(r'<img[^>]+src="([^"]+\.png)"', html)
    nb = nbformat.read(chapter.path, as_version=4)
    captions = [c.metadata["mystnb"]["figure"]["caption"] for c in nb.cells
                if c.cell_type == "code" and "figure" in c.metadata.get("mystnb", {})]
    pngs = sum(1 for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
               if "image/png" in o.get("data", {}))
    assert pngs >= 1, f"{chapter.slug} has no stored figure: execute it with `structlab run`"
    assert len(images) >= pngs
    for src in images:
        assert (page.parent / src).resolve().is_file(), src
    assert html.count("<figcaption") >= len(captions), "a captioned figure did not render"
