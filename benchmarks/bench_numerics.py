"""What portable numerics cost: training speed in portable mode against native mode, side by side.

Each workload trains in a fresh Python process (the numerics of a process are fixed when torch
loads its libraries), alternating native and portable processes ``--repeats`` times; each process
times its steps after one warm-up round. Prints the median seconds and the ratio portable/native:

- ``mlp``: one epoch of the Fashion-MNIST MLP 784-256-256-10 (SGD, batch 128) on ``--images``;
- ``cnn``: the two-block VGG of the data chapter (16/32 channels) on ``--images`` / 4;
- ``equivariant``: 20 training steps of the C4 backbone of the equivariance chapter (8/16 base
  channels, 32x32 inputs, batch 64).

Both modes use the same thread count (``STRUCTLAB_THREADS``, default 2), so the ratio is the cost
of the pinned kernels alone: ATen's and oneDNN's AVX2 builds, MKL's compatible branch.

    python benchmarks/bench_numerics.py [--repeats 3] [--images 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

WORKLOADS = ("mlp", "cnn", "equivariant")


def _workload(name: str, images: int) -> float:
    import torch

    from structlab import seed_everything
    from structlab.data import load_dataset
    from structlab.models import MLP, VGG
    from structlab.training import fit

    seed_everything(0)
    cpu = torch.device("cpu")
    if name in {"mlp", "cnn"}:
        n = images if name == "mlp" else images // 4
        data = load_dataset("fashion-mnist", "train").subset(n, seed=0)
        model = (MLP(784, [256, 256], 10) if name == "mlp" else
                 VGG(cfg=[16, "M", 32, "M"], in_channels=1, num_classes=10, input_size=28,
                     dense=[64]))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        fit(model, data.subset(512, seed=1), epochs=1, batch_size=128, optimizer=optimizer,
            device=cpu, quiet=True)  # warm-up
        start = time.perf_counter()
        fit(model, data, epochs=1, batch_size=128, optimizer=optimizer, device=cpu, quiet=True)
        return time.perf_counter() - start
    from structlab.equivariance import EquivariantCNN

    model = EquivariantCNN(["C4"] * 8, channels=(8, 16), num_classes=10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(64, 1, 32, 32), torch.randint(0, 10, (64,))

    def step() -> None:
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    for _ in range(3):
        step()
    start = time.perf_counter()
    for _ in range(20):
        step()
    return time.perf_counter() - start


def _measure(mode: str, name: str, images: int) -> float:
    from structlab.numerics import numerics_env

    drop = set(numerics_env("portable"))
    env = {k: v for k, v in os.environ.items() if k not in drop}
    threads = os.environ.get("STRUCTLAB_THREADS", "2")
    env.update(numerics_env(mode) if mode == "portable" else
               {"STRUCTLAB_NUMERICS": "native", "OMP_NUM_THREADS": threads,
                "MKL_NUM_THREADS": threads})
    done = subprocess.run([sys.executable, __file__, "--inner", name, "--images", str(images)],
                          env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{name} in {mode} mode failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--inner", choices=WORKLOADS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        print(json.dumps({"seconds": _workload(args.inner, args.images)}))
        return
    from structlab.benchmarks import record

    print(f"threads: {os.environ.get('STRUCTLAB_THREADS', '2')}, repeats: {args.repeats}")
    rows = []
    for name in WORKLOADS:
        times: dict[str, list[float]] = {"native": [], "portable": []}
        for _ in range(args.repeats):
            for mode in times:
                times[mode].append(_measure(mode, name, args.images))
        native, portable = (statistics.median(times[m]) for m in ("native", "portable"))
        print(f"{name:12s} native {native:7.3f} s   portable {portable:7.3f} s   "
              f"ratio {portable / native:5.2f}")
        rows.append({"workload": name, "native_s": native, "portable_s": portable,
                     "ratio": portable / native})
    record("numerics", rows, args)


if __name__ == "__main__":
    main()
