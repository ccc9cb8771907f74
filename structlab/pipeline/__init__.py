"""The papermill pipeline: chapters, their parameters, execution and the book build."""

from structlab.pipeline.chapters import (
    Chapter,
    Parameter,
    ParameterError,
    get_chapter,
    list_chapters,
    parse_cli_value,
    project_root,
)
from structlab.pipeline.execute import (
    build_book,
    default_output,
    expected_stamp,
    run_chapter,
    stale,
)

__all__ = [
    "Chapter",
    "Parameter",
    "ParameterError",
    "build_book",
    "default_output",
    "expected_stamp",
    "get_chapter",
    "list_chapters",
    "parse_cli_value",
    "project_root",
    "run_chapter",
    "stale",
]
