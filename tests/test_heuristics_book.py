"""The chapter's stored experiments (structlab.heuristics.book): the depth log, retraining from
scratch, the pruning-score comparison and the A-alone importance score."""

from __future__ import annotations

import torch

from structlab import seed_everything
from structlab.experiment_store import ExperimentStore
from structlab.heuristics import HRN, importance_from, importance_scores, layer_threshold
from structlab.heuristics.book import (
    PRUNE_SCORES,
    _lowest,
    magnitude_scores,
    prune_experiment,
    retrain_from_scratch,
    search_experiment,
)
from structlab.heuristics.toy import two_spirals
from structlab.metrics import count_parameters


def test_importance_without_exponent_is_a_alone_and_never_below_i():
    h = torch.relu(torch.randn(50, 6))
    h[:, 0] = 1.0  # always firing: I = 0, A > 0
    g = torch.randn(50, 6)
    a = importance_from(h, g, exponent=None)
    i = importance_from(h, g)
    assert torch.allclose(a, (h * g).abs().sum(0, dtype=torch.float64))
    assert bool((i <= a + 1e-12).all()) and float(i[0]) == 0.0 and float(a[0]) > 0.0


def test_importance_scores_a_alone_matches_i_for_rarely_firing_units():
    seed_everything(0)
    train, _ = two_spirals(n_samples=100, seed=0)
    model = HRN.dense(2, 2, hidden=5)
    a = importance_scores(model, train, device="cpu", exponent=None)
    i = importance_scores(model, train, device="cpu")
    for name in a:
        assert bool((i[name] <= a[name] + 1e-12).all())


def test_lowest_picks_the_m_smallest_scores_globally():
    scores = {"a": torch.tensor([3.0, 0.5, 2.0], dtype=torch.float64),
              "b": torch.tensor([0.1, 5.0], dtype=torch.float64)}
    chosen = _lowest(scores, 2)
    assert chosen["a"].tolist() == [1] and chosen["b"].tolist() == [0]


def test_magnitude_scores_are_the_product_of_fan_in_and_fan_out_norms():
    model = HRN.dense(3, 2, hidden=4)
    res = model.branches()[0][1]
    with torch.no_grad():
        res.f2.shortcut.weight.fill_(1.0)
    s = magnitude_scores(model)[model.branches()[0][0]]
    expected = res.f1.shortcut.weight.norm(dim=1) * 2 ** 0.5
    assert torch.allclose(s, expected.double(), atol=1e-6)


def test_depth_log_records_threshold_and_every_layer_change():
    train, test = two_spirals(n_samples=200, seed=0)
    meta = dict(learning_rate=0.01, max_epochs=3, decay_epochs=1)
    schedule = [dict(meta, neurons_to_add=24, add_to_remove_ratio=3.0)] * 2 + [
        dict(meta, neurons_to_add=2, neurons_to_remove=24)] * 2
    result = search_experiment(train, test, kind="dense", schedule=schedule, seed=0, hidden=0,
                               batch_size=32)
    history, events = result["history"], result["events"]
    assert len(result["rows"]) == len(schedule)
    assert [r["depth"] for r in result["rows"]] == [r["depth"] for r in history]
    n_added = sum(len(r["layers_added"]) for r in history)
    n_removed = sum(len(r["layers_removed"]) for r in history)
    assert sum(e["event"] == "added" for e in events) == n_added > 0
    assert sum(e["event"] == "removed" for e in events) == n_removed
    for e in events:
        if e["event"] == "added":  # the rule: H > (I O^2)^(1/3)
            assert e["H"] > e["threshold"] == layer_threshold(e["in"], e["out"])
    for r in history:  # the growth phase keeps the function (evaluation mode)
        assert abs(r["val_loss_after_growth"] - r["val_loss_before_growth"]) < 1e-5
    assert "spec" in history[-1] and all("spec" not in r for r in history[:-1])


def test_retrain_from_scratch_keeps_the_architecture_and_is_seeded():
    train, test = two_spirals(n_samples=200, seed=0)
    model = HRN.dense(2, 2, hidden=6)
    a = retrain_from_scratch(model.spec(), train, test, epochs=2, lr=0.01, batch_size=32, seed=1)
    b = retrain_from_scratch(model.spec(), train, test, epochs=2, lr=0.01, batch_size=32, seed=1)
    assert a["params"] == count_parameters(model) and a["accuracy"] == b["accuracy"]
    assert len(a["curve"]) == 2


def test_prune_experiment_compares_every_score_and_decay_removes_without_a_jump(tmp_path):
    train, test = two_spirals(n_samples=200, seed=0)
    store = ExperimentStore(tmp_path, quiet=True)
    result = prune_experiment(train, test, hidden=16, epochs=2, fraction=0.5, lr=0.01,
                              batch_size=32, seed=0, store=store)
    rows = result["rows"]
    assert [(r["score"], r["decay"]) for r in rows] == [
        (s, d) for s in PRUNE_SCORES for d in (False, True)]
    assert all(r["pruned"] == 8 for r in rows)
    for r in rows:
        if r["decay"]:  # outgoing weights are zero at removal: the function is unchanged
            assert abs(r["jump"]) < 1e-5
    again = prune_experiment(train, test, hidden=16, epochs=2, fraction=0.5, lr=0.01,
                             batch_size=32, seed=0, store=store)
    assert again["rows"] == rows
