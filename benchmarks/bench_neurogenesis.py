"""Training cost of dynamic neurogenesis relative to static training of the same final size.

Two settings, each strategy of Table 7 grown from a small network and then a static network
with the *final* widths of the grown one trained for the same epochs on the same data; the
ratio of the two training times (growth and trigger evaluations included) is the price of
letting the algorithm choose the architecture (thesis Table 9). Both are measured in the same
run, and the median over ``--repeats`` paired rounds is reported.

* ``mlp``: the two-hidden-layer MLP of §6.3.3 on Fashion-MNIST, from 64 neurons per layer (at
  most 784). One step is small (a few milliseconds on a CPU), the hardest case for triggers.
* ``cnn``: a VGG-11 at ``--cnn-width`` of the standard widths (at most twice the standard) on
  Fashion-MNIST padded to 32 x 32, with the convolutional triggers of §6.3.4 (buffer of 128
  samples, running maximum of eq. 35).

    python benchmarks/bench_neurogenesis.py [--setting mlp|cnn|both] [--every 1]

The defaults evaluate the triggers after every step, as the thesis does.
"""

from __future__ import annotations

import argparse
import statistics

import torch.nn.functional as F

from structlab import get_device
from structlab.benchmarks import print_header, record
from structlab.data import load_dataset
from structlab.data.base import LabelledTensors
from structlab.neurogenesis import STRATEGIES
from structlab.neurogenesis.experiments import conv_run, train_run


def _mlp_pair(strategy: str, train, test, args, device) -> tuple[dict, dict]:
    common = dict(
        epochs=args.epochs, batch_size=args.batch_size, lr=1e-3, seed=args.seed, device=device
    )
    grown = train_run(
        train,
        test,
        hidden=[64, 64],
        strategy=strategy,
        max_width=784,
        buffer_size=1568,
        every=args.every,
        grad_scale=0.5,
        **common,
    )
    static = train_run(train, test, hidden=grown["widths"], **common)
    return grown, static


def _cnn_pair(strategy: str, train, test, args, device) -> tuple[dict, dict]:
    common = dict(
        arch="vgg11", epochs=args.cnn_epochs, batch_size=128, seed=args.seed, device=device
    )
    grown = conv_run(
        train,
        test,
        strategy=strategy,
        width=args.cnn_width,
        max_factor=2.0,
        every=args.every,
        grad_scale=0.5,
        candidates=100,
        **common,
    )
    static = conv_run(train, test, strategy=None, widths=grown["widths"], **common)
    return grown, static


def _padded(data: LabelledTensors) -> LabelledTensors:
    return LabelledTensors(F.pad(data.inputs, (2, 2, 2, 2)), data.targets, name=data.name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", choices=["mlp", "cnn", "both"], default="both")
    parser.add_argument("--train-size", type=int, default=20000)
    parser.add_argument("--test-size", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--cnn-train-size", type=int, default=2560)
    parser.add_argument("--cnn-epochs", type=int, default=1)
    parser.add_argument("--cnn-width", type=float, default=0.25)
    parser.add_argument("--every", type=int, default=1, help="trigger period in steps")
    parser.add_argument("--repeats", type=int, default=3, help="paired rounds per strategy")
    parser.add_argument("--cnn-repeats", type=int, default=1, help="paired rounds, CNN setting")
    parser.add_argument("--strategies", nargs="*", default=list(STRATEGIES))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for name in args.strategies:
        if name not in STRATEGIES:
            parser.error(f"unknown strategy {name!r}; choose from {list(STRATEGIES)}")

    device = get_device(args.device)
    train = load_dataset("fashion-mnist", "train")
    test = load_dataset("fashion-mnist", "test")
    settings = ["mlp", "cnn"] if args.setting == "both" else [args.setting]
    rows = []
    for setting in settings:
        if setting == "mlp":
            tr = train.subset(args.train_size, seed=args.seed)
            te = test.subset(args.test_size, seed=args.seed)
            pair, epochs = _mlp_pair, args.epochs
        else:
            tr = _padded(train.subset(args.cnn_train_size, seed=args.seed))
            te = _padded(test.subset(args.test_size // 4, seed=args.seed))
            pair, epochs = _cnn_pair, args.cnn_epochs
        repeats = args.repeats if setting == "mlp" else args.cnn_repeats
        print(
            f"\n[{setting}] device: {device}; {len(tr)} images, {epochs} epochs, trigger every "
            f"{args.every} steps, median of {repeats} paired rounds"
        )
        header = (
            f"{'strategy':14s} {'final units':>11s} {'grown (s)':>10s} {'static (s)':>10s} "
            f"{'trigger (s)':>11s} {'init (s)':>9s} {'ratio':>7s}"
        )
        print_header(header)
        for strategy in args.strategies:
            if setting == "cnn" and strategy == "north-pre":
                print(f"{strategy:14s} (no closed form for convolutions, thesis §6.2.3)")
                continue
            rounds = [pair(strategy, tr, te, args, device) for _ in range(repeats)]
            ratios = [g["train_time"] / s["train_time"] for g, s in rounds]
            ratio = statistics.median(ratios)
            grown, static = rounds[ratios.index(ratio)] if repeats % 2 else rounds[0]
            widths = grown["widths"]
            units = sum(widths.values()) if isinstance(widths, dict) else sum(widths)
            print(
                f"{strategy:14s} {units:11d} {grown['train_time']:10.2f} "
                f"{static['train_time']:10.2f} {grown['trigger_time']:11.2f} "
                f"{grown['init_time']:9.2f} {ratio:7.2f}"
            )
            rows.append({
                "setting": setting,
                "strategy": strategy,
                "final_widths": widths if isinstance(widths, dict) else list(widths),
                "grown_s": grown["train_time"],
                "static_s": static["train_time"],
                "trigger_s": grown["trigger_time"],
                "init_s": grown["init_time"],
                "ratio": ratio,
                "ratios": ratios,
            })
    record("neurogenesis", rows, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
