"""Bad input refused in one line before any work starts: what ``structlab`` checks beyond each
parameter's own rule (:meth:`structlab.pipeline.chapters.Parameter.coerce`).

- parameter files (``-f``): missing, a directory, not UTF-8, not valid YAML, not a mapping;
- the executed notebook's path (``-o``): a directory, or in a directory that cannot be made;
- ``device``: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``, and a CUDA device only where torch sees
  one (``local=False`` — a sweep on a cluster — checks the spelling only);
- ``results_dir``: a directory that exists or can be created, and is writable;
- ``meta_file`` (heuristics_nas): a YAML or JSON schedule of known meta-parameters;
- ``from_sweep`` (equivariance, neurogenesis): an existing sweep directory of the same chapter,
  with a readable ``sweep.json`` and a finished point, in a resuming run;
- parameters that contradict each other, as the chapters state (:data:`RULES`).

Every refusal is an :class:`InputError` whose message is the one line the command line prints.
No module that a chapter imports imports this one: changing it leaves every stored run current.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from structlab.pipeline import chapters as _chapters
from structlab.pipeline.chapters import Chapter, ParameterError

__all__ = ["InputError", "read_parameter_file", "check_output", "check_device",
           "check_results_dir", "check_meta_file", "check_from_sweep", "check_rules",
           "check_values", "find_chapter", "RULES"]


class InputError(ParameterError):
    """Bad input of the command line, refused before any work starts (one line)."""


def _kind(value: Any) -> str:
    """``a list``, ``a string`` ...: what a YAML document holds, in words."""
    names = {list: "a list", str: "a string", int: "a number", float: "a number",
             bool: "a boolean"}
    return names.get(type(value), f"a {type(value).__name__}")


def read_parameter_file(path: str | os.PathLike[str], *, option: str = "-f",
                        accepts: str = "a mapping of parameter names to values") -> dict[str, Any]:
    """The mapping a YAML parameter file holds (an empty file is an empty mapping), or an
    :class:`InputError` naming the file and what is wrong with it."""
    where = f"{option} {os.fspath(path)}"
    file = Path(path)
    if not file.exists():
        raise InputError(f"{where}: no such file (give a YAML file holding {accepts})")
    if file.is_dir():
        raise InputError(f"{where}: is a directory, not a YAML file holding {accepts}")
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{where}: not a UTF-8 text file (give a YAML file holding "
                         f"{accepts})") \
            from None
    except OSError as err:
        raise InputError(f"{where}: cannot be read ({err.strerror or err})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        raise InputError(f"{where}: not valid YAML ({at}{problem})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(f"{where}: holds {_kind(data)}, not {accepts}")
    return data


def check_output(path: str | os.PathLike[str]) -> Path:
    """``-o``: where the executed notebook goes must be a file path whose directory exists or
    can be created and is writable."""
    out = Path(path)
    if out.is_dir():
        raise InputError(f"-o {os.fspath(path)}: is a directory; give the path of a notebook "
                         "(.ipynb) to write")
    _check_writable_dir(out.parent, f"-o {os.fspath(path)}: its directory")
    return out


#: The devices a chapter's ``device`` parameter accepts.
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")


def check_device(value: str, *, local: bool = True) -> None:
    """``device`` is ``auto``, ``cpu``, ``cuda`` or ``cuda:N``; with ``local``, a CUDA device must
    be one that torch sees on this machine."""
    if not DEVICE_PATTERN.fullmatch(value):
        raise InputError(f"parameter 'device' must be auto, cpu, cuda or cuda:N, got {value!r}")
    if not local or not value.startswith("cuda"):
        return
    import torch  # only here: torch takes seconds to import

    if not torch.cuda.is_available():
        raise InputError(f"parameter 'device' is {value!r}, but torch sees no CUDA GPU on this "
                         "machine: use auto or cpu")
    index = int(value.split(":")[1]) if ":" in value else 0
    count = torch.cuda.device_count()
    if index >= count:
        raise InputError(f"parameter 'device' is {value!r}, but torch sees {count} CUDA "
                         f"GPU{'s' if count != 1 else ''} (cuda:0 to cuda:{count - 1})")


def _check_writable_dir(directory: Path, what: str) -> None:
    """``directory`` exists as a writable directory or can be created (nothing is created)."""
    existing = directory
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        if existing == directory:
            raise InputError(f"{what} {os.fspath(directory)} is a file, not a directory")
        raise InputError(f"{what} {os.fspath(directory)} cannot be created: "
                         f"{os.fspath(existing)} is a file")
    try:  # os.access says yes to root even on a read-only file system: try it
        os.rmdir(tempfile.mkdtemp(prefix=".structlab-probe-", dir=existing))
    except OSError as err:
        reason = err.strerror or type(err).__name__
        if existing == directory:
            raise InputError(f"{what} {os.fspath(directory)} is not writable ({reason})") \
                from None
        raise InputError(f"{what} {os.fspath(directory)} cannot be created in "
                         f"{os.fspath(existing)} ({reason})") from None


def _from_checkout(value: str, root: Path) -> Path:
    """A path as the chapter's ``RunDirectory`` reads it: relative to the source checkout."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else root / path


def check_results_dir(value: str, root: Path | None = None) -> None:
    """``results_dir`` (relative to the checkout, as the notebook reads it) is a directory that
    exists or can be created, and is writable."""
    root = root or _chapters.project_root()
    if not value.strip():
        raise InputError("parameter 'results_dir' is empty: give a directory")
    _check_writable_dir(_from_checkout(value, root), "parameter 'results_dir':")


def check_meta_file(value: str, chapter: Chapter) -> None:
    """``meta_file``: "" or a YAML/JSON file (a mapping of meta-parameters or a non-empty list of
    them) that the notebook, which runs in ``chapters/``, finds, holding only known names."""
    if not value:
        return
    path = Path(value).expanduser()
    seen = path if path.is_absolute() else chapter.path.parent / path
    if not seen.is_file():
        if not path.is_absolute() and path.is_file():
            raise InputError(f"parameter 'meta_file': {value} is read from chapters/, where the "
                             f"notebook runs, and is not there; give its absolute path "
                             f"{path.resolve()}")
        what = "is a directory" if seen.is_dir() else "no such file"
        raise InputError(f"parameter 'meta_file': {what}: {value} (give a YAML or JSON file of "
                         "meta-parameters, absolute or relative to chapters/, or \"\" for none)")
    from structlab.heuristics.meta import MetaParams, MetaSource

    try:
        data = MetaSource(seen).read_file()
        entries = [data] if isinstance(data, Mapping) else data
        meta = MetaParams()
        for entry in entries:
            meta = meta.updated(entry)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        first = str(err).splitlines()[0]
        raise InputError(f"parameter 'meta_file': {value} is not valid "
                         f"{'JSON' if seen.suffix.lower() == '.json' else 'YAML'} ({first})") \
            from None
    except (ValueError, TypeError, UnicodeDecodeError) as err:
        raise InputError(f"parameter 'meta_file': {value}: {str(err).splitlines()[0]}") from None


def _sweeps_of(slug: str, root: Path) -> str:
    """The sweeps of ``slug`` under ``results/``, in words (for an error message)."""
    found = sorted(p.parent.relative_to(root).as_posix()
                   for p in (root / "results" / slug / "sweeps").glob("*/sweep.json"))
    if not found:
        return f"no sweep of {slug} yet: structlab sweep {slug} ... makes one"
    more = f" and {len(found) - 3} more" if len(found) > 3 else ""
    return f"sweeps of {slug}: {', '.join(found[:3])}{more}"


def check_from_sweep(value: str, chapter: Chapter, *, resume: bool | None = True,
                     root: Path | None = None) -> None:
    """``from_sweep``: "" or an existing sweep directory of this chapter (a readable
    ``sweep.json`` naming it) with a finished point, in a run that resumes."""
    if not value:
        return
    from structlab.pipeline.sweep import SweepError, check_sweep_directory

    root = root or _chapters.project_root()
    if resume is False:
        raise SweepError("from_sweep reads the sweep's finished experiments back: "
                         "it cannot be combined with --fresh")
    path = Path(value).expanduser()
    if not path.is_absolute() and not path.exists():
        path = root / path
    if not path.exists():
        raise InputError(f"from_sweep: no such directory {value} "
                         f"({_sweeps_of(chapter.slug, root)})")
    if not path.is_dir():
        raise InputError(f"from_sweep: {value} is a file, not a sweep directory "
                         f"({_sweeps_of(chapter.slug, root)})")
    record = path / "sweep.json"
    if record.is_file():
        try:
            swept = json.loads(record.read_text(encoding="utf-8"))["chapter"]
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
            detail = str(err).splitlines()[0] if str(err) else ""
            raise InputError(f"from_sweep: {record} is not a readable sweep record "
                             f"({type(err).__name__}: {detail}); run the sweep again to "
                             "rewrite it") from None
        if swept != chapter.slug:
            raise InputError(f"from_sweep: {value} is a sweep of {swept!r}, not of "
                             f"{chapter.slug!r} ({_sweeps_of(chapter.slug, root)})")
    check_sweep_directory(path, chapter.slug)


def _must_include(name: str, needed: tuple[str, ...], why: str) -> Callable[[dict], str | None]:
    def rule(values: dict[str, Any]) -> str | None:
        missing = [v for v in needed if v not in values[name]]
        if missing:
            return (f"parameter {name!r} must include {' and '.join(needed)} ({why}), got "
                    f"{values[name]!r}")
        return None
    return rule


def _increasing(name: str) -> Callable[[dict], str | None]:
    def rule(values: dict[str, Any]) -> str | None:
        if list(values[name]) != sorted(values[name]):
            return f"parameter {name!r} must be increasing, got {values[name]!r}"
        return None
    return rule


def _greater(name: str, other: str) -> Callable[[dict], str | None]:
    def rule(values: dict[str, Any]) -> str | None:
        if not values[name] > values[other]:
            return (f"parameter {name!r} must be greater than {other} ({values[other]!r}), got "
                    f"{values[name]!r}")
        return None
    return rule


#: The targets each pretrained source of grow_and_prune transfers to
#: (``structlab.growprune.transfer.BOOK_TARGETS`` and ``FULLSCALE_TARGETS``; a test keeps them
#: equal).
GROW_PRUNE_TARGETS = {"book": ("fashion-5-9", "mnist5k"),
                      "imagenet-vgg11": ("imagenette", "imagewoof", "galaxy10")}


def _targets_of_source(values: dict[str, Any]) -> str | None:
    allowed = GROW_PRUNE_TARGETS.get(values["source"], ())
    wrong = [t for t in values["targets"] if t not in allowed]
    if wrong or not values["targets"]:
        return (f"parameter 'targets' must be among {', '.join(allowed)} with source "
                f"{values['source']!r}, got {values['targets']!r}")
    return None


_DARTS_WHY = "the chapter compares them"

#: Rules between parameters, per chapter, as its notebook states them (its parameter comments,
#: or a check its code makes once the kernel has started): each gives the one line of refusal,
#: or None.
RULES: dict[str, list[Callable[[dict[str, Any]], str | None]]] = {
    "darts_prime": [_must_include(n, ("DARTS", "DARTS-PRIME"), _DARTS_WHY)
                    for n in ("variants", "long_variants", "rnn_variants")],
    "grow_and_prune": [_targets_of_source],
    "neural_operators": [_increasing("sparsities")],
    "neurogenesis": [_increasing("nf_values"), _greater("nf_buffer", "nf_max_width")],
}


def check_rules(chapter: Chapter, values: dict[str, Any]) -> None:
    """Refuse parameters that contradict each other (:data:`RULES`)."""
    for rule in RULES.get(chapter.slug, []):
        message = rule(values)
        if message is not None:
            raise InputError(message)


def check_values(chapter: Chapter, values: dict[str, Any], *, resume: bool | None = None,
                 local: bool = True, root: Path | None = None) -> None:
    """Every check of this module on a run's resolved parameters ``values``.

    ``local=False`` (a sweep that may run on other machines) checks the device's spelling only;
    ``values`` without ``results_dir`` (a sweep sets each point's) skip that check.
    """
    declared = chapter.parameters
    if "device" in declared and "device" in values:
        check_device(str(values["device"]), local=local)
    if "results_dir" in declared and "results_dir" in values:
        check_results_dir(str(values["results_dir"]), root)
    if "meta_file" in declared:
        check_meta_file(str(values.get("meta_file") or ""), chapter)
    if "from_sweep" in declared:
        check_from_sweep(str(values.get("from_sweep") or ""), chapter, resume=resume, root=root)
    check_rules(chapter, values)


def find_chapter(slug: str, root: Path | None = None) -> Chapter:
    """The chapter ``slug``, or an :class:`InputError` naming the chapters (and the closest)."""
    known = [c.slug for c in _chapters.list_chapters(root)]
    if slug in known:
        return _chapters.get_chapter(slug, root)
    close = difflib.get_close_matches(slug, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise InputError(f"unknown chapter {slug!r}{hint}; chapters: {', '.join(known)}")
