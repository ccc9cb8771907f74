"""Overhead of structlab's training loop against a bare PyTorch loop, side by side.

Trains the Fashion-MNIST MLP 784-256-256-10 for one epoch (SGD, batch 128) with
``structlab.training.fit`` (progress bar on, an empty callback) and with a plain loop over the same
DataLoader, alternating the two ``--repeats`` times after one warm-up round, and prints the
median times and their ratio.

    python benchmarks/bench_training.py [--device auto] [--repeats 3] [--train-size 60000]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from structlab import get_device, seed_everything
from structlab.benchmarks import record, sync
from structlab.data import load_dataset
from structlab.models import MLP
from structlab.training import Callback, fit, make_loader


def bare_epoch(model, loader, optimizer, device) -> None:
    for inputs, targets in loader:
        inputs, targets = inputs.to(device), targets.to(device)
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(inputs), targets)
        loss.backward()
        optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-size", type=int, default=60000)
    args = parser.parse_args()
    device = get_device(args.device)
    data = load_dataset("fashion-mnist", "train").subset(args.train_size)
    times: dict[str, list[float]] = {"bare loop": [], "structlab.fit": []}
    for repeat in range(args.repeats + 1):  # the first round warms up and is not counted
        for name in times:
            seed_everything(0)
            model = MLP(784, [256, 256], 10).to(device)
            optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
            start = time.perf_counter()
            if name == "bare loop":
                bare_epoch(model, make_loader(data, 128, shuffle=True), optimizer, device)
            else:
                fit(model, data, epochs=1, batch_size=128, optimizer=optimizer, device=device,
                    callbacks=[Callback()], quiet=False, desc="fit")
            sync(device)
            if repeat > 0:
                times[name].append(time.perf_counter() - start)
    base = statistics.median(times["bare loop"])
    print(f"device: {device}, threads: {torch.get_num_threads()}, images: {len(data)}")
    rows = []
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:14s} median {median:7.3f} s   ratio to bare loop {median / base:5.2f}")
        rows.append({"loop": name, "seconds": median, "ratio": median / base})
    record("training", rows, args)


if __name__ == "__main__":
    main()
