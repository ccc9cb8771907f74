"""Which run produced a chapter's page: the line under its parameters.

Every chapter ends by gluing :func:`provenance` (``myst_nb.glue``) and shows it in a note under
its parameters, so that a reader sees on the page which profile, machine and numerics produced
the numbers, how long the run took and how many of its experiments were read back from an earlier,
interrupted run (:class:`~structlab.experiment_store.ExperimentStore`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["profile_of", "provenance", "format_duration"]

#: Parameters that say where or how quietly a run happens, not what it computes.
_INCIDENTAL = ("results_dir", "quiet", "device", "from_sweep")


def profile_of(chapter: str, namespace: Mapping[str, Any]) -> str:
    """The profile (``smoke``, ``book``, ``full``) whose parameters the values in ``namespace``
    (a notebook's ``globals()``) are, ignoring where results go, quietness and the device;
    ``"custom"`` when they are none of them."""
    from structlab.pipeline.chapters import PROFILES, get_chapter

    spec = get_chapter(chapter)
    values = {k: namespace[k] for k in spec.parameters if k in namespace and k not in _INCIDENTAL}
    for profile in PROFILES:
        expected = spec.resolve(profile)
        if all(expected[k] == v for k, v in values.items()):
            return profile
    return "custom"


def format_duration(seconds: float) -> str:
    """``"1 h 02 min"``, ``"34 min 12 s"`` or ``"48 s"``."""
    seconds = round(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds} s"


def provenance(chapter: str, namespace: Mapping[str, Any], *, device: Any, started: float,
               store: Any = None) -> str:
    """One Markdown line: profile, device (with the CPU model and threads on a CPU), numerics,
    wall time since ``started`` (a :func:`time.perf_counter` value) and, with a ``store``, how
    many experiments ran and how many were read back."""
    import torch

    from structlab.numerics import _cpu_model

    where = str(device)
    if where == "cpu":
        where = f"CPU ({_cpu_model()}, {torch.get_num_threads()} threads)"
    elif where.startswith("cuda"):
        where = f"GPU ({torch.cuda.get_device_name(torch.device(where))})"
    numerics = os.environ.get("STRUCTLAB_NUMERICS", "native")
    parts = [f"the **{profile_of(chapter, namespace)}** profile", f"on a {where}",
             f"{numerics} numerics", f"in {format_duration(time.perf_counter() - started)}"]
    if store is not None:
        total = store.computed + store.resumed
        sweep = namespace.get("from_sweep")
        source = (f"the sweep {Path(sweep).name}" if sweep
                  else "an earlier run of the same code and parameters")
        parts.append(f"{total} experiments, {store.resumed} of them read back from {source} "
                     f"(their own wall times are in {store.root.name}/*.json beside the results)"
                     if store.resumed else f"{total} experiments")
    return ", ".join(parts)
