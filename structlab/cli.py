"""Command line: ``structlab list | run | status | book | data | sweep | lab | gpu-check``.

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
    structlab lab                                    # the notebooks in JupyterLab (root too)
    structlab gpu-check                              # device tests + every chapter on CUDA

Bad input is refused in one line before any work starts (``structlab: error: ...``, exit code 2);
an error inside a chapter ends in one line ``structlab: <chapter> failed: <error>: <message>
(partial notebook: <path>)`` with exit code 1. ``--traceback`` shows the traceback as well.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr
from pathlib import Path
from typing import Any, NoReturn

from structlab.numerics import MODES
from structlab.pipeline import chapters as _chapters
from structlab.pipeline.chapters import PROFILES, ParameterError, list_chapters, parse_cli_value
from structlab.pipeline.checks import (
    InputError,
    check_output,
    check_values,
    find_chapter,
    read_parameter_file,
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


class ChapterFailed(Exception):
    """A chapter's notebook raised (or its kernel died): what the command line says in one line.
    The original error is the ``__cause__``."""

    def __init__(self, slug: str, error: BaseException, partial: Path | None) -> None:
        self.slug, self.error, self.partial = slug, error, partial
        super().__init__(self.line())

    def line(self) -> str:
        """``structlab: <chapter> failed: <ExceptionName>: <message> (partial notebook: ...)``."""
        ename = getattr(self.error, "ename", None) or type(self.error).__name__
        evalue = getattr(self.error, "evalue", None)
        message = str(self.error) if evalue is None else str(evalue)
        message = " ".join(line.strip() for line in message.splitlines() if line.strip())
        where = f" (partial notebook: {_shown(self.partial)})" if self.partial else ""
        return f"structlab: {self.slug} failed: {ename}: {message}".rstrip(": ") + where


def _shown(path: Path) -> str:
    """``path`` relative to the checkout when it is inside it."""
    root = _chapters.project_root()
    path = Path(path)
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)


class _FailureLine(io.TextIOBase):
    """stderr, less the line :func:`~structlab.pipeline.execute.run_chapter` prints when a chapter
    fails (``structlab: <slug> failed; the partial notebook is <path>``), which it records."""

    MARK = " failed; the partial notebook is "

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.failed: dict[str, Path] = {}
        self._pending = ""

    def write(self, text: str) -> int:
        self._pending += text
        while "\n" in self._pending:
            line, self._pending = self._pending.split("\n", 1)
            if line.startswith("structlab: ") and self.MARK in line:
                slug, path = line[len("structlab: "):].split(self.MARK, 1)
                self.failed[slug] = Path(path)
            else:
                self.stream.write(line + "\n")
        if self._pending and not self._pending.startswith("structlab: "[:len(self._pending)]):
            self.stream.write(self._pending)  # progress bars write without a newline
            self._pending = ""
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def finish(self) -> None:
        """Write what is held back of an unfinished line."""
        if self._pending:
            self.stream.write(self._pending)
            self._pending = ""
        self.stream.flush()

    def isatty(self) -> bool:
        return bool(getattr(self.stream, "isatty", lambda: False)())

    def fileno(self) -> int:
        return self.stream.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.stream, "encoding", "utf-8")


@contextmanager
def _chapter_failures(slug: str | None = None) -> Iterator[None]:
    """Turn an error raised while chapters execute into :class:`ChapterFailed` (one line)."""
    stderr = _FailureLine(sys.stderr)
    try:
        with redirect_stderr(stderr):
            yield
    except (KeyboardInterrupt, Exception) as err:
        stderr.write("\n" if stderr._pending else "")
        failed = slug if slug is not None else next(reversed(stderr.failed), None)
        if failed is None or failed not in stderr.failed:
            raise  # not from inside a notebook: main() says what it is
        raise ChapterFailed(failed, err, stderr.failed.get(failed)) from err
    finally:
        stderr.finish()


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for file in args.file or []:
        overrides.update(read_parameter_file(file))
    for name, value in args.param or []:
        overrides[name] = parse_cli_value(value)
    return overrides


def _results_dir(values: dict[str, Any]) -> Path | None:
    value = values.get("results_dir")
    if not value:
        return None
    path = Path(str(value)).expanduser()
    return path if path.is_absolute() else _chapters.project_root() / path


def _report_cleaned(cleaned: list[tuple[int, list[Path]]]) -> None:
    """One line per killed run whose temporary files were removed."""
    for pid, removed in cleaned:
        if removed:
            print(f"structlab: removed {len(removed)} temporary file"
                  f"{'s' if len(removed) != 1 else ''} of a killed run (pid {pid}): "
                  + ", ".join(_shown(p) for p in removed))


def _cmd_run(args: argparse.Namespace) -> int:
    from structlab.pipeline.execute import default_output, run_chapter
    from structlab.pipeline.runs import registered_run

    chapter = find_chapter(args.chapter)
    overrides = _overrides(args)
    values = chapter.resolve(args.profile, overrides)  # refuse bad parameters before any run
    output = check_output(args.output) if args.output else None
    check_values(chapter, values, resume=args.resume)
    notebook_dir = (output or default_output(chapter, args.profile, overrides)).parent
    with registered_run(chapter.slug, notebook_dir, _results_dir(values)) as cleaned:
        _report_cleaned(cleaned)
        with _chapter_failures(chapter.slug):
            out = run_chapter(chapter, profile=args.profile, overrides=overrides, output=output,
                              progress=not args.quiet, numerics=args.numerics,
                              resume=args.resume)
    print(f"structlab: executed notebook written to {out}")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from structlab.pipeline.execute import default_output, stale

    outdated = 0
    for chapter in list_chapters():
        for profile in ("smoke", "book"):
            where = default_output(chapter, profile, {}).relative_to(chapter.path.parents[1])
            try:
                reasons = stale(chapter, profile)
            except (ValueError, OSError, KeyError, TypeError) as err:  # a torn or foreign file
                outdated += 1
                detail = " ".join(str(err).split())[:200] or type(err).__name__
                print(f"{chapter.slug} [{profile}] {where}: UNREADABLE ({type(err).__name__}: "
                      f"{detail})")
                print(f"    fix: structlab run {chapter.slug} --profile {profile}")
                continue
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

    for option, value, least in (("--retries", args.retries, 0), ("--num-cpus", args.num_cpus, 1),
                                 ("--gpus-per-task", args.gpus_per_task, 0)):
        if value is not None and value < least:
            raise InputError(f"{option} must be at least {least}, got {value}")
    if args.cpus_per_task <= 0:
        raise InputError(f"--cpus-per-task must be > 0, got {args.cpus_per_task}")
    chapter = find_chapter(args.chapter)
    grid: dict = {}
    for file in args.file or []:
        accepts = "a mapping of parameter names to lists of values"
        for name, values in read_parameter_file(file, accepts=accepts).items():
            grid[name] = values if isinstance(values, list) else [values]
    for name, values in args.param or []:
        grid[name] = parse_values(values)
    seeds = parse_seeds(args.seeds) if args.seeds else None
    sweep = plan_sweep(chapter, profile=args.profile, seeds=seeds, grid=grid)
    for point in sweep.points:  # the checks of a run, but each point sets its own results_dir
        values = chapter.resolve(args.profile, point.overrides)
        values.pop("results_dir", None)
        try:
            check_values(chapter, values, local=args.address is None)
        except ParameterError as err:
            raise InputError(f"sweep point {point.overrides}: {err}") from None
    where = sweep.directory.relative_to(chapter.path.parents[1])
    if not args.report:
        try:
            import ray  # noqa: F401
        except ImportError:
            print("structlab: error: sweeps run on Ray, which is not installed: "
                  "pip install -e '.[sweep]'", file=sys.stderr)
            return 2
        from structlab.pipeline.runs import clean_sweep_points
        from structlab.pipeline.sweep import run_sweep

        def clean() -> None:
            removed = clean_sweep_points(chapter.slug, [sweep.point_dir(p) for p in sweep.points],
                                         local=args.address is None)
            if removed:
                print(f"structlab: removed {len(removed)} temporary file"
                      f"{'s' if len(removed) != 1 else ''} of killed points: "
                      + ", ".join(_shown(p) for p in removed))

        print(f"structlab: sweep of {len(sweep.points)} points of {chapter.slug} "
              f"({args.profile} profile) in {where}")
        clean()
        outcome = run_sweep(sweep, address=args.address, retries=args.retries,
                            cpus_per_task=args.cpus_per_task, gpus_per_task=args.gpus_per_task,
                            num_cpus=args.num_cpus, numerics=args.numerics,
                            progress=not args.quiet)
        clean()  # what the attempts Ray retried left
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

    if args.force and args.no_execute:
        raise InputError("--force re-executes every chapter and --no-execute none: give one")
    from structlab.pipeline.runs import registered_run

    root = _chapters.project_root()
    write_page()  # the scorecard page from the stored book runs (rewritten only when it changed)
    try:  # book runs write their notebooks' temporary files into chapters/
        with registered_run("*", root / "chapters", root / "results") as cleaned, \
                _chapter_failures():
            _report_cleaned(cleaned)
            build_book(execute=not args.no_execute, force=args.force, quiet=args.quiet,
                       strict=not args.no_strict)
    except subprocess.CalledProcessError as err:
        print(f"structlab: the book build failed: jupyter-book exited with {err.returncode} "
              "(its messages are above)", file=sys.stderr)
        return 1
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

    if args.action in ("list", "setup") and args.names:
        raise InputError(f"data {args.action} takes no dataset names, got {' '.join(args.names)}"
                         " (data fetch NAME ... fetches datasets)")
    if args.action == "fetch":
        known = [*DATASETS, *CORPORA]
        if not args.names:
            raise InputError(f"data fetch needs the names of datasets to fetch: {', '.join(known)}")
        names = {k.lower().replace("_", "-") for k in known}
        unknown = [n for n in args.names if n.lower().replace("_", "-") not in names]
        if unknown:
            raise InputError(f"data fetch: unknown dataset{'s' if len(unknown) > 1 else ''} "
                             f"{', '.join(repr(n) for n in unknown)}; datasets: {', '.join(known)}")
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


def lab_command(port: int | None = None, ip: str = "127.0.0.1", browser: bool = True,
                extra: list[str] | None = None) -> list[str]:
    """The ``jupyter lab`` command that opens ``chapters/``: ``--allow-root`` when run as root
    (Jupyter refuses root otherwise), the server on ``ip`` only (this machine by default)."""
    jupyter = Path(sys.executable).with_name("jupyter-lab")
    command = [str(jupyter) if jupyter.exists() else shutil.which("jupyter-lab") or "jupyter-lab",
               f"--ServerApp.root_dir={_chapters.project_root() / 'chapters'}", f"--ip={ip}"]
    if port is not None:
        command += [f"--port={port}", "--ServerApp.port_retries=0"]
    if not browser:
        command.append("--no-browser")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")
    return command + list(extra or [])


def _cmd_lab(args: argparse.Namespace) -> int:
    if args.port is not None and not 0 < args.port < 65536:
        raise InputError(f"--port must be in [1, 65535], got {args.port}")
    command = lab_command(args.port, args.ip, not args.no_browser, args.jupyter_args)
    if not Path(command[0]).is_file():
        raise InputError("JupyterLab is not installed: pip install -e '.[dev]' (make venv)")
    sys.stdout.flush()
    os.execv(command[0], command)
    return 0  # not reached


def _cmd_gpu_check(args: argparse.Namespace) -> int:
    from structlab.gpucheck import gpu_check, refusal

    why = refusal()  # before anything else: one line without a GPU
    if why is not None:
        raise InputError(why)
    if args.probe:
        import torch

        print(f"structlab: gpu-check can run: {torch.cuda.device_count()} CUDA device(s), "
              f"{torch.cuda.get_device_name(0)}")
        return 0
    if args.budget <= 0:
        raise InputError(f"--budget must be > 0 seconds, got {args.budget}")
    if args.rtol < 0:
        raise InputError(f"--rtol must be >= 0, got {args.rtol}")
    slugs = [s for s in (args.chapters or "").split(",") if s]
    for slug in slugs:
        find_chapter(slug)
    code, _ = gpu_check(chapters=slugs or None, output=Path(args.output) if args.output else None,
                        budget=args.budget, run_tests=not args.no_tests,
                        run_chapter_checks=not args.no_chapters, timing=not args.no_timing,
                        rtol=args.rtol, keep=args.keep)
    return code


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (``structlab: error: ...``, exit code 2)."""

    def error(self, message: str) -> NoReturn:
        parts = self.prog.split(" ", 1)
        command = parts[1] if len(parts) > 1 else ""
        where = f"{command}: " if command else ""
        usage = f"structlab {command} -h" if command else "structlab -h"
        self.exit(2, f"structlab: error: {where}{message} ({usage} for help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="structlab", description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--traceback", action="store_true",
                        help="show the traceback of an error, not only its line")
    sub = parser.add_subparsers(dest="command", required=True)
    # --traceback after the command works too (SUPPRESS: the subcommand keeps the parent's value)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--traceback", action="store_true", default=argparse.SUPPRESS,
                        help="show the traceback of an error, not only its line")
    sub.add_parser("list", help="list chapters and their parameters",
                   parents=[common]).set_defaults(func=_cmd_list)
    run = sub.add_parser("run", help="execute one chapter through papermill",
                         parents=[common])
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

    sweep = sub.add_parser("sweep", parents=[common],
                           help="run a chapter over seeds and a parameter grid on Ray")
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

    status = sub.add_parser("status", parents=[common],
                            help="which stored smoke and book runs are out of date")
    status.set_defaults(func=_cmd_status)

    card = sub.add_parser("scorecard", parents=[common],
                          help="the verdicts of the stored book runs on the sources' claims "
                               "(CLAIMS.md): totals and page")
    card.add_argument("--write", action="store_true",
                      help="rewrite book/scorecard.md from the stored book runs")
    card.add_argument("--check", action="store_true",
                      help="exit 1 when book/scorecard.md is not current")
    card.set_defaults(func=_cmd_scorecard)

    book = sub.add_parser("book", parents=[common],
                          help="execute out-of-date chapters and build the HTML book")
    book.add_argument("--force", action="store_true", help="re-execute every chapter")
    book.add_argument("--execute", dest="no_execute", action="store_false",
                      help="execute the chapters whose book run is out of date (the default)")
    book.add_argument("--no-execute", action="store_true", help="build from stored outputs")
    book.add_argument("--no-strict", action="store_true", help="do not fail on Sphinx warnings")
    book.add_argument("-q", "--quiet", action="store_true")
    book.set_defaults(func=_cmd_book)

    data = sub.add_parser("data", parents=[common],
                          help="datasets: list, set up offline ones, fetch others")
    data.add_argument("action", choices=["list", "setup", "fetch"])
    data.add_argument("names", nargs="*", help="datasets to fetch")
    data.set_defaults(func=_cmd_data)

    lab = sub.add_parser("lab", parents=[common],
                         help="open the chapter notebooks in JupyterLab (as root too)")
    lab.add_argument("--port", type=int, default=None,
                     help="port of the server (default: Jupyter's, 8888 or the next free one)")
    lab.add_argument("--ip", default="127.0.0.1",
                     help="address the server listens on (default: this machine only)")
    lab.add_argument("--no-browser", action="store_true", help="do not open a browser")
    lab.add_argument("jupyter_args", nargs=argparse.REMAINDER,
                     help="further options for jupyter lab (after --)")
    lab.set_defaults(func=_cmd_lab)

    from structlab.gpucheck import BUDGET_SECONDS, RTOL  # no torch at import

    gpu = sub.add_parser("gpu-check", parents=[common],
                         help="on a CUDA GPU: the device tests, every chapter's smoke run on "
                              "CUDA compared with its stored CPU run, step timings "
                              "(results/gpu-check/<device>.json); refuses without a GPU")
    gpu.add_argument("--chapters", help="comma-separated chapter slugs (default: every chapter)")
    gpu.add_argument("--budget", type=float, default=BUDGET_SECONDS,
                     help="seconds for the whole check; chapters still running at the end "
                          "(less the timing's share) are stopped and reported")
    gpu.add_argument("--rtol", type=float, default=RTOL,
                     help="relative tolerance of the chapters' numbers, CPU against CUDA")
    gpu.add_argument("-o", "--output", help="directory of the record (default results/gpu-check)")
    gpu.add_argument("--no-tests", action="store_true", help="skip the device tests")
    gpu.add_argument("--no-chapters", action="store_true", help="skip the chapters' runs")
    gpu.add_argument("--no-timing", action="store_true", help="skip the step timings")
    gpu.add_argument("--keep", action="store_true",
                     help="keep the temporary directory of the runs (its path is printed)")
    gpu.add_argument("--probe", action="store_true",
                     help="only say whether this machine can run the check")
    gpu.set_defaults(func=_cmd_gpu_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "jupyter_args", None) and args.jupyter_args[0] == "--":
        args.jupyter_args = args.jupyter_args[1:]
    try:
        return args.func(args)
    except ChapterFailed as failure:
        if args.traceback:
            traceback.print_exception(failure.error)
        print(failure.line(), file=sys.stderr)
        return 130 if isinstance(failure.error, KeyboardInterrupt) else 1
    except (ParameterError, ValueError, FileNotFoundError) as err:  # SweepError is a ValueError
        if args.traceback:
            raise
        print(f"structlab: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    except RuntimeError as err:  # missing data: one line, no traceback
        from structlab.data.base import DatasetUnavailableError

        if not isinstance(err, DatasetUnavailableError) or args.traceback:
            raise
        print(f"structlab: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
