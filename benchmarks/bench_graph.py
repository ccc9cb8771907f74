"""Structured pruning of outside models: structlab's inferred slots against Torch-Pruning.

For each network (torchvision ``resnet18``, ``resnet50``, ``vgg11_bn`` built with
``weights=None``, and a small user ``nn.Sequential``) both libraries remove the same channels from
the same layers (:func:`structlab.graph.compare.comparable_layers`: three single layers, the
first residual group, the last layer), each on its own copy of the network: structlab traces the
model and infers its slots (:func:`structlab.graph.resizable`) then calls
:func:`structlab.operators.remove_units`; Torch-Pruning builds its dependency graph then prunes
each layer's group. The time of each (graph analysis plus surgery) is the median over
``--repeats`` paired rounds, the two orders alternating; ``ratio`` is structlab's time over
Torch-Pruning's (below 1: structlab is faster). The outputs of the two pruned networks are
compared on the example batch (``max_abs_diff``).

    python benchmarks/bench_graph.py [--size 32] [--batch 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import copy
import statistics

import torch
import torchvision
from torch import nn

from structlab.benchmarks import paired_order, print_header, record
from structlab.graph.compare import comparable_layers, prune_structlab, prune_torch_pruning


def _sequential() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 12, 3, padding=1), nn.BatchNorm2d(12), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(12 * 8 * 8, 16), nn.ReLU(), nn.Linear(16, 10),
    )


def _builders(size: int) -> dict:
    return {
        "resnet18": lambda: torchvision.models.resnet18(weights=None, num_classes=10),
        "resnet50": lambda: torchvision.models.resnet50(weights=None, num_classes=10),
        "vgg11_bn": lambda: torchvision.models.vgg11_bn(weights=None, num_classes=10),
        "sequential": _sequential if size == 32 else None,  # its Linear expects 32 px
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=32, help="input side")
    parser.add_argument("--batch", type=int, default=2, help="example batch")
    parser.add_argument("--repeats", type=int, default=3, help="paired rounds")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.batch < 1:
        parser.error("--repeats and --batch must be positive")

    import torch_pruning as tp

    print(f"torch-pruning {getattr(tp, '__version__', '?')}; input {args.batch} x 3 x "
          f"{args.size} x {args.size}; median of {args.repeats} paired rounds (CPU)")
    header = (f"{'network':<11s} {'layers':>6s} {'structlab (ms)':>14s} "
              f"{'torch-pruning (ms)':>18s} {'ratio':>6s} {'max |diff|':>10s}")
    print_header(header)
    rows = []
    for name, build in _builders(args.size).items():
        if build is None:
            continue
        torch.manual_seed(args.seed)
        base = build()
        with torch.no_grad():
            base.train()
            base(torch.randn(4, 3, args.size, args.size))
        base.eval()
        x = torch.randn(args.batch, 3, args.size, args.size)
        layers = comparable_layers(base, x)
        channels = {}
        for i, layer in enumerate(layers):
            width = base.get_submodule(layer).weight.shape[0]
            channels[layer] = sorted({i % width, (3 * i + 1) % width, width - 1 - i})
        times = {"structlab": [], "torch-pruning": []}
        diff = 0.0
        for r in range(args.repeats):
            results = {}
            for lib in paired_order(r, ["structlab", "torch-pruning"]):
                model = copy.deepcopy(base)
                fn = prune_structlab if lib == "structlab" else prune_torch_pruning
                results[lib] = fn(model, x, channels)
                times[lib].append(results[lib].seconds)
            with torch.no_grad():
                a = results["structlab"].model(x)
                b = results["torch-pruning"].model(x)
            diff = max(diff, float((a - b).abs().max()))
        ours = statistics.median(times["structlab"])
        theirs = statistics.median(times["torch-pruning"])
        row = {"network": name, "layers": len(layers), "structlab_ms": 1000 * ours,
               "torch_pruning_ms": 1000 * theirs, "ratio": ours / theirs,
               "max_abs_diff": diff}
        rows.append(row)
        print(f"{name:<11s} {len(layers):>6d} {1000 * ours:>14.1f} {1000 * theirs:>18.1f} "
              f"{ours / theirs:>6.2f} {diff:>10.2e}")
    record("graph", rows, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
