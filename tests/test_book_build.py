"""Build the book from the stored outputs; check every chapter's figures, and every page offline in
a real browser (formulas rendered by the book's own MathJax, images loaded, links resolved)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from structlab.pipeline import list_chapters, project_root
from structlab.pipeline.bookcheck import check_book, check_page, find_chromium, page_hygiene

sys.path.insert(0, str(project_root() / "book" / "_ext"))
import structlab_render  # noqa: E402  (the book's Sphinx extension)


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


def test_no_page_shows_stderr_machine_paths_or_raw_parameter_cells(built_book):
    pages = sorted(built_book.rglob("*.html"))
    problems = {p.name: page_hygiene(p.read_text(), project_root()) for p in pages}
    assert not {k: v for k, v in problems.items() if v}
    for chapter in list_chapters():
        html = (built_book / "chapters" / f"{chapter.slug}.html").read_text()
        assert "Parameters of this run" in html, chapter.slug


def test_the_hygiene_check_fails_on_stderr_paths_addresses_and_parameter_cells():
    html = ('<html><body><div class="cell tag_injected-parameters docutils container"></div>'
            '<div class="output stderr"><pre>/usr/lib/python3/site-packages/tqdm/auto.py:21: '
            'TqdmWarning</pre></div><p>saved to /work/main/results/x.png, &lt;Figure at '
            '0x7f3a2b1c9d00&gt;</p></body></html>')
    text = " ".join(page_hygiene(html, Path("/work/main")))
    assert "1 block(s) of standard error" in text and "site-packages" in text
    assert "/work/main" in text and "at 0x7f3a2b1c9d00" in text
    assert "raw parameter cells shown: injected-parameters" in text
    assert page_hygiene("<p>Debian installs them under /usr/share/datasets.</p>") == []


def test_the_render_extension_hides_parameter_cells_behind_one_table():
    import json

    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('seed: int = 0  # random seed | at least 0\n'
                                       'lr: float = 0.1  # SGD learning rate | > 0')
    params.metadata["tags"] = ["parameters"]
    injected = nbformat.v4.new_code_cell("# Parameters\nlr = 0.5\n")
    injected.metadata["tags"] = ["injected-parameters"]
    out = nbformat.v4.new_code_cell("print(path)")
    out.outputs = [nbformat.v4.new_output("stream", name="stdout",
                                          text="wrote /srv/book/results/a.csv\n"
                                               "and /home/x/clone/results/b.csv\n")]
    nb.cells = [params, injected, out]
    nb.metadata["structlab"] = {"profile": "book", "parameters": {"seed": 0, "lr": 0.5}}
    shown = json.loads(structlab_render.render_notebook(nbformat.writes(nb), "demo", "/srv/book"))
    cells = shown["cells"]
    assert all("remove-cell" in c["metadata"]["tags"] for c in cells[:2])
    table = cells[2]["source"]
    assert "the book profile" in table and "`chapters/params/demo-book.yaml`" in table
    assert "| `lr` | `0.5` | SGD learning rate |" in table
    assert cells[3]["outputs"][0]["text"] == "wrote results/a.csv\nand results/b.csv\n"


# --- the book as a reader's browser shows it, offline (headless Chromium) ---------------------

CHROMIUM = find_chromium()
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no chromium: `make test` installs Debian's chromium when run as root; "
           "otherwise `apt-get install chromium`")


def test_the_book_serves_mathjax_itself(built_book):
    for page in built_book.rglob("*.html"):
        html = page.read_text()
        assert "cdn.jsdelivr.net" not in html and "mathjax@" not in html, page
    assert (built_book / "_static" / "mathjax" / "tex-chtml.js").is_file()


@needs_chromium
def test_every_page_renders_its_formulas_images_and_links_offline(built_book):
    reports = check_book(built_book, chromium=CHROMIUM)
    assert len(reports) >= 2 + len(list_chapters())
    problems = {r.page: r.problems for r in reports if not r.ok}
    assert not problems, problems
    chapter = next(r for r in reports if r.page.endswith("equivariance.html"))
    assert chapter.ok


@needs_chromium
def test_the_browser_check_fails_on_raw_tex_missing_images_and_broken_links(tmp_path):
    page = tmp_path / "page.html"
    page.write_text(
        '<html><head></head><body><p>Let <span class="math notranslate">\\(x^2\\)</span> be.</p>'
        '<img src="missing.png"><a href="other.html">x</a><a href="#nowhere">y</a></body></html>')
    report = check_page(page, tmp_path, chromium=CHROMIUM, budget_ms=2000)
    text = " ".join(report.problems)
    assert "raw TeX" in text and "no MathJax output" in text
    assert "image did not load: missing.png" in text
    assert "broken link: other.html" in text and "broken anchor: #nowhere" in text
