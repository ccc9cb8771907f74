"""Cost of the neural operators relative to training: structural surgery on a VGG-11.

For every layer slot of a VGG-11 (CIFAR-10 input, 32x32), the benchmark times adding ``k`` units
(neuron creation, with the Adam optimizer state carried along) and removing ``k`` units (neuron
removal), and times one global synaptic-pruning and one NeST regrowth step over the whole network.
Every time is reported as a ratio to one forward + backward pass of the same model on a batch of
128 images, measured in the same run (median of the repeats).

    python benchmarks/bench_operators.py [--width-multiplier 1.0] [--units 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from structlab import get_device, seed_everything
from structlab.benchmarks import record, sync
from structlab.models import VGG
from structlab.operators import (
    add_units,
    connection_gradients,
    prune_global,
    regrow_connections,
    remove_units,
)


def _median_time(fn, device: torch.device, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width-multiplier", type=float, default=1.0)
    parser.add_argument("--units", type=int, default=8, help="units added / removed per op")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    if args.units < 1 or args.repeats < 1:
        parser.error("--units and --repeats must be positive")

    seed_everything(0)
    device = get_device(args.device)
    model = VGG("vgg11", width_multiplier=args.width_multiplier).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(args.batch_size, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (args.batch_size,), device=device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()

    def train_step() -> None:
        step()
        optimizer.step()

    train_step()  # warm-up; creates Adam state for every parameter
    baseline = _median_time(step, device, args.repeats)
    print(f"VGG-11 x{args.width_multiplier}, {sum(p.numel() for p in model.parameters()):,} "
          f"parameters, on {device}")
    print(f"forward + backward, batch {args.batch_size}: {1000 * baseline:.1f} ms (= 1.00)")
    print(f"{'operation':<34}{'ms':>10}{'ratio':>9}")

    ratios = []
    rows = []
    for slot in model.layer_slots():
        k = args.units

        def add(slot=slot, k=k) -> None:
            add_units(model, slot, k, fan_in="default", optimizer=optimizer)

        def remove(slot=slot, k=k) -> None:
            remove_units(model, slot, list(range(slot.width - k, slot.width)),
                         optimizer=optimizer)

        t_add = t_remove = 0.0
        adds, removes = [], []
        for _ in range(args.repeats):  # add then remove, so the width is restored each time
            adds.append(_median_time(add, device, 1))
            removes.append(_median_time(remove, device, 1))
        t_add, t_remove = statistics.median(adds), statistics.median(removes)
        for name, t in ((f"add {k} units to {slot.name}", t_add),
                        (f"remove {k} units from {slot.name}", t_remove)):
            ratios.append(t / baseline)
            rows.append({"operation": name, "ms": 1000 * t, "ratio": t / baseline})
            print(f"{name:<34}{1000 * t:>10.2f}{t / baseline:>9.3f}")
    train_step()  # the optimizer still works on the resized model

    loader = [(x, y)]
    t_prune = _median_time(lambda: prune_global(model, 0.01, optimizer=optimizer), device, 1)
    grads = connection_gradients(model, loader, device=device)
    t_grow = _median_time(
        lambda: regrow_connections(model, 1000, gradients=grads, optimizer=optimizer), device, 1
    )
    for name, t in (("global magnitude pruning (1%)", t_prune),
                    ("NeST regrowth (1000 connections)", t_grow)):
        rows.append({"operation": name, "ms": 1000 * t, "ratio": t / baseline})
        print(f"{name:<34}{1000 * t:>10.2f}{t / baseline:>9.3f}")
    train_step()
    print(f"unit surgery: median ratio {statistics.median(ratios):.3f}, "
          f"max {max(ratios):.3f} of one forward + backward pass")
    record("operators", rows, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
