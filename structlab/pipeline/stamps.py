"""Stamps: which code and parameters produced an executed chapter notebook.

An executed notebook carries, in ``metadata["structlab"]``, the digest of everything that decides
its outputs:

- the source and tags of its code cells, leaving out the ``parameters`` cell and the cell papermill
  injects with the run's parameters (markdown is not: prose is edited in the stored notebook
  itself, and a glue key it names that no cell computes fails the book build);
- every parameter's value;
- the ``structlab`` modules the notebook imports, followed through their own imports (an
  ``import`` anywhere in a module counts), with the data files beside them, and the pinned
  dependencies of ``pyproject.toml``;
- the numerics mode and thread count (:mod:`structlab.numerics`).

The stamp lives in the committed notebook, so a fresh clone knows what is up to date without
executing anything; per-file hashes let :func:`stale_reasons` say *why* a chapter is out of date.
"""

from __future__ import annotations

import ast
import hashlib
import json
import tomllib
from pathlib import Path
from typing import Any

import nbformat

__all__ = ["code_files", "chapter_digest", "read_stamp", "stale_reasons", "STAMP_KEY"]

STAMP_KEY = "structlab"
_DATA_SUFFIXES = {".csv", ".json", ".yaml"}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _imports(source: str) -> set[str]:
    """Qualified names a source imports (``from a.b import c`` gives ``a.b`` and ``a.b.c``)."""
    names: set[str] = set()
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return names
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _module_file(root: Path, name: str) -> Path | None:
    base = root.joinpath(*name.split("."))
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def code_files(sources: list[str], root: Path) -> list[Path]:
    """The ``structlab`` files that code importing as ``sources`` does runs, data files included.

    The closure follows every ``import`` of ``structlab.*`` (and the packages that contain each
    module, whose ``__init__`` runs first), then adds the ``.csv/.json/.yaml`` files of every
    package directory reached.
    """
    pending = set().union(*(_imports(s) for s in sources)) if sources else set()
    seen: set[Path] = set()
    while pending:
        name = pending.pop()
        if name != "structlab" and not name.startswith("structlab."):
            continue
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            path = _module_file(root, ".".join(parts[:i]))
            if path is not None and path not in seen:
                seen.add(path)
                pending |= _imports(path.read_text(encoding="utf-8"))
    dirs = {p.parent for p in seen}
    data = {f for d in dirs for f in d.iterdir() if f.suffix in _DATA_SUFFIXES and f.is_file()}
    return sorted(seen | data)


def _dependency_pins(root: Path) -> list[str]:
    project = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return sorted(project.get("dependencies", []))


def source_cells(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    """The notebook's own cells: without the cell papermill injects with a run's parameters."""
    return [c for c in nb.cells if "injected-parameters" not in c.metadata.get("tags", [])]


def chapter_digest(nb: nbformat.NotebookNode, parameters: dict[str, Any], numerics: dict[str, Any],
                   root: Path) -> tuple[str, dict[str, str]]:
    """The digest of a run of ``nb`` with ``parameters``, and the per-part hashes behind it."""
    cells = source_cells(nb)
    parts: dict[str, str] = {}
    cell_digest = hashlib.sha256()
    # The parameters cell is left out too: every value it sets is in the parameters part, and
    # its comments (descriptions, accepted values) do not change what the run computes.
    for cell in (c for c in cells if c.cell_type == "code"
                 and "parameters" not in c.metadata.get("tags", [])):
        cell_digest.update(cell.cell_type.encode() + b"\0" + cell.source.encode() + b"\0")
        cell_digest.update(json.dumps(sorted(cell.metadata.get("tags", []))).encode())
    parts["notebook code cells"] = cell_digest.hexdigest()
    parts["parameters"] = _sha(json.dumps(parameters, sort_keys=True).encode())
    parts["numerics"] = _sha(json.dumps(
        {"mode": numerics.get("mode"), "threads": numerics.get("threads")}, sort_keys=True
    ).encode())
    parts["pyproject.toml dependencies"] = _sha("\n".join(_dependency_pins(root)).encode())
    code = [c.source for c in cells if c.cell_type == "code"]
    for path in code_files(code, root):
        parts[path.relative_to(root).as_posix()] = _sha(path.read_bytes())
    total = _sha(json.dumps(parts, sort_keys=True).encode())
    return total, {k: v[:16] for k, v in parts.items()}


def read_stamp(path: Path) -> dict[str, Any] | None:
    """The stamp of an executed notebook, or ``None`` when it has none (or does not exist)."""
    if not path.is_file():
        return None
    nb = nbformat.read(path, as_version=4)
    stamp = nb.metadata.get(STAMP_KEY)
    return dict(stamp) if stamp else None


def stale_reasons(stamp: dict[str, Any] | None, digest: str, parts: dict[str, str]) -> list[str]:
    """Why a stored run is not what the current code would produce (empty: it is up to date)."""
    if stamp is None:
        return ["it has no stamp (never executed by the pipeline)"]
    if stamp.get("digest") == digest:
        return []
    old: dict[str, str] = stamp.get("parts", {})
    reasons = []
    for name in sorted(set(old) | set(parts)):
        if name not in old:
            reasons.append(f"{name} is new to it")
        elif name not in parts:
            reasons.append(f"{name} is no longer used")
        elif old[name] != parts[name]:
            reasons.append(f"{name} changed")
    return reasons or ["its digest differs"]
