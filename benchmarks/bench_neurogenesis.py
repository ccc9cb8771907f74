"""Training cost of dynamic neurogenesis relative to static training of the same final size.

For the two-hidden-layer MLP of thesis §6.3.3 on Fashion-MNIST, every dynamic strategy of Table 7
grows a network from 64 neurons per layer (at most 784); then a static MLP with the *final* widths
of that grown network is trained for the same epochs on the same data. The ratio of the two
training times (growth and trigger evaluations included) is the price of letting the algorithm
choose the architecture. Both are measured in the same run.

    python benchmarks/bench_neurogenesis.py [--train-size 20000] [--epochs 3] [--every 1]

The defaults evaluate the triggers after every step, as the thesis does (Table 9).
"""

from __future__ import annotations

import argparse

from structlab import get_device
from structlab.benchmarks import record
from structlab.data import load_dataset
from structlab.neurogenesis import STRATEGIES
from structlab.neurogenesis.experiments import train_run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-size", type=int, default=20000)
    parser.add_argument("--test-size", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--every", type=int, default=1, help="trigger period in steps")
    parser.add_argument("--strategies", nargs="*", default=list(STRATEGIES))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    device = get_device(args.device)
    train = load_dataset("fashion-mnist", "train").subset(args.train_size, seed=args.seed)
    test = load_dataset("fashion-mnist", "test").subset(args.test_size, seed=args.seed)
    common = dict(
        epochs=args.epochs, batch_size=args.batch_size, lr=1e-3, seed=args.seed, device=device
    )
    print(
        f"device: {device}; {len(train)} images, {args.epochs} epochs, "
        f"trigger every {args.every} steps"
    )
    header = (
        f"{'strategy':14s} {'final widths':>14s} {'grown (s)':>10s} {'static (s)':>10s} "
        f"{'trigger (s)':>11s} {'init (s)':>9s} {'ratio':>7s}"
    )
    print(header)
    print("-" * len(header))
    rows = []
    for strategy in args.strategies:
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
        ratio = grown["train_time"] / static["train_time"]
        widths = "-".join(str(w) for w in grown["widths"])
        print(
            f"{strategy:14s} {widths:>14s} {grown['train_time']:10.2f} "
            f"{static['train_time']:10.2f} {grown['trigger_time']:11.2f} "
            f"{grown['init_time']:9.2f} {ratio:7.2f}"
        )
        rows.append({
            "strategy": strategy,
            "final_widths": list(grown["widths"]),
            "grown_s": grown["train_time"],
            "static_s": static["train_time"],
            "trigger_s": grown["trigger_time"],
            "init_s": grown["init_time"],
            "ratio": ratio,
        })
    record("neurogenesis", rows, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
