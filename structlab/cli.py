"""Command line: ``structlab list | run | status | book | data``.

Examples::

    structlab list                                   # chapters, parameters and accepted values
    structlab run neurogenesis                       # smoke profile -> tests/notebooks/
    structlab run neurogenesis --profile book        # what the book shows -> chapters/
    structlab run neurogenesis --profile book --fresh  # ... not resuming finished experiments
    structlab run neurogenesis --profile full        # thesis scale (GPU), under results/
    structlab run neurogenesis -p epochs 5 -p seed 1 # other parameters, under results/
    structlab run neurogenesis -f my-params.yaml -o my-run.ipynb
    structlab status                                 # which stored runs the code no longer makes
    structlab scorecard [--write]                    # the sources' claims: verdicts of the book
    structlab sweep neurogenesis --seeds 0-2         # 3 seeds as Ray tasks (local Ray runtime)
    structlab sweep neurogenesis --seeds 0-4 -p lr 0.05,0.1 --address ray://head:10001
    structlab sweep neurogenesis --seeds 0-2 --report   # mean ± std over seeds
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

from structlab.numerics import MODES
from structlab.pipeline.chapters import (
    PROFILES,
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
            rule = f"  [{p.constraint}]" if p.constraint else ""
            print(f"    {p.name}: {p.type_name} = {p.default!r}{rule}{note}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from structlab.pipeline.execute import run_chapter

    chapter = get_chapter(args.chapter)
    overrides: dict = {}
    for file in args.file or []:
        overrides.update(load_yaml(Path(file)))
    for name, value in args.param or []:
        overrides[name] = parse_cli_value(value)
    values = chapter.resolve(args.profile, overrides)  # refuse bad parameters before any run
    if values.get("from_sweep"):
        from structlab.pipeline.sweep import SweepError, check_sweep_directory

        check_sweep_directory(values["from_sweep"], chapter.slug)
        if args.resume is False:
            raise SweepError("from_sweep reads the sweep's finished experiments back: "
                             "it cannot be combined with --fresh")
    out = run_chapter(chapter, profile=args.profile, overrides=overrides,
                      output=Path(args.output) if args.output else None,
                      progress=not args.quiet, numerics=args.numerics, resume=args.resume)
    print(f"structlab: executed notebook written to {out}")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from structlab.pipeline.execute import default_output, stale

    outdated = 0
    for chapter in list_chapters():
        for profile in ("smoke", "book"):
            reasons = stale(chapter, profile)
            where = default_output(chapter, profile, {}).relative_to(chapter.path.parents[1])
            if reasons:
                outdated += 1
                print(f"{chapter.slug} [{profile}] {where}: OUT OF DATE: " + "; ".join(reasons))
                print(f"    fix: structlab run {chapter.slug} --profile {profile}")
            else:
                print(f"{chapter.slug} [{profile}] {where}: up to date")
    print(_scorecard_line())
    return 1 if outdated else 0


def _scorecard_line() -> str:
    from structlab.evidence.scorecard import collect, totals

    counts = totals(collect())
    return (f"scorecard ({sum(counts.values())} claims of CLAIMS.md, stored book runs): "
            + ", ".join(f"{n} {verdict}" for verdict, n in counts.items()))


def _cmd_scorecard(args: argparse.Namespace) -> int:
    from structlab.evidence.scorecard import collect, page_path, render, write_page

    if args.write:
        path, changed = write_page()
        print(f"structlab: {path.relative_to(path.parents[1])} "
              + ("rewritten" if changed else "is current"))
    elif args.check:
        if page_path().read_text(encoding="utf-8") != render(collect()):
            print("structlab: book/scorecard.md is not current: structlab scorecard --write",
                  file=sys.stderr)
            return 1
    print(_scorecard_line())
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from structlab.pipeline.sweep import aggregate, parse_seeds, parse_values, plan_sweep

    chapter = get_chapter(args.chapter)
    grid: dict = {}
    for file in args.file or []:
        for name, values in load_yaml(Path(file)).items():
            grid[name] = values if isinstance(values, list) else [values]
    for name, values in args.param or []:
        grid[name] = parse_values(values)
    seeds = parse_seeds(args.seeds) if args.seeds else None
    sweep = plan_sweep(chapter, profile=args.profile, seeds=seeds, grid=grid)
    where = sweep.directory.relative_to(chapter.path.parents[1])
    if not args.report:
        try:
            import ray  # noqa: F401
        except ImportError:
            print("structlab: error: sweeps run on Ray, which is not installed: "
                  "pip install -e '.[sweep]'", file=sys.stderr)
            return 2
        from structlab.pipeline.sweep import run_sweep

        print(f"structlab: sweep of {len(sweep.points)} points of {chapter.slug} "
              f"({args.profile} profile) in {where}")
        outcome = run_sweep(sweep, address=args.address, retries=args.retries,
                            cpus_per_task=args.cpus_per_task, gpus_per_task=args.gpus_per_task,
                            num_cpus=args.num_cpus, numerics=args.numerics,
                            progress=not args.quiet)
        print(f"structlab: {len(outcome['done'])} done, {len(outcome['skipped'])} already "
              f"finished, {len(outcome['failed'])} failed")
        if outcome["failed"]:
            print("structlab: run the same command again to retry the failed points",
                  file=sys.stderr)
    table = aggregate(sweep.directory)
    print(f"structlab: aggregated table (mean ± std over seeds): {where / 'report.md'} "
          f"({len(table)} rows; CSV: {where / 'report.csv'})")
    return 1 if not args.report and outcome["failed"] else 0


def _cmd_book(args: argparse.Namespace) -> int:
    from structlab.evidence.scorecard import write_page
    from structlab.pipeline.execute import build_book

    write_page()  # the scorecard page from the stored book runs (rewritten only when it changed)
    build_book(execute=not args.no_execute, force=args.force, quiet=args.quiet,
               strict=not args.no_strict)
    return 0


FASHION_PACKAGE = "dataset-fashion-mnist"


def _install_debian_package(package: str = FASHION_PACKAGE) -> bool:
    """Install a Debian dataset package (Fashion-MNIST, WordNet) when running as root with
    apt-get available."""
    if shutil.which("apt-get") is None or not hasattr(os, "geteuid") or os.geteuid() != 0:
        return False
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", package]
    if subprocess.run(install, env=env, capture_output=True).returncode == 0:
        return True
    subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True)
    return subprocess.run(install, env=env, capture_output=True).returncode == 0


def _cmd_data(args: argparse.Namespace) -> int:
    from structlab.data import DATASETS, data_root, load_dataset
    from structlab.data.offline import find_fashion_mnist
    from structlab.data.text import CORPORA, WORDNET_PACKAGE, find_wordnet, load_corpus

    if args.action == "list":
        print(f"cache: {data_root()}")
        for name, spec in DATASETS.items():
            kind = "offline" if spec.offline else "download"
            print(f"  {name:14s} [{kind}] {spec.description}")
        for name, description in CORPORA.items():
            kind = "offline" if name == "wordnet" else "download"
            print(f"  {name:14s} [{kind}, text] {description}")
        return 0
    if args.action == "setup":
        if find_fashion_mnist() is None:
            print(f"structlab: installing the Debian package {FASHION_PACKAGE} ...")
            if not _install_debian_package():
                print("structlab: apt-get is not available (or not root); Fashion-MNIST will be "
                      "downloaded by torchvision on first use")
        if find_wordnet() is None:
            print(f"structlab: installing the Debian package {WORDNET_PACKAGE} ...")
            if not _install_debian_package(WORDNET_PACKAGE):
                print(f"structlab: apt-get is not available (or not root); the 'wordnet' corpus "
                      f"needs `apt-get install {WORDNET_PACKAGE}`")
        for name, spec in DATASETS.items():
            if spec.offline:
                data = load_dataset(name, "train")
                print(f"structlab: {name:14s} ok ({len(data)} training examples)")
        if find_wordnet() is not None:
            corpus = load_corpus("wordnet")
            print(f"structlab: {'wordnet':14s} ok ({corpus.train.numel()} training tokens, "
                  f"{corpus.ntoken} words)")
        return 0
    if args.action == "fetch":
        for name in args.names:
            if name.lower() in CORPORA:
                corpus = load_corpus(name, download=True)
                print(f"structlab: {name}: {corpus!r}")
                continue
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
    run.add_argument("--profile", choices=list(PROFILES), default="smoke",
                     help="smoke (the defaults, CI), book (what the book shows), full (the "
                          "source's setting, for a GPU)")
    run.add_argument("--numerics", choices=list(MODES), default=None,
                     help="CPU numerics of the kernel (default: portable for smoke and book, "
                          "native for full; see structlab.numerics)")
    run.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"),
                     help="set a parameter (value parsed as YAML); repeatable")
    run.add_argument("-f", "--file", action="append", help="YAML file of parameters; repeatable")
    run.add_argument("-o", "--output", help="where to write the executed notebook")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    resume = run.add_mutually_exclusive_group()
    resume.add_argument("--resume", dest="resume", action="store_true", default=None,
                        help="read back the experiments an interrupted run of the same code and "
                             "parameters finished (the default for book and full)")
    resume.add_argument("--fresh", dest="resume", action="store_false",
                        help="run every experiment again (the default for smoke)")
    run.set_defaults(func=_cmd_run)

    sweep = sub.add_parser("sweep", help="run a chapter over seeds and a parameter grid on Ray")
    sweep.add_argument("chapter", help="chapter slug (see `structlab list`)")
    sweep.add_argument("--profile", choices=list(PROFILES), default="smoke")
    sweep.add_argument("--seeds", help="seeds: a range 0-4, a list 0,3,7, or both")
    sweep.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUES"),
                       help="a grid axis: comma-separated values, each parsed as YAML")
    sweep.add_argument("-f", "--file", action="append",
                       help="YAML grid: a mapping of parameter names to lists of values")
    sweep.add_argument("--address", help="join a Ray cluster (host:port from `ray start`, "
                                         "ray://host:port, or auto); default: a local runtime")
    sweep.add_argument("--num-cpus", type=int, default=None,
                       help="CPUs of the local runtime (default: all of this machine's)")
    sweep.add_argument("--cpus-per-task", type=float, default=1)
    sweep.add_argument("--gpus-per-task", type=float, default=None,
                       help="default: 1 for the full profile on a cluster with GPUs, else 0")
    sweep.add_argument("--retries", type=int, default=2,
                       help="times Ray retries a point whose worker died or that failed")
    sweep.add_argument("--numerics", choices=list(MODES), default=None)
    sweep.add_argument("--report", action="store_true",
                       help="only aggregate the finished points (mean ± std over seeds)")
    sweep.add_argument("-q", "--quiet", action="store_true")
    sweep.set_defaults(func=_cmd_sweep)

    status = sub.add_parser("status", help="which stored smoke and book runs are out of date")
    status.set_defaults(func=_cmd_status)

    card = sub.add_parser("scorecard", help="the verdicts of the stored book runs on the "
                                            "sources' claims (CLAIMS.md): totals and page")
    card.add_argument("--write", action="store_true",
                      help="rewrite book/scorecard.md from the stored book runs")
    card.add_argument("--check", action="store_true",
                      help="exit 1 when book/scorecard.md is not current")
    card.set_defaults(func=_cmd_scorecard)

    book = sub.add_parser("book", help="execute out-of-date chapters and build the HTML book")
    book.add_argument("--force", action="store_true", help="re-execute every chapter")
    book.add_argument("--execute", dest="no_execute", action="store_false",
                      help="execute the chapters whose book run is out of date (the default)")
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
    except (ParameterError, ValueError, FileNotFoundError) as err:  # SweepError is a ValueError
        print(f"structlab: error: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:  # missing data: one line, no traceback
        from structlab.data.base import DatasetUnavailableError

        if not isinstance(err, DatasetUnavailableError):
            raise
        print(f"structlab: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
