"""A tiny chapter in a throw-away project root, and the CLI pointed at it, for the fault tests.

The pipeline finds chapters through :func:`structlab.pipeline.chapters.project_root` (the checkout
holding ``_toc.yml``). :func:`make_project` writes a project of its own: ``_toc.yml``, the
checkout's ``pyproject.toml`` (for the dependency pins of the stamp) and ``chapters/tiny.ipynb``,
a notebook that runs ``n`` small, seeded experiments through an
:class:`~structlab.experiment_store.ExperimentStore`, each taking ``delay`` seconds, logs every
computation to ``calls.log`` and writes its results as JSON. Run as a script, this module points
``project_root`` at such a project and runs the ``structlab`` command line there::

    python tests/faults/tinychapter.py ROOT run tiny -p n 4 ...
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nbformat

CHECKOUT = Path(__file__).resolve().parents[2]

PARAMETERS = '''\
seed: int = 0  # seed of the experiments | at least 0
device: str = "auto"  # "auto" picks a GPU when there is one
quiet: bool = True  # hide progress bars
n: int = 4  # experiments | at least 1
delay: float = 0.5  # seconds each experiment sleeps | at least 0
fail: str = ""  # raise this error in the first experiment: "", "dataset" or "value"
results_dir: str = "results/tiny"  # where the results are written
'''

BODY = '''\
import json, os, time
import torch
from structlab.experiment_store import ExperimentStore
from structlab.data import DatasetUnavailableError
from structlab.results import atomic_write_json

os.makedirs(results_dir, exist_ok=True)
store = ExperimentStore(f"{results_dir}/experiments", quiet=quiet)


def experiment(i: int) -> dict:
    if fail == "dataset":
        raise DatasetUnavailableError("dataset 'tiny' is not in the cache and downloads are off")
    if fail == "value":
        raise ValueError("tiny diverged")
    with open(f"{results_dir}/calls.log", "a") as log:
        log.write(f"start {i} {os.getpid()}\\n")
    g = torch.Generator().manual_seed(seed * 1000 + i)
    w = torch.randn(64, 64, generator=g)
    x = torch.randn(8, 64, generator=g)
    for _ in range(20):
        x = torch.tanh(x @ w / 8)
    time.sleep(delay)
    with open(f"{results_dir}/calls.log", "a") as log:
        log.write(f"end {i} {os.getpid()}\\n")
    return {"i": i, "value": float(x.sum()), "tensor": x[:2, :2].clone()}


results = [store.run("tiny", {"i": i, "seed": seed}, lambda i=i: experiment(i)) for i in range(n)]
atomic_write_json(f"{results_dir}/results.json",
                  {"values": [r["value"] for r in results],
                   "computed": store.computed, "resumed": store.resumed})
print(store.summary())
'''


def make_project(root: Path) -> Path:
    """Write a project with the one chapter ``tiny`` under ``root``; return ``root``."""
    (root / "chapters").mkdir(parents=True, exist_ok=True)
    (root / "_toc.yml").write_text("format: jb-book\nroot: intro\nchapters:\n"
                                   "  - file: chapters/tiny\n")
    shutil.copy(CHECKOUT / "pyproject.toml", root / "pyproject.toml")
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Tiny\n\nA chapter for the fault tests."),
        nbformat.v4.new_code_cell(PARAMETERS, metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(BODY),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, root / "chapters" / "tiny.ipynb")
    return root


def point_at(root: Path, setattr: Callable[[Any, str, Any], None] = setattr) -> None:
    """Make every loaded ``structlab`` module's ``project_root`` return ``root`` (``setattr``:
    pytest's ``monkeypatch.setattr`` to undo it after a test)."""
    import importlib

    for module in ("structlab.cli", "structlab.pipeline.execute", "structlab.pipeline.sweep",
                   "structlab.pipeline.checks", "structlab.pipeline.runs"):
        try:  # load the modules that hold a project_root
            importlib.import_module(module)
        except ImportError:  # an older checkout without it
            pass

    for name, module in list(sys.modules.items()):
        if name.startswith("structlab") and hasattr(module, "project_root"):
            setattr(module, "project_root", lambda: root)


if __name__ == "__main__":
    point_at(Path(sys.argv[1]).resolve())
    from structlab.cli import main

    raise SystemExit(main(sys.argv[2:]))
