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
from structlab.pipeline.execute import build_book, chapter_stamp, is_up_to_date, run_chapter

__all__ = [
    "Chapter",
    "Parameter",
    "ParameterError",
    "build_book",
    "chapter_stamp",
    "get_chapter",
    "is_up_to_date",
    "list_chapters",
    "parse_cli_value",
    "project_root",
    "run_chapter",
]
