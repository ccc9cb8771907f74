"""Cost of the structural operations of Noisy Heuristics NAS relative to one training epoch.

A dense Hierarchical Residual Network on Fashion-MNIST-sized input (784 -> 10, a root residual
layer of ``--hidden`` neurons whose inner connections are hierarchical, as the layer rule makes
them) goes through the structural part of one growth + shrink iteration, timed operation by
operation: the growth phase (``--neurons`` new neurons placed by the moving averages), the
importance scores ``I = A (1 - B^33)`` on ``--importance-samples`` training examples, the global
selection of the ``ceil(P / ratio)`` least important neurons, the bookkeeping of their decay
(holding the fan-in and scaling the fan-out after every step of one epoch), their removal and the
layer rules. The sum is reported as a ratio to one training epoch of the same network (Adam, batch
``--batch-size``) measured in the same run, interleaved with the operations so that a change of
machine load hits both (medians of ``--repeats``); the target is 0.1. The importance over the
whole training set (the paper's ``N``) is shown for comparison: with it, the shrink phase costs a
fraction of an epoch more. Every epoch after the first trains the morphed network with the
optimizer that followed the morphisms.

    python benchmarks/bench_heuristics.py [--train-size 60000] [--data real|random]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

from structlab import get_device, seed_everything
from structlab.benchmarks import record, sync
from structlab.data import DatasetUnavailableError, LabelledTensors, load_dataset
from structlab.heuristics import (
    HRN,
    NeuronDecay,
    apply_layer_rules,
    grow,
    importance_scores,
    prune_neurons,
    select_neurons,
)
from structlab.training import fit


def _timed(fn, device: torch.device):
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - start, out


def _data(kind: str, n: int, seed: int) -> LabelledTensors:
    if kind == "real":
        try:
            return load_dataset("fashion-mnist", "train").subset(n, seed=seed)
        except DatasetUnavailableError as err:
            print(f"Fashion-MNIST unavailable ({err}); using random data of the same shape")
    g = torch.Generator().manual_seed(seed)
    return LabelledTensors(
        torch.rand(n, 1, 28, 28, generator=g),
        torch.randint(0, 10, (n,), generator=g),
        name="random-784",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=["real", "random"], default="real")
    parser.add_argument("--train-size", type=int, default=60000)
    parser.add_argument("--hidden", type=int, default=256, help="width of the root residual")
    parser.add_argument("--neurons", type=int, default=64, help="P, neurons added")
    parser.add_argument("--ratio", type=float, default=2.0, help="add-to-remove ratio")
    parser.add_argument("--importance-samples", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if (
        min(args.train_size, args.hidden, args.repeats, args.batch_size, args.importance_samples)
        < 1
        or args.neurons < 0
        or args.ratio <= 0
    ):
        parser.error("sizes, repeats and the ratio must be positive")

    seed_everything(args.seed)
    device = get_device(args.device)
    train = _data(args.data, args.train_size, args.seed)
    model = HRN.dense(784, 10, hidden=args.hidden).to(device)
    apply_layer_rules(model, new_layer_width=16)  # a hierarchical network, not a plain MLP
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    steps = math.ceil(len(train) / args.batch_size)

    def epoch() -> None:
        fit(
            model,
            train,
            epochs=1,
            optimizer=optimizer,
            batch_size=args.batch_size,
            device=device,
            quiet=True,
        )

    epoch()  # warm-up; creates the Adam state
    print(
        f"HRN 784 -> 10, root residual {args.hidden} (+ hierarchical inner layers), "
        f"{sum(p.numel() for p in model.parameters()):,} parameters, {len(train)} "
        f"{train.name} examples, on {device}"
    )

    gen = torch.Generator().manual_seed(args.seed)
    m = math.ceil(args.neurons / args.ratio)
    ops = [
        "growth",
        "importance",
        "selection",
        "decay bookkeeping (1 epoch)",
        "removal",
        "layer rules",
    ]
    times: dict[str, list[float]] = {k: [] for k in ops + ["importance, all N"]}
    epochs: list[float] = []
    ma: dict[str, float] = {}
    for _ in range(args.repeats):  # interleaved, so that a change of machine load hits both
        epochs.append(_timed(epoch, device)[0])
        t, added = _timed(
            lambda ma=ma: grow(model, args.neurons, ma, optimizer=optimizer, generator=gen), device
        )
        times["growth"].append(t)
        t, scores = _timed(
            lambda: importance_scores(
                model, train, device=device, samples=args.importance_samples, seed=args.seed
            ),
            device,
        )
        times["importance"].append(t)
        t, selection = _timed(lambda scores=scores: select_neurons(scores, m), device)
        times["selection"].append(t)

        def bookkeeping(selection=selection) -> None:
            decay = NeuronDecay(model, selection, steps)
            for _ in range(steps):
                decay.advance()

        times["decay bookkeeping (1 epoch)"].append(_timed(bookkeeping, device)[0])
        times["removal"].append(
            _timed(
                lambda selection=selection: prune_neurons(model, selection, optimizer=optimizer),
                device,
            )[0]
        )
        times["layer rules"].append(
            _timed(lambda: apply_layer_rules(model, optimizer=optimizer, generator=gen), device)[0]
        )
        ma = {k: 0.8 * ma.get(k, 0.0) + 0.2 * v for k, v in added.items()}
        times["importance, all N"].append(
            _timed(lambda: importance_scores(model, train, device=device), device)[0]
        )
    epoch_s = statistics.median(epochs)
    print(f"one training epoch ({steps} steps of {args.batch_size}): {epoch_s:.2f} s (= 1.00)")
    print(f"{'operation':<32}{'ms':>10}{'ratio':>9}")
    rows = []
    total = 0.0
    for name in ops + ["importance, all N"]:
        t = statistics.median(times[name])
        if name in ops:
            total += t
        rows.append({"operation": name, "ms": 1000 * t, "ratio": t / epoch_s})
        print(f"{name:<32}{1000 * t:>10.2f}{t / epoch_s:>9.3f}")
    label = "structural operations, 1 iteration"
    rows.append(
        {
            "operation": label,
            "ms": 1000 * total,
            "ratio": total / epoch_s,
            "epoch_s": epoch_s,
            "target": 0.1,
        }
    )
    print(
        f"{label:<32}{1000 * total:>10.2f}{total / epoch_s:>9.3f}   (target <= 0.1; "
        f"importance on {args.importance_samples} of {len(train)} examples)"
    )
    print(
        f"final network: {model.hidden_neurons()} hidden neurons in "
        f"{len(model.branches())} residual layers, depth {model.depth}"
    )
    record("heuristics", rows, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
