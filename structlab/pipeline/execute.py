"""Execute chapters through papermill and build the Jupyter Book.

A quick-profile run with no overrides writes the executed notebook back over the chapter (that
is what the book shows and what nbval checks); any other run writes under ``results/<slug>/``.
The output is written atomically: papermill executes into a temporary file that replaces the
target only after every cell succeeded. A stamp (hash of the notebook's code, the package's
sources and the parameters) in ``.structlab-cache/`` lets ``structlab book`` skip chapters that
are up to date.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import nbformat
from tqdm import tqdm

from structlab.pipeline.chapters import Chapter, list_chapters, project_root
from structlab.results import default_file_mode

__all__ = ["run_chapter", "chapter_stamp", "is_up_to_date", "build_book", "default_output"]


def _sources_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted((root / "structlab").rglob("*")):
        if path.suffix in {".py", ".csv", ".json", ".yaml"} and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    digest.update((root / "pyproject.toml").read_bytes())
    return digest.hexdigest()


def chapter_stamp(chapter: Chapter, parameters: dict[str, Any], root: Path | None = None) -> str:
    """Hash of what determines a chapter's outputs: its cells' code, parameters, the package."""
    root = root or project_root()
    nb = nbformat.read(chapter.path, as_version=4)
    digest = hashlib.sha256()
    for cell in nb.cells:
        digest.update(cell.cell_type.encode())
        digest.update(cell.source.encode())
        digest.update(json.dumps(cell.metadata.get("tags", [])).encode())
    digest.update(json.dumps(parameters, sort_keys=True).encode())
    digest.update(_sources_digest(root).encode())
    return digest.hexdigest()


def _stamp_file(root: Path, chapter: Chapter) -> Path:
    return root / ".structlab-cache" / "stamps" / f"{chapter.slug}.txt"


def is_up_to_date(chapter: Chapter, root: Path | None = None) -> bool:
    """Whether the chapter's stored outputs come from a quick run of the current code."""
    root = root or project_root()
    stamp = _stamp_file(root, chapter)
    return stamp.is_file() and stamp.read_text().strip() == chapter_stamp(chapter, {}, root)


def default_output(chapter: Chapter, profile: str, overrides: dict[str, Any],
                   root: Path | None = None) -> Path:
    """In place for the plain quick profile; ``results/<slug>/<slug>-<profile>[-hash].ipynb``."""
    if profile == "quick" and not overrides:
        return chapter.path
    root = root or project_root()
    suffix = profile
    if overrides:
        key = json.dumps(overrides, sort_keys=True).encode()
        suffix += "-" + hashlib.sha256(key).hexdigest()[:8]
    return root / "results" / chapter.slug / f"{chapter.slug}-{suffix}.ipynb"


def run_chapter(
    chapter: Chapter,
    *,
    profile: str = "quick",
    overrides: dict[str, Any] | None = None,
    output: Path | None = None,
    progress: bool = True,
) -> Path:
    """Execute ``chapter`` with papermill and return the executed notebook's path.

    ``overrides`` are validated against the notebook's declared parameters before anything runs
    (:class:`structlab.pipeline.chapters.ParameterError` names the bad one and the accepted ones).
    """
    import papermill as pm

    root = project_root()
    parameters = {**chapter.profile(profile), **chapter.validate(dict(overrides or {}))}
    output = Path(output) if output is not None else default_output(
        chapter, profile, parameters if profile == "quick" else dict(overrides or {}), root)
    output.parent.mkdir(parents=True, exist_ok=True)
    stamp = chapter_stamp(chapter, parameters, root)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{chapter.slug}.", suffix=".ipynb", dir=output.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        pm.execute_notebook(
            str(chapter.path), str(tmp), parameters=parameters, cwd=str(chapter.path.parent),
            kernel_name="python3", progress_bar=progress, request_save_on_cell_execute=True,
        )
    except BaseException:
        failed = root / "results" / chapter.slug / f"{chapter.slug}-failed.ipynb"
        if tmp.exists():
            failed.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(tmp, failed)
            print(f"structlab: {chapter.slug} failed; the partial notebook is {failed}",
                  file=sys.stderr)
        raise
    os.chmod(tmp, default_file_mode())
    os.replace(tmp, output)
    if output == chapter.path:
        stamp_path = _stamp_file(root, chapter)
        stamp_path.parent.mkdir(parents=True, exist_ok=True)
        stamp_path.write_text(stamp + "\n")
    return output


def build_book(*, execute: bool = True, force: bool = False, quiet: bool = False,
               path_output: Path | None = None, strict: bool = True) -> Path:
    """Execute out-of-date chapters at their quick profile, then build the HTML book.

    Returns the path of the book's ``index.html``.
    """
    root = project_root()
    if execute:
        chapters = list_chapters(root)
        todo = [c for c in chapters if force or not is_up_to_date(c, root)]
        for chapter in chapters:
            if chapter not in todo:
                print(f"structlab: {chapter.slug} is up to date")
        for chapter in tqdm(todo, desc="chapters", unit="notebook", disable=quiet):
            tqdm.write(f"structlab: executing {chapter.slug} (quick profile)")
            run_chapter(chapter, progress=not quiet)
    path_output = Path(path_output) if path_output is not None else root / "book"
    command = [str(Path(sys.executable).with_name("jupyter-book")), "build", str(root),
               "--path-output", str(path_output)]
    if strict:
        command += ["-W", "-n", "--keep-going"]
    if quiet:
        command.append("-q")
    subprocess.run(command, check=True, cwd=root)
    index = path_output / "_build" / "html" / "index.html"
    print(f"structlab: the book is at {index}")
    return index
