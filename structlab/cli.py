"""Command line: ``structlab list | run | book | data``.

Examples::

    structlab list                                   # chapters and their parameters
    structlab run neurogenesis                       # quick profile, in place
    structlab run neurogenesis --profile full        # thesis scale (GPU), under results/
    structlab run neurogenesis -p epochs 5 -p seed 1 # other parameters, under results/
    structlab run neurogenesis -f my-params.yaml -o my-run.ipynb
    structlab book                                   # execute what is out of date, build HTML
    structlab data list | setup | fetch cifar10
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

from structlab.pipeline.chapters import (
    ParameterError,
    get_chapter,
    list_chapters,
    load_yaml,
    parse_cli_value,
)

__all__ = ["main"]


def _cmd_list(args: argparse.Namespace) -> int:
    for chapter in list_chapters():
        full = "yes" if chapter.full_params_path.is_file() else "no"
        print(f"{chapter.slug}  —  {chapter.title}  (full profile: {full})")
        for p in chapter.parameters.values():
            note = f"  # {p.comment}" if p.comment else ""
            print(f"    {p.name}: {p.type_name} = {p.default!r}{note}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from structlab.pipeline.execute import run_chapter

    chapter = get_chapter(args.chapter)
    overrides: dict = {}
    for file in args.file or []:
        overrides.update(load_yaml(Path(file)))
    for name, value in args.param or []:
        overrides[name] = parse_cli_value(value)
    chapter.validate(overrides)  # refuse bad parameters before anything runs
    out = run_chapter(chapter, profile=args.profile, overrides=overrides,
                      output=Path(args.output) if args.output else None,
                      progress=not args.quiet)
    print(f"structlab: executed notebook written to {out}")
    return 0


def _cmd_book(args: argparse.Namespace) -> int:
    from structlab.pipeline.execute import build_book

    build_book(execute=not args.no_execute, force=args.force, quiet=args.quiet,
               strict=not args.no_strict)
    return 0


FASHION_PACKAGE = "dataset-fashion-mnist"


def _install_fashion_mnist() -> bool:
    """Install Debian's Fashion-MNIST package when running as root with apt-get available."""
    if shutil.which("apt-get") is None or not hasattr(os, "geteuid") or os.geteuid() != 0:
        return False
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", FASHION_PACKAGE]
    if subprocess.run(install, env=env, capture_output=True).returncode == 0:
        return True
    subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True)
    return subprocess.run(install, env=env, capture_output=True).returncode == 0


def _cmd_data(args: argparse.Namespace) -> int:
    from structlab.data import DATASETS, data_root, load_dataset
    from structlab.data.offline import find_fashion_mnist

    if args.action == "list":
        print(f"cache: {data_root()}")
        for name, spec in DATASETS.items():
            kind = "offline" if spec.offline else "download"
            print(f"  {name:14s} [{kind}] {spec.description}")
        return 0
    if args.action == "setup":
        if find_fashion_mnist() is None:
            print(f"structlab: installing the Debian package {FASHION_PACKAGE} ...")
            if not _install_fashion_mnist():
                print("structlab: apt-get is not available (or not root); Fashion-MNIST will be "
                      "downloaded by torchvision on first use")
        for name, spec in DATASETS.items():
            if spec.offline:
                data = load_dataset(name, "train")
                print(f"structlab: {name:14s} ok ({len(data)} training examples)")
        return 0
    if args.action == "fetch":
        for name in args.names:
            for split in ("train", "test"):
                data = load_dataset(name, split, download=True)
                print(f"structlab: {name}/{split}: {len(data)} examples")
        return 0
    raise AssertionError(args.action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="structlab", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list chapters and their parameters").set_defaults(func=_cmd_list)

    run = sub.add_parser("run", help="execute one chapter through papermill")
    run.add_argument("chapter", help="chapter slug (see `structlab list`)")
    run.add_argument("--profile", choices=["quick", "full"], default="quick")
    run.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"),
                     help="set a parameter (value parsed as YAML); repeatable")
    run.add_argument("-f", "--file", action="append", help="YAML file of parameters; repeatable")
    run.add_argument("-o", "--output", help="where to write the executed notebook")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    run.set_defaults(func=_cmd_run)

    book = sub.add_parser("book", help="execute out-of-date chapters and build the HTML book")
    book.add_argument("--force", action="store_true", help="re-execute every chapter")
    book.add_argument("--no-execute", action="store_true", help="build from stored outputs")
    book.add_argument("--no-strict", action="store_true", help="do not fail on Sphinx warnings")
    book.add_argument("-q", "--quiet", action="store_true")
    book.set_defaults(func=_cmd_book)

    data = sub.add_parser("data", help="datasets: list, set up offline ones, fetch others")
    data.add_argument("action", choices=["list", "setup", "fetch"])
    data.add_argument("names", nargs="*", help="datasets to fetch")
    data.set_defaults(func=_cmd_data)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ParameterError, ValueError, FileNotFoundError) as err:
        print(f"structlab: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
