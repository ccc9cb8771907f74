"""Cost of group convolutions by kernel expansion: equivariant backbones against a plain CNN.

Every training pass of a :class:`~structlab.equivariance.GroupConv2d` expands its stored kernel
with the group's actions (one precomputed gather) before one ``conv2d`` (thesis §4.3.1); without
autograd the expansion is cached. This benchmark times one forward + backward pass in training
mode and one forward pass in evaluation mode of the §4.5 backbone over D4, C4 and C1, with
[G]-mixed layers over all six groups (EquiNAS_D), and of the D4 network exported to plain modules,
each as a ratio to a plain CNN with the same expanded widths (``nn.Conv2d``, ``nn.BatchNorm2d``,
the same pooling and head). The networks take turns in every round; each ratio is the median
over rounds of the ratio to the plain CNN's time in the same round.

    python benchmarks/bench_equivariance.py [--channels 16 32] [--batch-size 64] [--repeats 9]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from structlab import get_device, seed_everything
from structlab.benchmarks import record, sync
from structlab.equivariance import ALL_GROUPS, EquivariantCNN
from structlab.metrics import count_parameters


def plain_cnn(
    channels: list[int],
    *,
    in_channels: int,
    num_classes: int,
    hidden: int,
    pool_after: tuple[int, ...],
    expansion: int,
) -> nn.Module:
    """The backbone with ordinary layers of the same expanded widths (``expansion * c``)."""
    layers: list[nn.Module] = []
    c_in = in_channels
    for i, c in enumerate(channels, start=1):
        layers += [
            nn.Conv2d(c_in, expansion * c, 3, padding=1),
            nn.BatchNorm2d(expansion * c),
            nn.ReLU(),
        ]
        if i in pool_after:
            layers.append(nn.AvgPool2d(2))
        c_in = expansion * c
    layers += [
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(c_in, hidden),
        nn.BatchNorm1d(hidden),
        nn.ReLU(),
        nn.Linear(hidden, num_classes),
    ]
    return nn.Sequential(*layers)


def _step_time(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device, repeats: int
) -> float:
    """Median seconds of one forward + backward pass in training mode."""
    loss_fn = nn.functional.cross_entropy
    model.train()
    times = []
    for i in range(repeats + 1):
        sync(device)
        start = time.perf_counter()
        model.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        sync(device)
        if i:  # the first pass warms up
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def _eval_time(model: nn.Module, x: torch.Tensor, device: torch.device, repeats: int) -> float:
    """Median seconds of one forward pass in evaluation mode without autograd."""
    model.eval()
    times = []
    with torch.no_grad():
        for i in range(repeats + 1):
            sync(device)
            start = time.perf_counter()
            model(x)
            sync(device)
            if i:
                times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--channels",
        type=int,
        nargs=2,
        default=[16, 32],
        help="base channels of the two halves, counted for D4",
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--size", type=int, default=32, help="image size")
    parser.add_argument("--repeats", type=int, default=9, help="rounds over all networks")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.batch_size < 1 or min(args.channels) < 1:
        parser.error("--repeats, --batch-size and --channels must be positive")
    seed_everything(0)
    device = get_device(args.device)
    x = torch.randn(args.batch_size, 1, args.size, args.size, device=device)
    y = torch.randint(10, (args.batch_size,), device=device)
    channels = [args.channels[0]] * 4 + [args.channels[1]] * 4
    pool_after = (2, 4, 6, 8)
    baseline = plain_cnn(
        channels, in_channels=1, num_classes=10, hidden=64, pool_after=pool_after, expansion=8
    ).to(device)
    models: dict[str, nn.Module] = {"plain CNN (same widths)": baseline}
    for label, spec in (
        ("D4 backbone", "D4"),
        ("C4 backbone", "C4"),
        ("C1 backbone", "C1"),
        ("mixed, 6 groups", tuple(ALL_GROUPS)),
    ):
        models[label] = EquivariantCNN(
            [spec] * 8, channels=args.channels, hidden=64, pool_after=pool_after
        ).to(device)
    # export() to plain modules; a checkout without it (the "before" numbers) leaves the row out
    d4 = models["D4 backbone"]
    exported = d4.export() if hasattr(d4, "export") else None
    # rounds alternate between the networks so that a slow phase of the machine hits them alike
    train: dict[str, list[float]] = {name: [] for name in models}
    infer: dict[str, list[float]] = {name: [] for name in models}
    if exported is not None:
        infer["D4 exported"] = []
    for _ in range(args.repeats):
        for name, model in models.items():
            train[name].append(_step_time(model, x, y, device, 1))
            infer[name].append(_eval_time(model, x, device, 1))
        if exported is not None:
            infer["D4 exported"].append(_eval_time(exported, x, device, 1))
    base = "plain CNN (same widths)"

    def paired(times: dict[str, list[float]], name: str) -> float:
        """Median over rounds of the ratio to the baseline timed in the same round: a slow
        phase of the machine slows both sides of a pair and cancels out."""
        return statistics.median(t / b for t, b in zip(times[name], times[base]))
    print(
        f"device {device}, batch {args.batch_size} of {args.size}x{args.size}, "
        f"base channels {args.channels} (expanded x8), median of {args.repeats} rounds"
    )
    print(f"{'network':<26}{'params':>10}{'fwd+bwd (ms)':>14}{'ratio':>7}"
          f"{'eval fwd (ms)':>15}{'ratio':>7}")
    rows = []
    for name in infer:
        model = models.get(name, exported)
        t_infer = statistics.median(infer[name])
        t_train = statistics.median(train[name]) if name in train else float("nan")
        row = {
            "network": name,
            "parameters": count_parameters(model),
            "train_ms": 1000 * t_train,
            "train_ratio": paired(train, name) if name in train else float("nan"),
            "eval_ms": 1000 * t_infer,
            "eval_ratio": paired(infer, name),
        }
        rows.append(row)
        print(f"{name:<26}{row['parameters']:>10}{row['train_ms']:>14.1f}"
              f"{row['train_ratio']:>7.2f}{row['eval_ms']:>15.1f}{row['eval_ratio']:>7.2f}")
    record("equivariance", rows, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
