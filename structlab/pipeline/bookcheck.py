"""Check the built book as a reader's browser shows it, offline.

Headless Chromium (Debian's ``chromium``) opens every page of ``book/_build/html`` with no network
and reports, per page:

- formulas that did not render: a page whose source has math must show MathJax output elements
  (``mjx-container``) and no raw ``\\(``, ``\\[`` or ``$$`` left in its visible text;
- images that did not load (``complete`` with a natural width, as the browser decoded them);
- internal links and citations that do not resolve: the target file exists and, for ``#anchor``,
  the target page has an element with that id;
- what a page must never show a reader (:func:`page_hygiene`, also without a browser): a block of
  standard error output, an absolute path of the machine that built it (its checkout, a Python
  installation, a home directory), an object address, or a raw ``parameters`` /
  ``injected-parameters`` cell.

The browser runs a copy of each page with a short script appended that writes what it finds into
the DOM, which ``--dump-dom`` then prints.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

__all__ = ["find_chromium", "PageReport", "check_page", "check_book", "page_hygiene"]

_PROBE = """
<script>
(function () {
  function report() {
    var broken = [];
    for (var i = 0; i < document.images.length; i++) {
      var img = document.images[i];
      if (!(img.complete && img.naturalWidth > 0)) broken.push(img.getAttribute('src'));
    }
    var out = document.createElement('pre');
    out.id = 'structlab-bookcheck';
    out.textContent = JSON.stringify({
      broken: broken,
      mathjax: document.querySelectorAll('mjx-container').length,
      mathjax_loaded: typeof window.MathJax === 'object' && !!window.MathJax.version
    });
    document.body.appendChild(out);
  }
  window.addEventListener('load', function () {
    var mj = window.MathJax;
    if (mj && mj.startup && mj.startup.promise) {
      mj.startup.promise.then(function () { setTimeout(report, 0); }, report);
    } else {
      setTimeout(report, 0);
    }
  });
})();
</script>
"""

_RAW_TEX = re.compile(r"\\\(|\\\[|\$\$")
_REDIRECT = re.compile(r'http-equiv="refresh"[^>]*url=([^"\s>]+)', re.IGNORECASE)


#: Paths and addresses that say which machine built a page (the checkout is added per build).
_MACHINE = re.compile(r"site-packages|dist-packages|/home/[\w.-]+/|/root/|/tmp/[\w.-]+/|"
                      r"/work/[\w.+-]+/|at 0x[0-9a-fA-F]{6,}")
#: Cells myst-nb marks with their tags: the raw parameter cells of a papermill run.
_RAW_PARAMETERS = re.compile(r'class="cell[^"]*\btag_(injected-parameters|parameters)\b')


def page_hygiene(html: str, checkout: Path | None = None) -> list[str]:
    """What ``html`` (one built page) shows a reader that it must not: stderr output blocks,
    absolute paths of the build machine (``checkout``, Python installations, home and temporary
    directories), object addresses, and raw ``parameters`` cells."""
    problems = []
    stderr = html.count("output stderr")
    if stderr:
        problems.append(f"{stderr} block(s) of standard error output")
    visible = " ".join(_parse(html).text)
    found = set(_MACHINE.findall(visible))
    if checkout is not None and str(checkout) in visible:
        found.add(str(checkout))
    if found:
        problems.append("machine paths or object addresses in the visible text: "
                        + ", ".join(sorted(found)))
    raw = sorted(set(_RAW_PARAMETERS.findall(html)))
    if raw:
        problems.append("raw parameter cells shown: " + ", ".join(raw))
    return problems


def find_chromium() -> str | None:
    """The path of a Chromium executable, or ``None``."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class _Visible(HTMLParser):
    """Visible text, element ids, links and whether the DOM has source math."""

    _HIDDEN = {"script", "style", "mjx-container", "mjx-assistive-mml", "noscript", "template"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.text: list[str] = []
        self.ids: set[str] = set()
        self.links: list[str] = []
        self.images: list[str] = []
        self.math_spans = 0
        self._hidden = 0
        self._stack: list[str] = []
        self.probe = ""
        self._in_probe = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"] or "")
        if tag == "a" and a.get("href"):
            self.links.append(a["href"] or "")
        if tag == "img" and a.get("src"):
            self.images.append(a["src"] or "")
        if "math" in (a.get("class") or "").split():
            self.math_spans += 1
        if a.get("id") == "structlab-bookcheck":
            self._in_probe = True
        if tag in self._HIDDEN:
            self._hidden += 1
        if tag not in {"br", "img", "meta", "link", "input", "hr", "source", "wbr"}:
            self._stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in self._HIDDEN and self._hidden:
            self._hidden -= 1
        if tag == "pre" and self._in_probe:
            self._in_probe = False
        if tag in self._stack:
            while self._stack and self._stack.pop() != tag:
                pass

    def handle_data(self, data: str) -> None:
        if self._in_probe:
            self.probe += data
        elif not self._hidden:
            self.text.append(data)


@dataclass
class PageReport:
    """What a reader's browser shows wrong on one page (empty lists: nothing)."""

    page: str
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _parse(html: str) -> _Visible:
    parser = _Visible()
    parser.feed(html)
    return parser


def _render(chromium: str, page: Path, budget_ms: int) -> str:
    copy = page.with_name(f".bookcheck-{page.name}")
    html = page.read_text(encoding="utf-8")
    copy.write_text(html.replace("</body>", _PROBE + "</body>", 1), encoding="utf-8")
    try:
        with tempfile.TemporaryDirectory(prefix="bookcheck-") as profile:
            result = subprocess.run(
                [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--allow-file-access-from-files", f"--user-data-dir={profile}",
                 f"--virtual-time-budget={budget_ms}", "--dump-dom", copy.as_uri()],
                capture_output=True, text=True, timeout=120,
            )
    finally:
        copy.unlink(missing_ok=True)
    if result.returncode != 0 or "<html" not in result.stdout.lower():
        raise RuntimeError(f"chromium failed on {page}: {result.stderr[-2000:]}")
    return result.stdout


def check_page(page: Path, root: Path, *, chromium: str, budget_ms: int = 20000,
               ids_cache: dict[Path, set[str]] | None = None) -> PageReport:
    """Render ``page`` (inside the built book ``root``) and list what a reader would see broken."""
    ids_cache = {} if ids_cache is None else ids_cache
    report = PageReport(str(page.relative_to(root)))
    html = page.read_text(encoding="utf-8")
    redirect = _REDIRECT.search(html)
    if redirect and "<body" not in html.lower():  # Jupyter Book's index.html: a bare redirect
        problem = _check_link(page, root, redirect.group(1), set(), ids_cache)
        return PageReport(report.page, [problem] if problem else [])
    source = _parse(html)
    report.problems += page_hygiene(html)
    dom = _parse(_render(chromium, page, budget_ms))
    try:
        probe = json.loads(dom.probe)
    except json.JSONDecodeError:
        report.problems.append("the page's scripts did not finish (no report from the browser)")
        return report
    visible = " ".join(dom.text)
    raw = _RAW_TEX.findall(visible)
    if raw:
        at = _RAW_TEX.search(visible)
        assert at is not None
        report.problems.append(
            f"{len(raw)} raw TeX delimiter(s) in the visible text, first: "
            f"{visible[max(0, at.start() - 40):at.start() + 60]!r}")
    if source.math_spans and not probe["mathjax"]:
        loaded = "loaded" if probe["mathjax_loaded"] else "not loaded"
        report.problems.append(f"{source.math_spans} formula(s) but no MathJax output "
                               f"(MathJax {loaded})")
    for src in probe["broken"]:
        report.problems.append(f"image did not load: {src}")
    for href in source.links:
        problem = _check_link(page, root, href, source.ids, ids_cache)
        if problem:
            report.problems.append(problem)
    return report


def _check_link(page: Path, root: Path, href: str, own_ids: set[str],
                ids_cache: dict[Path, set[str]]) -> str | None:
    parts = urlsplit(href)
    if parts.scheme in {"http", "https", "mailto", "data", "javascript"} or parts.netloc:
        return None
    if parts.scheme not in {"", "file"}:
        return None
    target = page if not parts.path else (page.parent / unquote(parts.path)).resolve()
    if parts.path and not target.exists():
        return f"broken link: {href}"
    if target.is_dir():
        target = target / "index.html"
        if not target.exists():
            return f"broken link: {href}"
    if parts.fragment and target.suffix == ".html":
        if target == page:
            ids = own_ids
        else:
            if target not in ids_cache:
                ids_cache[target] = _parse(target.read_text(encoding="utf-8")).ids
            ids = ids_cache[target]
        if unquote(parts.fragment) not in ids:
            return f"broken anchor: {href}"
    return None


def check_book(html_root: Path, *, chromium: str | None = None) -> list[PageReport]:
    """:func:`check_page` for every page of the built book (``_build/html``)."""
    chromium = chromium or find_chromium()
    if chromium is None:
        raise FileNotFoundError("no chromium on PATH: apt-get install chromium")
    pages = sorted(p for p in html_root.rglob("*.html")
                   if "_static" not in p.parts and "_sources" not in p.parts
                   and not p.name.startswith(".bookcheck-") and p.name not in {"genindex.html",
                                                                               "search.html"})
    cache: dict[Path, set[str]] = {}
    return [check_page(p, html_root, chromium=chromium, ids_cache=cache) for p in pages]
