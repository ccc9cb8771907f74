"""Cost of group convolutions by kernel expansion: equivariant backbones against a plain CNN.

Every forward pass of a :class:`~structlab.equivariance.GroupConv2d` expands its stored kernel
with the group's actions before one ``conv2d`` (thesis §4.3.1). This benchmark times one forward +
backward pass of the §4.5 backbone over D4, over C4, and with [G]-mixed layers over all six groups
(EquiNAS_D), and reports each as a ratio to a plain CNN with the same expanded widths
(``nn.Conv2d``, ``nn.BatchNorm2d``, the same pooling and head), measured in the same run
(median of the repeats).

    python benchmarks/bench_equivariance.py [--channels 16 32] [--batch-size 64] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from structlab import get_device, seed_everything
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
    loss_fn = nn.functional.cross_entropy
    times = []
    for i in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        model.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i:  # the first pass warms up
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
    parser.add_argument("--repeats", type=int, default=5)
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
    base_time = _step_time(baseline, x, y, device, args.repeats)
    print(
        f"device {device}, batch {args.batch_size} of {args.size}x{args.size}, "
        f"base channels {args.channels} (expanded x8)"
    )
    print(f"{'network':<26}{'params':>10}{'fwd+bwd (ms)':>15}{'ratio':>8}")
    print(
        f"{'plain CNN (same widths)':<26}{count_parameters(baseline):>10}"
        f"{1000 * base_time:>15.1f}{1.0:>8.2f}"
    )
    for label, spec in (
        ("D4 backbone", "D4"),
        ("C4 backbone", "C4"),
        ("C1 backbone", "C1"),
        ("mixed, 6 groups", tuple(ALL_GROUPS)),
    ):
        model = EquivariantCNN(
            [spec] * 8, channels=args.channels, hidden=64, pool_after=pool_after
        ).to(device)
        t = _step_time(model, x, y, device, args.repeats)
        print(f"{label:<26}{count_parameters(model):>10}{1000 * t:>15.1f}{t / base_time:>8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
