"""Execute chapters through papermill and build the Jupyter Book.

Where a run's notebook goes depends on its profile (see :func:`default_output`):

- **smoke** (the notebook's defaults): ``tests/notebooks/<slug>.ipynb``, the reference that nbval
  re-executes in ``make test``;
- **book**: back over ``chapters/<slug>.ipynb``, which the book renders;
- **full**, or any run with other parameters: ``results/<slug>/``.

The output is written atomically: papermill executes into a temporary file that replaces the
target only after every cell succeeded. The kernel runs with the numerics of the profile
(:mod:`structlab.numerics`: portable for smoke and book, native for full), and the executed
notebook is stamped (:mod:`structlab.pipeline.stamps`) so that a fresh clone knows which
chapters are up to date from what is committed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nbformat
from tqdm import tqdm

from structlab.numerics import _cpu_model, numerics_env, pinned_environment
from structlab.pipeline.chapters import Chapter, list_chapters, project_root
from structlab.pipeline.stamps import STAMP_KEY, chapter_digest, read_stamp, stale_reasons
from structlab.results import default_file_mode

__all__ = ["run_chapter", "expected_stamp", "stale", "build_book", "default_output",
           "PROFILE_NUMERICS"]

#: The profiles whose runs resume finished experiments unless told ``--fresh``.
RESUMING_PROFILES = ("book", "full")

#: The numerics mode each profile runs in unless the caller asks for another.
PROFILE_NUMERICS = {"smoke": "portable", "book": "portable", "full": "native"}


def smoke_reference(chapter: Chapter, root: Path | None = None) -> Path:
    """``tests/notebooks/<slug>.ipynb``: the smoke run nbval checks."""
    return (root or project_root()) / "tests" / "notebooks" / f"{chapter.slug}.ipynb"


def default_output(chapter: Chapter, profile: str, overrides: dict[str, Any],
                   root: Path | None = None) -> Path:
    """Where a run's executed notebook goes (see the module docstring)."""
    root = root or project_root()
    if not overrides:
        if profile == "smoke":
            return smoke_reference(chapter, root)
        if profile == "book":
            return chapter.path
    suffix = profile
    if overrides:
        key = json.dumps(overrides, sort_keys=True).encode()
        suffix += "-" + hashlib.sha256(key).hexdigest()[:8]
    return root / "results" / chapter.slug / f"{chapter.slug}-{suffix}.ipynb"


def _numerics_stamp(mode: str) -> dict[str, Any]:
    env = numerics_env(mode)
    threads = env.get("STRUCTLAB_THREADS")
    return {"mode": mode, "threads": int(threads) if threads else None, "cpu": _cpu_model()}


def expected_stamp(chapter: Chapter, profile: str, overrides: dict[str, Any] | None = None,
                   numerics: str | None = None,
                   root: Path | None = None) -> tuple[str, dict[str, str]]:
    """The digest (and its parts) that a run of the current code would be stamped with."""
    root = root or project_root()
    mode = numerics or PROFILE_NUMERICS[profile]
    parameters = chapter.resolve(profile, overrides)
    nb = nbformat.read(chapter.path, as_version=4)
    return chapter_digest(nb, parameters, _numerics_stamp(mode), root)


def stale(chapter: Chapter, profile: str, root: Path | None = None) -> list[str]:
    """Why the stored run of ``profile`` is not what the current code produces ([] if current)."""
    root = root or project_root()
    digest, parts = expected_stamp(chapter, profile, root=root)
    return stale_reasons(read_stamp(default_output(chapter, profile, {}, root)), digest, parts)


def run_chapter(
    chapter: Chapter,
    *,
    profile: str = "smoke",
    overrides: dict[str, Any] | None = None,
    output: Path | None = None,
    progress: bool = True,
    numerics: str | None = None,
    resume: bool | None = None,
) -> Path:
    """Execute ``chapter`` with papermill and return the executed, stamped notebook's path.

    ``resume`` (default: True for the book and full profiles, False for smoke) lets the chapter's
    :class:`~structlab.experiment_store.ExperimentStore` read back the experiments a previous,
    interrupted run of the same code and parameters finished; False runs every one again.

    Every parameter is validated (name, type, accepted values) before anything runs
    (:class:`structlab.pipeline.chapters.ParameterError` names the bad one). The kernel starts in
    the profile's numerics mode, or ``numerics`` when given.
    """
    import papermill as pm

    root = project_root()
    overrides = dict(overrides or {})
    parameters = chapter.resolve(profile, overrides)
    mode = numerics or PROFILE_NUMERICS[profile]
    numerics_stamp = _numerics_stamp(mode)
    output = Path(output) if output is not None else default_output(
        chapter, profile, overrides, root)
    output.parent.mkdir(parents=True, exist_ok=True)
    digest, parts = chapter_digest(nbformat.read(chapter.path, as_version=4), parameters,
                                   numerics_stamp, root)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{chapter.slug}.", suffix=".ipynb", dir=output.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    started = time.perf_counter()
    from structlab.experiment_store import RESUME_ENV  # imports torch: not at CLI start-up

    if resume is None:
        resume = profile in RESUMING_PROFILES
    previous = os.environ.get(RESUME_ENV)
    os.environ[RESUME_ENV] = "1" if resume else "0"
    try:
        with pinned_environment(mode):
            pm.execute_notebook(
                str(chapter.path), str(tmp), parameters=parameters,
                cwd=str(chapter.path.parent), kernel_name="python3", progress_bar=progress,
                request_save_on_cell_execute=True,
            )
    except BaseException:
        failed = root / "results" / chapter.slug / f"{chapter.slug}-failed.ipynb"
        if tmp.exists():
            failed.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(tmp, failed)
            print(f"structlab: {chapter.slug} failed; the partial notebook is {failed}",
                  file=sys.stderr)
        raise
    finally:
        if previous is None:
            os.environ.pop(RESUME_ENV, None)
        else:
            os.environ[RESUME_ENV] = previous
    nb = nbformat.read(tmp, as_version=4)
    device = str(parameters.get("device", "auto"))
    nb.metadata[STAMP_KEY] = {
        "profile": profile,
        "overrides": overrides,
        "parameters": parameters,
        "digest": digest,
        "parts": parts,
        "numerics": numerics_stamp,
        "device": _resolved_device(device),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "executed_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    nbformat.write(nb, tmp)
    os.chmod(tmp, default_file_mode())
    os.replace(tmp, output)
    return output


def _resolved_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    if torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name(0)})"
    return "cpu"


def build_book(*, execute: bool = True, force: bool = False, quiet: bool = False,
               path_output: Path | None = None, strict: bool = True) -> Path:
    """Execute the chapters whose book run is out of date, then build the HTML book.

    Up to date means: the stamp committed in ``chapters/<slug>.ipynb`` matches what the current
    code and book profile would produce (:func:`stale`); on a fresh clone nothing is executed.
    ``force`` re-executes every chapter; ``execute=False`` builds from the stored outputs as they
    are. Returns the path of the book's ``index.html``.
    """
    root = project_root()
    if execute:
        todo: list[Chapter] = []
        for chapter in list_chapters(root):
            reasons = ["--force"] if force else stale(chapter, "book", root)
            if reasons:
                print(f"structlab: {chapter.slug} will be executed (book profile): "
                      + "; ".join(reasons))
                todo.append(chapter)
            else:
                print(f"structlab: {chapter.slug} is up to date")
        for chapter in tqdm(todo, desc="chapters", unit="notebook", disable=quiet or not todo):
            run_chapter(chapter, profile="book", progress=not quiet)
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
