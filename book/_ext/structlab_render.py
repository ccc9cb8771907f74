"""Sphinx extension of the structlab book: how a stored chapter run is shown to a reader.

The executed notebooks in ``chapters/`` are what the pipeline produced and stay as they are (they
are runnable in JupyterLab, with their ``parameters`` cell and papermill's injected one). When the
book renders one, this extension, on Sphinx's ``source-read`` event (before myst-nb parses the
notebook):

- hides the ``parameters`` cell and the ``injected-parameters`` cell (tag ``remove-cell``) and
  shows instead one compact, collapsible table of the values the run used, with the profile and
  the YAML file they came from (from the notebook's stamp, ``metadata["structlab"]``);
- writes an absolute path into the checkout, where an output printed it (this checkout's, or that
  of the machine that ran the notebook), as the path relative to the checkout: a page never shows
  the machine that built or ran it.

Standard error outputs are removed by myst-nb itself (``nb_output_stderr: remove`` in
``_config.yml``); ``tests/test_book_build.py`` checks every built page for stderr blocks and
absolute paths.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

_PARAM = re.compile(r"^(?P<name>[A-Za-z_]\w*)\s*:\s*[^=]+=\s*(?P<default>[^#]*?)\s*"
                    r"(?:#\s*(?P<comment>.*))?$")


def _comments(source: str) -> dict[str, str]:
    out = {}
    for line in source.splitlines():
        match = _PARAM.match(line.strip())
        if match:
            out[match["name"]] = (match["comment"] or "").split(" | ")[0].strip()
    return out


def _cell_text(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, str) else str(value)
    text = text.replace("'", '"')
    return text.replace("|", "\\|")


def parameters_markdown(slug: str, stamp: dict[str, Any], comments: dict[str, str]) -> str:
    """The collapsible table of a stored run's parameters."""
    profile = stamp.get("profile", "custom")
    parameters = stamp.get("parameters", {})
    overrides = stamp.get("overrides") or {}
    where = (f"`chapters/params/{slug}-{profile}.yaml` over the defaults of the notebook's "
             "`parameters` cell" if profile in ("book", "full") else
             "the defaults of the notebook's `parameters` cell")
    if overrides:
        where += ", with " + ", ".join(f"`{k}`" for k in overrides) + " set on the command line"
    lines = [f"```{{admonition}} Parameters of this run: the {profile} profile",
             ":class: dropdown", "",
             f"The values below come from {where}. To run the chapter with other values, see "
             "{doc}`../book/reproduce` or `structlab run " + slug + " -p NAME VALUE`.", "",
             "| parameter | value | meaning |", "| --- | --- | --- |"]
    for name, value in parameters.items():
        lines.append(f"| `{name}` | `{_cell_text(value)}` | "
                     f"{comments.get(name, '').replace('|', '/')} |")
    lines.append("```")
    return "\n".join(lines)


#: An absolute path into a checkout's own folders, as another machine that ran the notebook
#: printed it (its checkout may be anywhere): kept from the folder on.
_FOREIGN_CHECKOUT = re.compile(r"/[^\s'\"<>]*/(?=(?:results|chapters|records|data|tests)/)")


def _relative(text: str, root: str) -> str:
    text = text.replace(root + "/", "").replace(root, ".")
    return _FOREIGN_CHECKOUT.sub("", text)


def render_notebook(source: str, slug: str, root: str) -> str:
    """The notebook JSON ``source`` as the book shows it (see the module docstring)."""
    nb = json.loads(source)
    stamp = nb.get("metadata", {}).get("structlab")
    cells = nb.get("cells", [])
    comments: dict[str, str] = {}
    last = None
    for i, cell in enumerate(cells):
        tags = cell.setdefault("metadata", {}).setdefault("tags", [])
        if "parameters" in tags or "injected-parameters" in tags:
            if "parameters" in tags:
                src = cell.get("source", "")
                comments = _comments(src if isinstance(src, str) else "".join(src))
            if "remove-cell" not in tags:
                tags.append("remove-cell")
            last = i
        for output in cell.get("outputs", []):
            if "text" in output:
                text = output["text"]
                output["text"] = _relative("".join(text) if isinstance(text, list) else text,
                                           root)
            for mime, data in output.get("data", {}).items():
                if mime.startswith("text/"):
                    joined = "".join(data) if isinstance(data, list) else data
                    output["data"][mime] = _relative(joined, root)
    if stamp and last is not None:
        cells.insert(last + 1, {"cell_type": "markdown", "metadata": {},
                                "source": parameters_markdown(slug, stamp, comments)})
    return json.dumps(nb)


def _source_read(app: Any, docname: str, source: list[str]) -> None:
    path = Path(app.env.doc2path(docname))
    if path.suffix != ".ipynb":
        return
    source[0] = render_notebook(source[0], path.stem, str(Path(app.srcdir).resolve()))


def _static(app: Any, config: Any) -> None:
    config.html_static_path.append(str(Path(__file__).with_name("static")))


def setup(app: Any) -> dict[str, Any]:
    app.connect("config-inited", _static)
    app.connect("source-read", _source_read)
    app.add_css_file("structlab.css")
    return {"parallel_read_safe": True, "parallel_write_safe": True}
