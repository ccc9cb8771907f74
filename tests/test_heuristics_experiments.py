"""The chapter's experiments around the search: matched static sizes and the stopping comparison."""

from __future__ import annotations

import pytest
import torch

from structlab import seed_everything
from structlab.heuristics import HRN, FlatteningStop
from structlab.heuristics.experiments import matched_width, static_run, stopping_comparison
from structlab.heuristics.toy import two_spirals
from structlab.metrics import count_parameters
from structlab.training import evaluate, fit


@pytest.mark.parametrize("target", [20_570, 30_110, 123_456])
def test_matched_width_gives_the_closest_parameter_count(target):
    width = matched_width(target, 784, 10)
    counts = {h: count_parameters(HRN.dense(784, 10, hidden=h))
              for h in (width - 1, width, width + 1)}
    assert min(counts, key=lambda h: abs(counts[h] - target)) == width
    with pytest.raises(ValueError):
        matched_width(0, 784, 10)


def test_static_run_trains_the_width_it_is_given():
    train, test = two_spirals(n_samples=200, seed=0)
    result = static_run(train, test, hidden=6, epochs=2, lr=0.01, batch_size=32, seed=0,
                        device="cpu")
    assert result["params"] == count_parameters(HRN.dense(2, 2, hidden=6))
    assert 0.0 <= result["accuracy"] <= 1.0 and result["epochs"] == 2


def test_the_rule_is_recorded_while_training_goes_on_to_the_budget():
    """The rule's stop inside the full-budget run is the network a run stopped by the rule gets:
    same epoch, same test loss (training is seeded, so the first epochs coincide)."""
    train, test = two_spirals(n_samples=300, seed=1)
    budget = 8
    fires = stopping_comparison(train, test, hidden=8, max_epochs=budget, lr=0.05, batch_size=16,
                                seed=3, threshold=-0.5, device="cpu")
    assert len(fires["loss"]) == budget and fires["loss_fixed"] == fires["loss"][-1]
    assert fires["fired"] and fires["stop_epoch"] < budget
    assert fires["loss_at_stop"] == fires["loss"][fires["stop_epoch"] - 1]

    seed_everything(3)
    model = HRN.dense(2, 2, hidden=8)
    rule = FlatteningStop(budget, threshold=-0.5)
    fit(model, train, epochs=budget, optimizer=torch.optim.Adam(model.parameters(), lr=0.05),
        batch_size=16, device="cpu", callbacks=[rule], seed=3, quiet=True)
    assert rule.reason == "flat" and rule.epochs == fires["stop_epoch"]
    assert evaluate(model, test, device="cpu")["loss"] == pytest.approx(fires["loss_at_stop"],
                                                                       abs=1e-6)

    never = stopping_comparison(train, test, hidden=8, max_epochs=budget, lr=0.05, batch_size=16,
                                seed=3, threshold=-1e9, device="cpu")
    assert not never["fired"] and never["stop_epoch"] == budget
    assert never["loss"] == fires["loss"]  # the rule only observes


def test_resnet18_is_the_usual_network_at_width_64_and_scales_with_its_width():
    """At width 64 the CIFAR ResNet-18 has its published 11,173,962 parameters; the yardstick
    width for a parameter budget is the smallest whose count reaches it."""
    from structlab.heuristics.baselines import ResNet18, resnet18_width_for

    assert count_parameters(ResNet18(3, 10, width=64)) == 11_173_962
    out = ResNet18(1, 10, width=2)(torch.zeros(3, 1, 28, 28))
    assert out.shape == (3, 10)
    width = resnet18_width_for(200_000, 1, 10)
    assert count_parameters(ResNet18(1, 10, width)) >= 200_000
    assert count_parameters(ResNet18(1, 10, width - 1)) < 200_000
    with pytest.raises(ValueError):
        ResNet18(1, 10, width=0)


def test_resnet_run_is_seeded_and_stored(tmp_path):
    from structlab.data.base import LabelledTensors
    from structlab.experiment_store import ExperimentStore
    from structlab.heuristics.baselines import resnet_run

    images = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    labels = (images.mean(dim=(1, 2, 3)) > 0.5).long()
    train = LabelledTensors(images[:48], labels[:48], name="toy", classes=["low", "high"])
    test = LabelledTensors(images[48:], labels[48:], name="toy", classes=["low", "high"])
    store = ExperimentStore(tmp_path, resume=True)
    kwargs = dict(width=2, epochs=2, lr=0.01, batch_size=16, seed=0, device="cpu")
    first = resnet_run(train, test, store=store, **kwargs)
    again = resnet_run(train, test, **kwargs)  # no store: computed again, same seed
    assert first["accuracy"] == again["accuracy"] and first["loss"] == again["loss"]
    assert len(first["curve"]) == 2 and first["epochs"] == 2
    assert store.computed == 1 and resnet_run(train, test, store=store, **kwargs) == first
    assert store.resumed == 1
