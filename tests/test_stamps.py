"""Stamps: the digest of what produced a notebook, and the reasons a stored run is stale."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from structlab.pipeline.stamps import chapter_digest, code_files, stale_reasons


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    pkg = tmp_path / "structlab"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from structlab.core import f\n")
    (pkg / "core.py").write_text("def f():\n    return 1\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "algo.py").write_text(
        "def g():\n    from structlab.sub import helper\n    return helper.h()\n")
    (pkg / "sub" / "helper.py").write_text("def h():\n    return 2\n")
    (pkg / "sub" / "table.csv").write_text("a,b\n1,2\n")
    (pkg / "unused.py").write_text("x = 1\n")
    (tmp_path / "pyproject.toml").write_text('[project]\ndependencies = ["torch==2.14.1"]\n')
    return tmp_path


def _nb(*sources: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# Title")]
    nb.cells += [nbformat.v4.new_code_cell(s) for s in sources]
    return nb


NUMERICS = {"mode": "portable", "threads": 2}


def test_the_closure_follows_imports_inside_functions_and_adds_data_files(repo):
    closure = code_files(["from structlab.sub.algo import g"], repo)
    files = {p.relative_to(repo).as_posix() for p in closure}
    assert files == {"structlab/__init__.py", "structlab/core.py", "structlab/sub/__init__.py",
                     "structlab/sub/algo.py", "structlab/sub/helper.py", "structlab/sub/table.csv"}


def test_a_change_anywhere_in_the_closure_is_named(repo):
    nb = _nb("from structlab.sub.algo import g", "print(g())")
    digest, parts = chapter_digest(nb, {"seed": 0}, NUMERICS, repo)
    stamp = {"digest": digest, "parts": parts}
    assert stale_reasons(stamp, digest, parts) == []
    (repo / "structlab" / "unused.py").write_text("x = 2\n")  # not imported: no effect
    assert chapter_digest(nb, {"seed": 0}, NUMERICS, repo)[0] == digest
    (repo / "structlab" / "sub" / "helper.py").write_text("def h():\n    return 3\n")
    new, new_parts = chapter_digest(nb, {"seed": 0}, NUMERICS, repo)
    assert stale_reasons(stamp, new, new_parts) == ["structlab/sub/helper.py changed"]


def test_parameters_code_cells_numerics_and_pins_count_but_prose_does_not(repo):
    nb = _nb("import structlab")
    digest, parts = chapter_digest(nb, {"seed": 0}, NUMERICS, repo)
    stamp = {"digest": digest, "parts": parts}
    nb.cells[0].source = "# Another title"
    assert chapter_digest(nb, {"seed": 0}, NUMERICS, repo)[0] == digest
    injected = nbformat.v4.new_code_cell("seed = 5")
    injected.metadata["tags"] = ["injected-parameters"]
    nb.cells.append(injected)
    assert chapter_digest(nb, {"seed": 0}, NUMERICS, repo)[0] == digest

    def reasons(**change) -> list[str]:
        args = {"nb": nb, "parameters": {"seed": 0}, "numerics": NUMERICS, "root": repo}
        args.update(change)
        return stale_reasons(stamp, *chapter_digest(**args))

    assert reasons(parameters={"seed": 1}) == ["parameters changed"]
    assert reasons(numerics={"mode": "native", "threads": None}) == ["numerics changed"]
    assert reasons(nb=_nb("import structlab", "print(1)")) == ["notebook code cells changed"]
    params_cell = nbformat.v4.new_code_cell("seed: int = 0  # the seed | at least 0")
    params_cell.metadata["tags"] = ["parameters"]
    nb.cells.insert(1, params_cell)  # its values are in the parameters part, its comments no
    assert reasons() == []           # part of the result
    (repo / "pyproject.toml").write_text('[project]\ndependencies = ["torch==2.15.0"]\n')
    assert reasons() == ["pyproject.toml dependencies changed"]
    assert stale_reasons(None, digest, parts) == [
        "it has no stamp (never executed by the pipeline)"]
