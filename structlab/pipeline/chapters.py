"""The book's chapters (from ``_toc.yml``), their declared parameters and their profiles.

A chapter is a notebook under ``chapters/`` listed in ``_toc.yml``; its parameters are the
assignments of its cell tagged ``parameters`` (``epochs: int = 3`` or ``epochs = 3``), whose
values are the **smoke** profile (what CI executes). A comment after a parameter describes it, and
the part after its last ``" | "`` declares the values it accepts::

    epochs: int = 5  # MLP epochs | at least 1
    lr: float = 0.05  # SGD learning rate | > 0
    fraction: float = 0.1  # validation share | in [0, 1)
    arch: str = "mlp"  # connection-level network | one of mlp, vgg11

Rules: ``> x``, ``< x``, ``at least x``, ``at most x``, ``in [a, b]`` (brackets or parentheses,
``inf`` allowed), ``one of a, b``, joined with ``and``. Prefer words to ``>=`` / ``<=`` (also
accepted): papermill reads a line with a second ``=`` as no parameter and warns. For a list the
constraint applies to every element.

The **book** and **full** profiles are ``chapters/params/<slug>-book.yaml`` and
``chapters/params/<slug>-full.yaml``: overrides of the defaults, checked like command-line values.
"""

from __future__ import annotations

import ast
import math
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import nbformat
import yaml

__all__ = ["Parameter", "Chapter", "ParameterError", "project_root", "list_chapters",
           "get_chapter", "parse_cli_value"]


class ParameterError(ValueError):
    """A parameter the notebook does not declare, or a value of the wrong type or range."""


PROFILES = ("smoke", "book", "full")


def project_root() -> Path:
    """The checkout holding ``_toc.yml`` (the package must be installed in editable mode)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "_toc.yml").is_file():
        raise FileNotFoundError(
            f"no _toc.yml in {root}: the pipeline runs from a source checkout of structlab "
            "(pip install -e .)"
        )
    return root


_SCALARS: dict[str, type] = {"int": int, "float": float, "str": str, "bool": bool}


@dataclass(frozen=True)
class Parameter:
    """One declared parameter: its name, type name (``int``, ``list[float]`` ...) and default."""

    name: str
    type_name: str
    default: Any
    comment: str = ""
    constraint: str = ""

    def coerce(self, value: Any) -> Any:
        """``value`` converted to this parameter's type and checked against its constraint."""
        value = _coerce(self.name, self.type_name, value)
        if self.constraint:
            items = value if isinstance(value, list) else [value]
            for item in items:
                if not _satisfies(item, self.constraint):
                    raise ParameterError(
                        f"parameter {self.name!r} must be {self.constraint}, got {value!r}"
                    )
        return value


_CONSTRAINT = re.compile(
    r"^(?:(?P<op>at least|at most|>=|<=|>|<)\s*(?P<bound>\S+)"
    r"|in\s*(?P<lo_b>[\[(])\s*(?P<lo>[^,]+),\s*(?P<hi>[^\])]+?)\s*(?P<hi_b>[\])])"
    r"|one of\s+(?P<choices>.+))$"
)


def _number(text: str) -> float:
    text = text.strip()
    if text in {"inf", "+inf"}:
        return math.inf
    if text == "-inf":
        return -math.inf
    return float(text)


def check_constraint(constraint: str) -> str:
    """``constraint`` if it is well formed (see the module docstring), else a ``ValueError``."""
    for part in constraint.split(" and "):
        match = _CONSTRAINT.match(part.strip())
        if match is None:
            raise ValueError(f"malformed parameter constraint {part!r}: use 'at least 1', "
                             "'> 0', 'in [0, 1)' or 'one of a, b'")
        try:
            for key in ("bound", "lo", "hi"):
                if match[key] is not None:
                    _number(match[key])
        except ValueError as err:
            raise ValueError(f"malformed bound in parameter constraint {part!r}") from err
    return constraint


def _satisfies(value: Any, constraint: str) -> bool:
    for part in constraint.split(" and "):
        match = _CONSTRAINT.match(part.strip())
        assert match is not None, constraint
        if match["choices"] is not None:
            choices = [c.strip() for c in match["choices"].split(",")]
            if str(value) not in choices:
                return False
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if match["op"] is not None:
            bound = _number(match["bound"])
            op = {">=": "at least", "<=": "at most"}.get(match["op"], match["op"])
            ok = {"at least": value >= bound, "at most": value <= bound, ">": value > bound,
                  "<": value < bound}[op]
        else:
            lo, hi = _number(match["lo"]), _number(match["hi"])
            ok = ((value >= lo) if match["lo_b"] == "[" else (value > lo)) and (
                (value <= hi) if match["hi_b"] == "]" else (value < hi))
        if not ok:
            return False
    return True


def _type_name_of(value: Any) -> str:
    if isinstance(value, list):
        inner = {_type_name_of(v) for v in value}
        if inner == {"int", "float"}:
            inner = {"float"}
        return f"list[{inner.pop()}]" if len(inner) == 1 else "list"
    if value is None:
        return "any"
    return type(value).__name__


def _coerce(name: str, type_name: str, value: Any) -> Any:
    def fail() -> ParameterError:
        return ParameterError(
            f"parameter {name!r} expects {type_name}, got {value!r} ({type(value).__name__})"
        )

    if type_name == "any":
        return value
    if type_name.startswith("list"):
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise fail()
        inner = type_name[5:-1] if type_name.startswith("list[") else "any"
        return [_coerce(f"{name}[{i}]", inner, v) for i, v in enumerate(value)]
    if type_name == "bool":
        if isinstance(value, bool):
            return value
        raise fail()
    if type_name == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise fail()
    if type_name == "float":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise fail() from None
        raise fail()
    if type_name == "str":
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise fail()
    raise ParameterError(f"parameter {name!r} has an unsupported type {type_name!r}")


def parse_cli_value(text: str) -> Any:
    """A command-line value as YAML: ``3`` -> 3, ``0.1`` -> 0.1, ``true`` -> True, ``[1, 2]``."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _parameters_of(cell_source: str, where: str) -> dict[str, Parameter]:
    tree = ast.parse(cell_source)
    lines = cell_source.splitlines()
    params: dict[str, Parameter] = {}
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            target, value_node = node.target.id, node.value
            annotation: str | None = ast.unparse(node.annotation)
        elif (isinstance(node, ast.Assign) and len(node.targets) == 1
              and isinstance(node.targets[0], ast.Name)):
            target, annotation, value_node = node.targets[0].id, None, node.value
        else:
            continue
        try:
            default = ast.literal_eval(value_node) if value_node is not None else None
        except ValueError as err:
            raise ValueError(f"{where}: parameter {target!r} must have a literal default") from err
        type_name = annotation or _type_name_of(default)
        type_name = type_name.replace("List", "list").replace(" ", "")
        if type_name not in _SCALARS and not type_name.startswith("list") and type_name != "any":
            raise ValueError(f"{where}: parameter {target!r} has unsupported type {type_name!r}")
        line = lines[node.lineno - 1]
        comment = line.split("#", 1)[1].strip() if "#" in line else ""
        constraint = ""
        if " | " in comment:
            comment, constraint = (x.strip() for x in comment.rsplit(" | ", 1))
            try:
                check_constraint(constraint)
            except ValueError as err:
                raise ValueError(f"{where}: parameter {target!r}: {err}") from None
        parameter = Parameter(target, type_name, default, comment, constraint)
        try:
            parameter.coerce(default)
        except ParameterError as err:
            raise ValueError(f"{where}: the default of {target!r} breaks its own rule: {err}") \
                from None
        params[target] = parameter
    return params


@dataclass(frozen=True)
class Chapter:
    """A chapter notebook of the book."""

    slug: str
    path: Path

    @cached_property
    def notebook(self) -> nbformat.NotebookNode:
        return nbformat.read(self.path, as_version=4)

    @property
    def title(self) -> str:
        for cell in self.notebook.cells:
            if cell.cell_type == "markdown":
                for line in cell.source.splitlines():
                    if line.startswith("# "):
                        return line[2:].strip()
        return self.slug

    @cached_property
    def parameters(self) -> dict[str, Parameter]:
        cells = [c for c in self.notebook.cells
                 if c.cell_type == "code" and "parameters" in c.metadata.get("tags", [])]
        if len(cells) != 1:
            raise ValueError(f"{self.path} must have exactly one cell tagged 'parameters', "
                             f"found {len(cells)}")
        return _parameters_of(cells[0].source, str(self.path))

    def profile_path(self, name: str) -> Path:
        """``chapters/params/<slug>-<name>.yaml`` (smoke has none: it is the defaults)."""
        return self.path.parent / "params" / f"{self.slug}-{name}.yaml"

    @property
    def full_params_path(self) -> Path:
        return self.profile_path("full")

    def profile(self, name: str) -> dict[str, Any]:
        """The parameter overrides of a profile: none for ``smoke``, the YAML file otherwise."""
        if name not in PROFILES:
            raise ParameterError(f"unknown profile {name!r}: use one of {', '.join(PROFILES)}")
        if name == "smoke":
            return {}
        path = self.profile_path(name)
        if not path.is_file():
            raise FileNotFoundError(f"chapter {self.slug!r} has no {name} profile: {path}")
        try:
            return self.validate(load_yaml(path))
        except ParameterError as err:
            raise ParameterError(f"{path}: {err}") from None

    def resolve(self, profile: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        """Every parameter's value for a run: defaults, then the profile, then ``overrides``."""
        values = {name: p.default for name, p in self.parameters.items()}
        values.update(self.profile(profile))
        values.update(self.validate(dict(overrides or {})))
        return values

    def validate(self, overrides: dict[str, Any]) -> dict[str, Any]:
        """Check names and types of ``overrides`` against the declared parameters."""
        accepted = self.parameters
        checked = {}
        for name, value in overrides.items():
            if name not in accepted:
                names = ", ".join(accepted)
                raise ParameterError(
                    f"chapter {self.slug!r} has no parameter {name!r}; it accepts: {names}"
                )
            checked[name] = accepted[name].coerce(value)
        return checked


def load_yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ParameterError(f"{path} must hold a mapping of parameter names to values")
    return data


def list_chapters(root: Path | None = None) -> list[Chapter]:
    """The chapters of ``_toc.yml``, in the book's order."""
    root = root or project_root()
    toc = yaml.safe_load((root / "_toc.yml").read_text(encoding="utf-8"))
    files: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "file" in node:
                files.append(node["file"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(toc)
    chapters = []
    for file in files:
        path = root / file
        if path.parent.name == "chapters":
            path = path.with_suffix(".ipynb")
            chapters.append(Chapter(path.stem, path))
    return chapters


def get_chapter(slug: str, root: Path | None = None) -> Chapter:
    chapters = list_chapters(root)
    for chapter in chapters:
        if chapter.slug == slug:
            return chapter
    known = ", ".join(c.slug for c in chapters)
    raise ValueError(f"unknown chapter {slug!r}; chapters: {known}")
