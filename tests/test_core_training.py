"""Seeding, the training loop, callbacks, metrics and results."""

from __future__ import annotations

import json
import os

import pytest
import torch
from torch import nn

from structlab import get_device, seed_everything
from structlab.data import load_dataset
from structlab.metrics import Timer, count_parameters, inference_flops
from structlab.results import RunDirectory, atomic_write_text
from structlab.training import Callback, evaluate, fit


def _tiny_run(seed: int):
    seed_everything(seed)
    data = load_dataset("digits", "train").subset(512, seed=0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    history = fit(model, data, epochs=2, batch_size=64, optimizer=opt, device="cpu", seed=seed,
                  quiet=True, val=load_dataset("digits", "test"))
    return model, history


def test_seeded_runs_are_identical_and_seeds_differ():
    m1, h1 = _tiny_run(0)
    m2, h2 = _tiny_run(0)
    m3, h3 = _tiny_run(1)
    assert h1.train_loss == h2.train_loss and h1.val_acc == h2.val_acc
    for a, b in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(a, b)
    assert h1.train_loss != h3.train_loss


def test_fit_learns_and_records_history():
    _, history = _tiny_run(0)
    assert history.epochs == 2
    assert history.train_loss[1] < history.train_loss[0]
    assert history.val_acc[-1] > 0.5
    frame = history.to_frame()
    assert list(frame.columns) == ["epoch", "train_loss", "train_acc", "epoch_time", "val_loss",
                                   "val_acc"]
    assert all(t > 0 for t in history.epoch_time)


def test_callbacks_see_every_step_and_may_replace_the_model():
    data = load_dataset("digits", "train").subset(256)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))

    class Swap(Callback):
        def __init__(self):
            self.steps = []

        def on_step_end(self, state):
            self.steps.append(state.step)
            if state.step == 2:
                wider = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(),
                                      nn.Linear(16, 10))
                state.model = wider
                state.optimizer = torch.optim.SGD(wider.parameters(), lr=0.1)
                self.new = wider

    cb = Swap()
    fit(model, data, epochs=1, batch_size=64, optimizer=torch.optim.SGD(model.parameters(), 0.1),
        device="cpu", callbacks=[cb], quiet=True)
    assert cb.steps == [1, 2, 3, 4]
    assert cb.new[1].weight.grad is not None  # the swapped-in model was trained


def test_evaluate_restores_mode_and_rejects_empty():
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).train()
    data = load_dataset("digits", "test")
    metrics = evaluate(model, data, device="cpu")
    assert model.training and 0 <= metrics["accuracy"] <= 1
    with pytest.raises(ValueError):
        evaluate(model, data.subset(1).__class__(data.inputs[:0], data.targets[:0], name="e"),
                 device="cpu")


def test_bad_training_parameters_are_errors():
    model = nn.Linear(2, 2)
    data = load_dataset("two-spirals")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="epochs"):
        fit(model, data, epochs=-1, optimizer=opt, device="cpu")
    with pytest.raises(ValueError, match="batch_size"):
        fit(model, data, epochs=1, batch_size=0, optimizer=opt, device="cpu")
    with pytest.raises(ValueError, match="seed"):
        seed_everything(-3)


def test_get_device():
    assert get_device("cpu") == torch.device("cpu")
    assert get_device("auto").type in {"cpu", "cuda"}
    if not torch.cuda.is_available():
        assert get_device("auto") == torch.device("cpu")
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            get_device("cuda")
    with pytest.raises(ValueError, match="unknown device"):
        get_device("tpu7")


def test_flops_of_known_models():
    linear = nn.Linear(100, 10, bias=False)
    assert inference_flops(linear, (1, 100)) == 2 * 100 * 10
    assert inference_flops(linear, (8, 100)) == 8 * 2 * 100 * 10
    conv = nn.Conv2d(3, 16, 3, padding=1, bias=False)
    assert inference_flops(conv, (1, 3, 32, 32)) == 2 * 3 * 16 * 9 * 32 * 32
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
    assert inference_flops(mlp, torch.zeros(1, 1, 28, 28)) == 2 * (784 * 256 + 256 * 10)
    with pytest.raises(ValueError):
        inference_flops(mlp, (0, 784))


def test_count_parameters_counts_shared_once():
    shared = nn.Linear(4, 4)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    assert count_parameters(model) == 20
    shared.bias.requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == 16


def test_timer_measures_elapsed_time():
    with Timer() as t:
        sum(range(10000))
    assert t.seconds > 0


def test_run_directory_writes_complete_files(tmp_path):
    run = RunDirectory(tmp_path, "mlp-seed0")
    _, history = _tiny_run(0)
    run.write_params({"epochs": 2, "lr": 0.1})
    run.write_metrics({"test_acc": torch.tensor(0.9), "widths": [3, 4]})
    run.write_history(history)
    assert run.read_json("params.json") == {"epochs": 2, "lr": 0.1}
    metrics = run.read_json("metrics.json")
    assert metrics["test_acc"] == pytest.approx(0.9) and "written_at" in metrics
    assert run.file("history.csv").read_text().splitlines()[0].startswith("epoch,train_loss")
    assert sorted(p.name for p in run.path.iterdir()) == ["history.csv", "metrics.json",
                                                           "params.json"]
    with pytest.raises(ValueError):
        RunDirectory(tmp_path, "../escape")


def test_atomic_write_keeps_old_file_when_interrupted(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    atomic_write_text(target, json.dumps({"ok": 1}))

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_text(target, json.dumps({"ok": 2}))
    assert json.loads(target.read_text()) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temporary left behind
