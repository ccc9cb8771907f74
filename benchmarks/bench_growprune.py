"""Training cost of DYNO grow-and-prune fine-tuning relative to static fine-tuning (thesis §7.3).

The book set-up: the small VGG of :data:`structlab.growprune.BOOK_SOURCE_CONFIG` pretrained on
Fashion-MNIST classes 0-4, then fine-tuned on a target (default classes 5-9) for ``--steps``
iterations of ``--batch-size`` samples with Adam, once statically and once with DYNO evaluating
its triggers every ``--every`` iterations (50 in the thesis). Both runs start from the same
pretrained network and see the same mini-batches; the ratio of their fine-tuning times (DYNO's
buffers, triggers, pruning and growth included, and its different widths) is reported as the
median over ``--repeats`` paired rounds, the two orders alternating. Target: ratio <= 1.3.

    python benchmarks/bench_growprune.py [--target fashion-5-9|mnist5k] [--every 50]
    python benchmarks/bench_growprune.py --quick      # a few seconds, nothing recorded
"""

from __future__ import annotations

import argparse
import statistics

from structlab import get_device
from structlab.benchmarks import paired_order, print_header, record
from structlab.growprune import book_source_data, book_task, finetune_run, pretrain_source


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", choices=["fashion-5-9", "mnist5k"], default="fashion-5-9")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--every", type=int, default=50, help="trigger period in iterations")
    parser.add_argument("--source-size", type=int, default=10000)
    parser.add_argument("--source-epochs", type=int, default=2)
    parser.add_argument("--train-size", type=int, default=5000)
    parser.add_argument("--test-size", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3, help="paired rounds")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes to check that the benchmark runs; nothing is recorded")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.every, args.source_size, args.source_epochs = 40, 10, 1000, 1
        args.train_size, args.test_size, args.repeats = 600, 200, 1

    device = get_device(args.device)
    src_train, src_test = book_source_data(args.source_size, args.test_size, seed=args.seed)
    source = pretrain_source(src_train, src_test, epochs=args.source_epochs, seed=args.seed,
                             device=device)
    task = book_task(args.target, args.train_size, args.test_size, seed=args.seed)
    common = dict(steps=args.steps, batch_size=args.batch_size, every=args.every,
                  device=device)
    print(f"device: {device}; source accuracy {source['accuracy']:.3f} (Fashion-MNIST 0-4); "
          f"target {args.target}, {args.steps} iterations of {args.batch_size}, triggers "
          f"every {args.every}; median of {args.repeats} paired rounds")
    header = (f"{'round':>5s} {'static (s)':>10s} {'dyno (s)':>9s} {'in DYNO (s)':>11s} "
              f"{'acc static':>10s} {'acc dyno':>9s} {'FLOPs ratio':>11s} {'ratio':>6s}")
    print_header(header)
    rounds = []
    for r in range(args.repeats):
        order = paired_order(r, ["static", "dyno"])
        runs = {m: finetune_run(task, source, m, args.seed, **common) for m in order}
        s, d = runs["static"], runs["dyno"]
        ratio = d["train_time"] / s["train_time"]
        rounds.append((ratio, s, d))
        print(f"{r:5d} {s['train_time']:10.2f} {d['train_time']:9.2f} {d['dyno_time']:11.2f} "
              f"{s['accuracy']:10.3f} {d['accuracy']:9.3f} {d['flops'] / s['flops']:11.2f} "
              f"{ratio:6.2f}")
    ratios = [x[0] for x in rounds]
    ratio = statistics.median(ratios)
    _, s, d = min(rounds, key=lambda x: abs(x[0] - ratio))
    print(f"median ratio DYNO / static fine-tuning time: {ratio:.2f} (target <= 1.3); "
          f"final widths {d['widths']} from {d['initial_widths']}")
    if args.quick:
        print("quick run: not recorded")
        return 0
    record("growprune", [{
        "setting": args.target,
        "strategy": "dyno",
        "static_s": s["train_time"],
        "dyno_s": d["train_time"],
        "dyno_callback_s": d["dyno_time"],
        "accuracy_static": s["accuracy"],
        "accuracy_dyno": d["accuracy"],
        "flops_ratio": d["flops"] / s["flops"],
        "final_widths": d["widths"],
        "ratio": ratio,
        "ratios": ratios,
    }], args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
