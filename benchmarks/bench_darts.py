"""Cost of a DARTS-PRIME search step relative to a first-order DARTS step (thesis §5.2-5.3).

The book-scale search: a :class:`~structlab.darts.supernet.Supernet` (``--C`` 4 channels,
``--layers`` 3 cells, 1 input channel, 10 classes) on Fashion-MNIST images average-pooled to
14 x 14 (random images of that shape when the data set is missing), ``--steps`` w-steps of
``--batch-size`` 32, the validation batches drawn cyclically from a separate list. Every run is
one call of :func:`~structlab.darts.search.search` (one epoch over the same batches, from the
same initial supernet); the time per w-step is its ``wall_time / n_w_steps``. Two ratios, each
the median over ``--repeats`` paired rounds whose order alternates, after warm-up runs (a
full DARTS-PRIME run, which also sets ``h0`` below, and ``r`` w-steps of each other set-up):

(a) **DARTS-PRIME / DARTS per w-step.** ``SearchConfig.darts_prime()`` (w-step, FIMT sample and
    schedule, an alpha step with the proximity regulariser when the schedule says so) against
    ``SearchConfig()`` (DARTS alternate: one w-step and one alpha step per iteration). Well below
    1, because DARTS-PRIME takes about one alpha step per ``r + 1 = 11`` w-steps. The FIMT
    threshold starts at ``h0 = `` the median FIMT sample of the warm-up run, so that a short
    benchmark sees the schedule's steady rhythm rather than its climb from ``h0 = 1`` (with the
    default, the first tens of w-steps of a search take no alpha step at all).
(b) **FIMT + proximity / CS10 at a fixed alpha-step frequency** (target <= 1.05): what the
    DARTS-PRIME machinery itself costs. The method keeps every part of DARTS-PRIME (FIMT sample
    from the gradient already in ``p.grad``, the EMA and threshold of :class:`FIMTSchedule`,
    the proximity regulariser with its projection ``Pi_S``) but takes its alpha step after
    w-steps ``r, 2r, ...`` like CS``r`` (``--r`` 10), so both runs do the same number of alpha
    steps. The baseline is ``SearchConfig(schedule="constant", r=10)`` without regulariser and
    without the FIMT sample: :func:`search` computes the sample under every schedule (for its
    trace), a CS10 search does not need it, so the baseline runs with
    ``structlab.darts.search.fisher_trace`` stubbed out (a conservative baseline: the ratio
    includes the trace's cost).

``DARTS_REFERENCE`` may point to a checkout of quark0/darts: its ``cnn/model_search.Network`` at
the same size is then timed (forward + backward on the same batches, zero-padded to a side that
is a multiple of 4, which its FactorizedReduce needs) against the supernet; the line is skipped
when it is absent or fails. Nothing of it is stored in this repository.

    python benchmarks/bench_darts.py [--steps 10] [--repeats 7] [--C 4 --layers 3 --size 14]
    python benchmarks/bench_darts.py --quick      # a few seconds, nothing recorded
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from structlab import get_device, seed_everything
from structlab.benchmarks import paired_order, print_header, record, sync
from structlab.darts.schedules import FIMTSchedule, Schedule
from structlab.darts.search import ImageTask, SearchConfig, search
from structlab.darts.supernet import Supernet
from structlab.data import DatasetUnavailableError, load_dataset

# the module (``structlab.darts.search`` as an attribute is the function it exports)
search_module = importlib.import_module("structlab.darts.search")


class PinnedFIMTSchedule(FIMTSchedule):
    """FIMT's bookkeeping (EMA of eq. 19, threshold update) on every w-step, but the alpha step
    after w-steps ``every, 2 every, ...`` as CS``every``: DARTS-PRIME at a fixed frequency."""

    def __init__(self, every: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.every = every

    def _decide(self, fimt_sample: float) -> bool:
        super()._decide(fimt_sample)
        return self.n_steps % self.every == 0


class PinnedPrimeConfig(SearchConfig):
    """``SearchConfig.darts_prime()`` whose schedule is :class:`PinnedFIMTSchedule`."""

    def make_schedule(self) -> Schedule:
        return PinnedFIMTSchedule(int(self.r), h0=self.h0, h_i=self.h_i, r=self.r,
                                  lam=self.fimt_lambda)


@contextlib.contextmanager
def _without_fisher_trace(active: bool):
    """Replace the FIMT sample of :func:`search` by 0 (a search that does not need it)."""
    original = search_module.fisher_trace
    if active:
        search_module.fisher_trace = lambda params: 0.0
    try:
        yield
    finally:
        search_module.fisher_trace = original


def _batches(n: int, batch_size: int, size: int, seed: int, data: str):
    g = torch.Generator().manual_seed(seed)
    x = y = None
    if data == "real":
        try:
            d = load_dataset("fashion-mnist", "train").subset(n * batch_size, seed=seed)
            x = F.adaptive_avg_pool2d(d.inputs.float(), size)
            y = d.targets.long()
        except DatasetUnavailableError as err:
            print(f"Fashion-MNIST unavailable ({err}); using random data of the same shape")
    if x is None:
        x = torch.rand(n * batch_size, 1, size, size, generator=g)
        y = torch.randint(0, 10, (n * batch_size,), generator=g)
    return [(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, n * batch_size,
                                                                        batch_size)]


def _reference(args, batches, device) -> tuple[float, float, int] | None:
    """Seconds per forward + backward of quark0/darts ``cnn/model_search.Network`` and of the
    supernet at the same size (medians) and the image side they ran at, or None with a line
    when no reference is found or it fails."""
    root = os.environ.get("DARTS_REFERENCE")
    cnn = None
    if root:
        for candidate in (Path(root) / "cnn", Path(root)):
            if (candidate / "model_search.py").is_file():
                cnn = candidate
                break
    if cnn is None:
        print("reference: DARTS_REFERENCE does not point to a checkout of quark0/darts with "
              "cnn/model_search.py; skipped")
        return None
    sys.path.insert(0, str(cnn))
    try:
        ref_module = importlib.import_module("model_search")
        cuda = torch.Tensor.cuda
        if device.type != "cuda":  # their alphas are created with .cuda()
            torch.Tensor.cuda = lambda self, *a, **k: self
        try:
            ref = ref_module.Network(args.C, 10, args.layers, torch.nn.CrossEntropyLoss())
        finally:
            torch.Tensor.cuda = cuda
    except Exception as err:  # noqa: BLE001 - any failure of third-party code skips the line
        print(f"reference: quark0/darts model_search could not be built ({err!r}); skipped")
        return None
    finally:
        sys.path.remove(str(cnn))
    # their stem takes 3 channels: the grey image is fed three times, to both networks; their
    # FactorizedReduce needs an even side at both reductions, so both networks see the images
    # zero-padded to a multiple of 4 (16 x 16 for the book's 14 x 14)
    pad = (-args.size) % 4
    seed_everything(args.seed)
    ours = Supernet(args.C, 10, args.layers, in_channels=3).to(device)
    ref = ref.to(device)

    def step(model, x, y):
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()

    inputs = [(F.pad(x, (0, pad, 0, pad)).expand(-1, 3, -1, -1).to(device), y.to(device))
              for x, y in batches]
    times = {"ref": [], "ours": []}
    try:
        for r in range(args.repeats + 1):
            order = paired_order(r, [("ref", ref), ("ours", ours)])
            for name, model in order:
                start = time.perf_counter()
                for x, y in inputs:
                    step(model, x, y)
                sync(device)
                if r > 0:  # round 0 is the warm-up
                    times[name].append((time.perf_counter() - start) / len(inputs))
    except RuntimeError as err:  # third-party code: a failing line is skipped, not the benchmark
        print(f"reference: quark0/darts model_search.Network failed at {args.size + pad} px "
              f"({err}); skipped")
        return None
    return statistics.median(times["ref"]), statistics.median(times["ours"]), args.size + pad


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=["real", "random"], default="real")
    parser.add_argument("--C", type=int, default=4, help="channels of the first cells")
    parser.add_argument("--layers", type=int, default=3, help="cells")
    parser.add_argument("--size", type=int, default=14, help="image side (pixels)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10, help="w-steps per timed run")
    parser.add_argument("--r", type=int, default=10, help="w-steps per alpha step of CS r")
    parser.add_argument("--repeats", type=int, default=7,
                        help="paired rounds (many short ones against timing noise)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes to check that the benchmark runs; nothing is recorded")
    args = parser.parse_args(argv)
    if args.quick:
        args.C, args.layers, args.size, args.batch_size = 2, 3, 8, 8
        args.steps, args.repeats = 2 * args.r, 1
    if min(args.C, args.layers, args.size, args.batch_size, args.steps, args.r,
           args.repeats) < 1:
        parser.error("sizes, steps, r and repeats must be positive")

    device = get_device(args.device)
    seed_everything(args.seed)
    train = _batches(args.steps, args.batch_size, args.size, args.seed, args.data)
    val = _batches(args.steps, args.batch_size, args.size, args.seed + 1, args.data)
    initial = Supernet(args.C, 10, args.layers, in_channels=1)
    task = ImageTask()

    def run(config: SearchConfig, stub_trace: bool = False, steps: int | None = None):
        model = copy.deepcopy(initial)
        with _without_fisher_trace(stub_trace), warnings.catch_warnings():
            # a run without any alpha step steps the alpha learning-rate schedule unused
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
            res = search(model, task, train[:steps], val, config, epochs=1, device=device,
                         seed=args.seed, progress=False)
        return res.wall_time / res.n_w_steps, res

    # warm-up, and the FIMT scale that starts DARTS-PRIME in its steady rhythm
    _, warm = run(SearchConfig.darts_prime(r=args.r))
    h0 = float(statistics.median(warm.fimt_samples))
    configs = {
        "darts": (SearchConfig(), False),
        "prime": (SearchConfig.darts_prime(r=args.r, h0=h0), False),
        "cs": (SearchConfig(schedule="constant", r=args.r), True),
        "pinned": (PinnedPrimeConfig(schedule="fimt", regularizer="proximity", rho_p=0.1,
                                     r=args.r, h0=h0), False),
    }
    for name in ("darts", "cs", "pinned"):
        run(*configs[name], steps=args.r)

    n_params = sum(p.numel() for p in initial.parameters())
    print(f"device: {device}; Supernet C={args.C}, {args.layers} cells, {n_params:,} parameters, "
          f"{args.size}x{args.size} images ({train[0][0].shape[0]} per batch), "
          f"{args.steps} w-steps per run, FIMT h0 = {h0:.3g}; median of {args.repeats} "
          f"paired rounds")
    header = (f"{'round':>5s} {'DARTS ms':>9s} {'PRIME ms':>9s} {'alpha':>5s} {'(a)':>5s} "
              f"{f'CS{args.r} ms':>9s} {'pinned ms':>9s} {'(b)':>6s}")
    print_header(header)
    rounds = []
    for rnd in range(args.repeats):
        order = paired_order(rnd, list(configs))
        out = {name: run(*configs[name]) for name in order}
        t = {name: v[0] for name, v in out.items()}
        a = t["prime"] / t["darts"]
        b = t["pinned"] / t["cs"]
        if out["pinned"][1].n_alpha_steps != out["cs"][1].n_alpha_steps:
            raise RuntimeError("the pinned DARTS-PRIME run and CS r differ in alpha steps")
        rounds.append((a, b, t, out["prime"][1].n_alpha_steps, out["cs"][1].n_alpha_steps))
        print(f"{rnd:5d} {1e3 * t['darts']:9.2f} {1e3 * t['prime']:9.2f} "
              f"{out['prime'][1].n_alpha_steps:5d} {a:5.2f} {1e3 * t['cs']:9.2f} "
              f"{1e3 * t['pinned']:9.2f} {b:6.3f}")
    ratio_a = statistics.median(r[0] for r in rounds)
    ratio_b = statistics.median(r[1] for r in rounds)
    alpha_steps = statistics.median(r[3] for r in rounds)
    median_t = {k: statistics.median(r[2][k] for r in rounds) for k in configs}
    print(f"(a) DARTS-PRIME / DARTS (alternate) time per w-step: {ratio_a:.3f} "
          f"({alpha_steps:g} alpha steps in {args.steps} w-steps against {args.steps})")
    print(f"(b) FIMT + proximity / CS{args.r} at the same alpha-step frequency: {ratio_b:.3f} "
          f"(target <= 1.05; {rounds[0][4]} alpha steps each)")

    reference = _reference(args, train[: max(1, min(len(train), 10))], device)
    if reference is not None:
        print(f"reference: quark0/darts model_search.Network / structlab Supernet, forward + "
              f"backward at C={args.C}, {args.layers} cells, {reference[2]} px (3-channel input): "
              f"{reference[0] / reference[1]:.2f} ({1e3 * reference[0]:.2f} ms vs "
              f"{1e3 * reference[1]:.2f} ms)")

    if args.quick:
        print("quick run: not recorded")
        return 0
    common = {"w_steps": args.steps}
    record("darts", [
        {**common, "loop": "DARTS-PRIME vs DARTS per w-step",
         "darts_ms": 1e3 * median_t["darts"], "prime_ms": 1e3 * median_t["prime"],
         "prime_alpha_steps": alpha_steps, "darts_alpha_steps": args.steps,
         "ratio": ratio_a, "ratios": [r[0] for r in rounds]},
        {**common, "loop": f"FIMT + proximity vs CS{args.r}",
         "cs_ms": 1e3 * median_t["cs"], "pinned_ms": 1e3 * median_t["pinned"],
         "alpha_steps": rounds[0][4], "ratio": ratio_b, "ratios": [r[1] for r in rounds]},
        *([{**common, "loop": "quark0/darts Network vs Supernet (forward + backward)",
            "reference_ms": 1e3 * reference[0], "supernet_ms": 1e3 * reference[1],
            "size": reference[2],
            "ratio": reference[0] / reference[1]}] if reference is not None else []),
    ], {**vars(args), "h0": h0})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
