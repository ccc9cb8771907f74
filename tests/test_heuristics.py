"""Noisy Heuristics NAS: stopping rule, importance, HRN morphisms, layer rules, growth placement,
meta-parameters and a tiny end-to-end search."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from structlab.data.base import LabelledTensors
from structlab.experiment_store import ExperimentStore
from structlab.heuristics import (
    HRN,
    FlatteningStop,
    MetaParams,
    MetaSource,
    NeuronDecay,
    add_neurons,
    add_residual,
    allocate_neurons,
    apply_layer_rules,
    flattening_rate,
    grow,
    heuristic_search,
    importance_from,
    importance_scores,
    layer_threshold,
    load_optimizer_state,
    optimizer_state,
    placement_probabilities,
    prune_neurons,
    remove_neurons,
    remove_residual,
    select_neurons,
    should_add_layer,
    two_spirals,
)
from structlab.training import History, TrainState

# ---------------------------------------------------------------------- stopping rule


@pytest.mark.parametrize("a", [-12.0, -5.0, -2.0, 0.0, 0.8])
def test_flattening_fit_recovers_a(a):
    x = np.linspace(0, 1, 200)
    y = np.exp(a * x) * (1 - x)
    assert flattening_rate(y) == pytest.approx(a, abs=1e-3)
    # a loss that rises before it falls is cut at its peak
    assert flattening_rate(np.concatenate([[0.2, 0.7], y])) == pytest.approx(a, abs=1e-3)
    # scaled and shifted losses normalise to the same curve
    assert flattening_rate(3.0 * y + 1.5) == pytest.approx(a, abs=1e-3)
    for seed in range(3):
        noisy = y + 0.01 * np.random.default_rng(seed).standard_normal(y.size)
        assert flattening_rate(noisy) == pytest.approx(a, abs=0.15 * abs(a) + 0.1)


def test_flattening_rate_edge_cases():
    assert np.isnan(flattening_rate([1.0, 0.5]))
    assert flattening_rate([0.3] * 10) == float("-inf")
    # a straight decline is not flat, a sharp drop is
    assert flattening_rate(np.linspace(1, 0, 50)) > -1
    assert flattening_rate(np.exp(-30 * np.linspace(0, 1, 50))) < -5


def _state(epoch: int, loss: float) -> TrainState:
    model = nn.Linear(1, 1)
    state = TrainState(
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        device=torch.device("cpu"),
        history=History(),
        total_steps=100,
    )
    state.epoch, state.loss = epoch, loss
    return state


def _drive(stop: FlatteningStop, curve, steps_per_epoch: int) -> int:
    stop.on_train_begin(_state(0, 0.0))
    for e in range(stop.max_epochs):
        for s in range(steps_per_epoch):
            stop.on_step_end(_state(e, float(curve(e * steps_per_epoch + s))))
        st = _state(e, 0.0)
        stop.on_epoch_end(st)
        if st.stop:
            return e + 1
    return -1


def test_stopping_rule_stops_when_flat_or_at_max_epochs():
    fast = FlatteningStop(10, smoothing=1, min_epochs=2)
    assert _drive(fast, lambda t: np.exp(-t / 3.0), 10) == 2  # flat at once, after min_epochs
    assert fast.reason == "flat" and fast.rate < -5
    slow = FlatteningStop(4, smoothing=1)
    assert _drive(slow, lambda t: 1.0 - t / 100.0, 10) == 4  # never flat: max epochs
    assert slow.reason == "max_epochs" and slow.rate > -5
    with pytest.raises(ValueError):
        FlatteningStop(0)


# ---------------------------------------------------------------------- importance


def test_importance_on_hand_computed_values():
    h = torch.tensor([[1.0, 0.0, 2.0], [3.0, 0.0, 0.0]])
    g = torch.tensor([[0.5, 1.0, -1.0], [-0.1, 2.0, 3.0]])
    # A = [0.5 + 0.3, 0, 2 + 0], B = [1, 0, 0.5]
    expected = torch.tensor([0.8 * (1 - 1.0), 0.0, 2.0 * (1 - 0.5**33)], dtype=torch.float64)
    assert torch.allclose(importance_from(h, g), expected)
    # channels: per image |sum over positions of h g|, B over images and positions
    hc = torch.tensor([[[[1.0, 2.0]]], [[[0.0, 3.0]]]])
    gc = torch.tensor([[[[1.0, -1.0]]], [[[5.0, 1.0]]]])
    assert importance_from(hc, gc).item() == pytest.approx((1 + 3) * (1 - 0.75**33))
    with pytest.raises(ValueError):
        importance_from(h, g[:, :2])


def test_importance_scores_match_autograd():
    torch.manual_seed(0)
    model = HRN.dense(3, 2, hidden=5)
    x, y = torch.randn(7, 3), torch.randint(0, 2, (7,))
    res = model.body[0].residual
    h = res.act(res.f1(x))
    out = model.body[0].shortcut(x) + res.f2(h)
    (g,) = torch.autograd.grad(F.cross_entropy(out, y, reduction="sum"), h)
    scores = importance_scores(model, LabelledTensors(x, y, name="t"), batch_size=3, device="cpu")
    assert set(scores) == {"body.0.residual"}
    assert torch.allclose(scores["body.0.residual"], importance_from(h, g), atol=1e-6)
    assert not any(p.grad is not None for p in model.parameters())


# ---------------------------------------------------------------------- morphisms


def _nested_dense() -> HRN:
    torch.manual_seed(1)
    model = HRN.dense(5, 3, hidden=6)
    add_residual(model, "body.0.residual.f1", 4)
    add_residual(model, "body.0.residual.f2", 3)
    for p in model.parameters():  # random everywhere, so that zero outputs are not an accident
        nn.init.normal_(p, std=0.5)
    return model


def _nested_conv() -> HRN:
    torch.manual_seed(2)
    model = HRN.conv(2, 3, channels=(4, 6), hidden=3)
    add_residual(model, "body.1.residual.f2", 2)
    for name, p in model.named_parameters():
        nn.init.normal_(p, mean=1.0 if name.endswith("norm.weight") else 0.0, std=0.5)
    return model


MODELS = {"dense": (_nested_dense, (4, 5)), "conv": (_nested_conv, (3, 2, 8, 8))}


@pytest.mark.parametrize("kind", list(MODELS))
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_adding_and_removing_residual_layers_preserves_function(kind, mode):
    build, shape = MODELS[kind]
    model = build().train(mode == "train")
    x = torch.randn(shape)
    before = model(x).detach()
    paths = [p for p, c in model.connections() if c.residual is None]
    assert len(paths) >= 3
    for p in paths:
        add_residual(model, p, 3, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(model(x), before, atol=1e-6)
    assert any(
        c.residual.f1.shortcut.weight.abs().sum() > 0
        for _, c in model.connections()
        if c.residual is not None
    )
    for p in paths:  # their output is zero: removal is exact too
        remove_residual(model, p)
    assert torch.allclose(model(x), before, atol=1e-6)
    # a branch whose output is not zero changes the function when removed ...
    branch_conn = "body.0" if kind == "dense" else "body.1"
    trial = build().train(mode == "train")
    remove_residual(trial, branch_conn)
    assert not torch.allclose(trial(x), before, atol=1e-3)
    # ... and does not once its f2 outputs zero (weights and BatchNorm shifts)
    with torch.no_grad():
        for _, c in model.get_submodule(f"{branch_conn}.residual.f2").named_modules():
            if isinstance(c, nn.Linear | nn.Conv2d):
                c.weight.zero_()
            if isinstance(c, nn.BatchNorm2d):
                c.bias.zero_()
    before = model(x).detach()
    remove_residual(model, branch_conn)
    assert torch.allclose(model(x), before, atol=1e-6)


@pytest.mark.parametrize("kind", list(MODELS))
def test_adding_neurons_preserves_function(kind):
    build, shape = MODELS[kind]
    model = build().eval()
    x = torch.randn(shape)
    before = model(x)
    g = torch.Generator().manual_seed(0)
    for path, conn in model.connections():
        if conn.residual is None:
            continue
        width = conn.width
        add_neurons(model, path, 2, generator=g)
        s = model.slot(f"{path}.residual")
        s.check()
        assert s.width == width + 2
        for c in s.consumers:  # new outgoing weights are zero
            assert c.module.weight[:, -2:].abs().sum() == 0
        assert s.producers[0].weight[-2:].abs().sum() > 0  # new fan-in is not
    assert torch.allclose(model(x), before, atol=1e-6)
    # a growable connection without a branch gets one, still preserving the function
    conn = "body.0" if kind == "conv" else "body.0.residual.f1.residual.f1"
    model.connection(conn).growable = True
    assert add_neurons(model, conn, 3, generator=g) == f"{conn}.residual"
    assert model.connection(conn).width == 3
    assert torch.allclose(model(x), before, atol=1e-6)


def test_removing_neurons_matches_smaller_network():
    model = _nested_dense().eval()
    x = torch.randn(4, 5)
    res = model.body[0].residual
    with torch.no_grad():
        res.f2.shortcut.weight[:, [1, 4]] = 0
        res.f2.residual.f1.shortcut.weight[:, [1, 4]] = 0
    before = model(x)
    assert not remove_neurons(model, "body.0.residual", [1, 4])
    assert res.width == 4 and torch.allclose(model(x), before, atol=1e-6)
    assert remove_neurons(model, "body.0.residual.f1.residual", [0, 1, 2, 3])  # whole layer
    assert model.connection("body.0.residual.f1").residual is None


# ---------------------------------------------------------------------- layer rules


@pytest.mark.parametrize("io", [(8, 8), (2, 2), (784, 10), (10, 784), (5, 7)])
def test_layer_rule_fires_exactly_above_threshold(io):
    i, o = io
    m = layer_threshold(i, o)
    floor = int(np.floor(m + 1e-9))
    assert not should_add_layer(floor, i, o) and should_add_layer(floor + 1, i, o)
    for hidden, fires in ((floor, False), (floor + 1, True)):
        model = HRN.dense(i, o, hidden=hidden)
        rules = apply_layer_rules(model, new_layer_width=2)
        res = model.body[0].residual
        assert rules["added"] == (
            ["body.0.residual.f1.residual", "body.0.residual.f2.residual"] if fires else []
        )
        assert res.f1.growable is fires and res.f2.growable is fires
        assert (res.f1.residual is not None) is fires
    assert should_add_layer(8, 8, 8) is False  # (8 * 64)^(1/3) = 7.999... in floating point


def test_layer_rule_removes_narrow_layers():
    model = _nested_dense()
    remove_neurons(model, "body.0.residual.f2.residual", [0, 1])  # width 3 -> 1
    x = torch.randn(3, 5)
    rules = apply_layer_rules(model, new_layer_width=0)
    assert rules["removed"] == ["body.0.residual.f2.residual"]
    assert model.connection("body.0.residual.f2").residual is None
    assert model(x).shape == (3, 3)


# ---------------------------------------------------------------------- shrink phase


def test_pruning_decayed_neurons_changes_outputs_by_the_decayed_weights():
    torch.manual_seed(3)
    model = HRN.dense(4, 3, hidden=6).eval()
    x = torch.randn(5, 4)
    res = model.body[0].residual
    idx = torch.tensor([1, 4])
    selection = {"body.0.residual": idx}
    decay = NeuronDecay(model, selection, steps=4)
    fan_in = res.f1.shortcut.weight[idx].clone()
    with torch.no_grad():
        res.f1.shortcut.weight.add_(1.0)  # a training step moved every fan-in ...
    decay.advance()
    decay.advance()  # factor (1 - 2/4)^2 = 0.25
    assert decay.factor == pytest.approx(0.25)
    assert torch.equal(res.f1.shortcut.weight[idx], fan_in)  # ... the chosen ones are held
    h = res.act(res.f1(x))
    contribution = h[:, idx] @ res.f2.shortcut.weight[:, idx].T
    before = model(x)
    assert contribution.abs().max() > 1e-3
    trial = HRN.from_snapshot(model.snapshot()).eval()
    prune_neurons(trial, selection)
    assert torch.allclose(before - trial(x), contribution, atol=1e-6)
    decay.advance()
    decay.advance()  # fully decayed: removal is exact
    before = model(x)
    removed, layers = prune_neurons(model, selection)
    assert removed == {"body.0": 2} and layers == [] and res.width == 4
    assert torch.allclose(model(x), before, atol=1e-6)


def test_select_neurons_is_global_and_removes_narrow_layers():
    scores = {
        "a.residual": torch.tensor([5.0, 0.1, 3.0, 0.2]),
        "b.residual": torch.tensor([0.05, 9.0, 8.0]),
        "c.residual": torch.tensor([0.3, 7.0]),
        "d.residual": torch.tensor([6.0]),
    }
    sel = select_neurons(scores, 4)
    assert sel["a.residual"].tolist() == [1, 3] and sel["b.residual"].tolist() == [0]
    assert sel["c.residual"].tolist() == [0, 1]  # would keep 1 neuron: whole layer goes
    assert "d.residual" not in sel  # narrow, but not decreased by this pruning: kept
    assert select_neurons(scores, 0, min_layer_width=0) == {}


# ---------------------------------------------------------------------- optimizer state


@pytest.mark.parametrize("opt_name", ["adam", "sgd"])
def test_optimizer_state_survives_morphisms(opt_name):
    torch.manual_seed(4)
    model = HRN.dense(4, 3, hidden=5)
    opt = (
        torch.optim.Adam(model.parameters(), lr=1e-2)
        if opt_name == "adam"
        else torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)
    )
    key = "exp_avg" if opt_name == "adam" else "momentum_buffer"
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))

    def step():
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()

    step()
    step()
    res = model.body[0].residual
    old = opt.state[res.f1.shortcut.weight][key].clone()
    old_out = opt.state[res.f2.shortcut.weight][key].clone()
    add_neurons(model, "body.0", 2, optimizer=opt)
    w = res.f1.shortcut.weight
    assert w.shape[0] == 7 and any(p is w for p in opt.param_groups[0]["params"])
    assert torch.equal(opt.state[w][key][:5], old)
    assert opt.state[w][key][5:].abs().sum() == 0
    assert torch.equal(opt.state[res.f2.shortcut.weight][key][:, :5], old_out)
    if opt_name == "adam":
        assert opt.state[w]["exp_avg_sq"][5:].abs().sum() == 0
    remove_neurons(model, "body.0.residual", [0, 2], optimizer=opt)
    assert torch.equal(opt.state[res.f1.shortcut.weight][key][:3], old[[1, 3, 4]])
    # a new branch joins the optimizer, a removed one leaves it with its state
    branch = add_residual(model, "body.0.residual.f2", 2, optimizer=opt)
    n_params = len(opt.param_groups[0]["params"])
    step()
    assert opt.state[branch.f2.shortcut.weight][key].abs().sum() > 0
    state = optimizer_state(model, opt)
    remove_residual(model, "body.0.residual.f2", optimizer=opt)
    assert len(opt.param_groups[0]["params"]) == n_params - len(list(branch.parameters()))
    assert all(p not in opt.state for p in branch.parameters())
    step()
    # the state by name restores into a rebuilt optimizer
    fresh = (
        torch.optim.Adam(model.parameters())
        if opt_name == "adam"
        else torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)
    )
    load_optimizer_state(model, fresh, state)
    name = "body.0.residual.f1.shortcut.weight"
    assert torch.equal(fresh.state[res.f1.shortcut.weight][key], state[name][key])


# ---------------------------------------------------------------------- growth placement


def test_growth_placement_is_proportional_to_the_moving_average():
    ma = [3.0, 1.0, 0.0, -2.0]
    p = placement_probabilities(ma)
    assert torch.allclose(p, torch.tensor([0.75, 0.25, 0.0, 0.0], dtype=torch.float64))
    n = 40000
    g = torch.Generator().manual_seed(0)
    counts = allocate_neurons(n, ma, generator=g, stat_fraction=1.0)
    assert counts.sum() == n and counts[2] == 0 and counts[3] == 0
    assert counts[0] / n == pytest.approx(0.75, abs=0.01)
    counts = allocate_neurons(n, ma, generator=g)  # 70 % placed, 30 % uniform
    expected = 0.7 * p + 0.3 / 4
    assert torch.allclose(counts.double() / n, expected, atol=0.01)
    assert torch.allclose(placement_probabilities([0.0, -1.0]), torch.tensor([0.5, 0.5]).double())
    model = HRN.dense(3, 2, hidden=0)
    added = grow(model, 7, generator=g)
    assert added == {"body.0": 7} and model.hidden_neurons() == 7


# ---------------------------------------------------------------------- meta-parameters


def test_meta_parameters_schedule_and_validation(tmp_path):
    src = MetaSource([{"neurons_to_add": 4, "learning_rate": 0.1}, {"max_epochs": 3}])
    metas = src.sequence(3)
    assert [m.neurons_to_add for m in metas] == [4, 4, 4]
    assert [m.max_epochs for m in metas] == [10, 3, 3] and metas[2].learning_rate == 0.1
    assert MetaParams(neurons_to_add=10, add_to_remove_ratio=3).neurons_to_prune(10) == 4
    assert MetaParams(add_to_remove_ratio=0.5).neurons_to_prune(6) == 12
    with pytest.raises(ValueError, match="unknown meta-parameters"):
        MetaSource({"neurons": 3})
    with pytest.raises(ValueError, match="add_to_remove_ratio"):
        MetaParams(add_to_remove_ratio=0)
    path = tmp_path / "meta.yaml"
    path.write_text("neurons_to_add: 6\nlearning_rate: 0.01\n")
    assert MetaSource(path).read(0).neurons_to_add == 6


def _tiny_spirals(n: int = 240):
    train, test = two_spirals(n_samples=n, seed=0)
    return train, test


def test_meta_parameters_are_reread_from_file_between_iterations(tmp_path):
    path = tmp_path / "meta.json"
    path.write_text(
        json.dumps(
            {"neurons_to_add": 3, "max_epochs": 1, "decay_epochs": 0, "add_to_remove_ratio": 3.0}
        )
    )
    train, test = _tiny_spirals()

    def edit(record, model):
        if record["iteration"] == 0:
            path.write_text(json.dumps({"neurons_to_add": 5, "learning_rate": 0.02}))

    torch.manual_seed(0)
    history = heuristic_search(
        HRN.dense(2, 2),
        train,
        test,
        meta=path,
        iterations=2,
        device="cpu",
        batch_size=64,
        on_iteration=edit,
    )
    assert sum(history[0]["added"].values()) == 3 and sum(history[1]["added"].values()) == 5
    assert history[1]["meta"]["learning_rate"] == 0.02
    assert history[1]["meta"]["max_epochs"] == 1  # kept from the previous iteration


# ---------------------------------------------------------------------- end to end


def test_search_grows_then_shrinks_on_two_spirals(tmp_path):
    train, test = _tiny_spirals(400)
    grow_ = {
        "neurons_to_add": 16,
        "add_to_remove_ratio": 4.0,
        "learning_rate": 0.03,
        "max_epochs": 10,
        "decay_epochs": 1,
    }
    shrink = {"neurons_to_add": 2, "add_to_remove_ratio": 0.2}
    torch.manual_seed(0)
    model = HRN.dense(2, 2)
    history = heuristic_search(
        model,
        train,
        test,
        meta=[grow_, grow_, shrink],
        iterations=3,
        device="cpu",
        seed=0,
        batch_size=64,
        save_dir=tmp_path / "run",
    )
    hidden = [r["hidden_neurons"] for r in history]
    params = [r["params"] for r in history]
    assert hidden[0] < hidden[1] and hidden[2] < hidden[1]
    assert params[2] < params[1]
    assert sum(history[2]["removed"].values()) >= 10
    assert max(r["val_accuracy"] for r in history) > 0.75  # it learns (chance: 0.5)
    assert model.hidden_neurons() == hidden[-1]
    for r in history:
        assert r["stop_reason"] in ("flat", "max_epochs") and 1 <= r["epochs"] <= 10
        assert sum(r["widths"].values()) == r["hidden_neurons"]
    assert (tmp_path / "run" / "iteration-002.pt").is_file()
    saved = torch.load(tmp_path / "run" / "iteration-002.pt", weights_only=False)
    x = test.inputs
    assert torch.allclose(HRN.from_snapshot(saved["snapshot"]).eval()(x), model.eval()(x))


def test_search_resumes_from_store_identically(tmp_path):
    train, test = _tiny_spirals()
    meta = {"neurons_to_add": 6, "max_epochs": 1, "learning_rate": 0.02}
    torch.manual_seed(0)
    start = HRN.dense(2, 2, hidden=4).snapshot()
    common = dict(meta=meta, device="cpu", seed=3, batch_size=64)
    direct = HRN.from_snapshot(start)
    expected = heuristic_search(direct, train, test, iterations=2, **common)
    store = ExperimentStore(tmp_path / "store", resume=True)
    heuristic_search(HRN.from_snapshot(start), train, test, iterations=1, store=store, **common)
    resumed = HRN.from_snapshot(start)
    history = heuristic_search(resumed, train, test, iterations=2, store=store, **common)
    assert store.resumed == 1 and store.computed == 2
    assert [r["params"] for r in history] == [r["params"] for r in expected]
    assert resumed.spec() == direct.spec()
    for (k, a), b in zip(resumed.state_dict().items(), direct.state_dict().values()):
        assert torch.equal(a, b), k


def test_bad_parameters_fail_fast():
    train, test = _tiny_spirals()
    model = HRN.dense(2, 2)
    with pytest.raises(ValueError, match="iterations"):
        heuristic_search(model, train, iterations=-1)
    with pytest.raises(ValueError, match="placement"):
        heuristic_search(model, train, iterations=1, placement="square")
    with pytest.raises(ValueError, match="HRN"):
        heuristic_search(nn.Linear(2, 2), train, iterations=1)
    with pytest.raises(ValueError, match="width"):
        add_residual(model, "body.0", 0)
    with pytest.raises(ValueError, match="kind"):
        HRN.conv(1, 2, channels=(3,), hidden=0).body[0].__class__(1, 2, kind="rnn")


def test_figures_draw_searches_and_architectures():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from structlab.heuristics import figures, regression_2d

    train, test = _tiny_spirals()
    rtrain, rtest = regression_2d(grid=12)
    meta = {"neurons_to_add": 6, "max_epochs": 1, "decay_epochs": 0}
    torch.manual_seed(0)
    model, rmodel = HRN.dense(2, 2, hidden=3), HRN.dense(2, 1)
    history = heuristic_search(model, train, test, meta=meta, iterations=2, device="cpu")
    rhistory = heuristic_search(rmodel, rtrain, rtest, meta=meta, iterations=1, device="cpu")
    conv = HRN.conv(1, 3, channels=(4, 6), hidden=2)
    figs = [
        figures.plot_flattening_models(),
        figures.plot_flattening_fit(history[0]["train_loss_curve"] + [0.1, 0.05, 0.04]),
        figures.plot_toy_data(train, rtrain),
        figures.plot_toy_fit(model, test, n=20),
        figures.plot_toy_fit(rmodel, rtest, n=20),
        figures.plot_search_history(history),
        figures.plot_search_history(rhistory, x="iteration"),
        figures.plot_params_vs_accuracy({"a": history}, baselines={"b": (100, 0.5)}),
        figures.plot_meta_parameters(history),
        figures.plot_widths(history),
        figures.plot_architecture(history[-1]),
        figures.plot_architecture(conv),
    ]
    assert all(isinstance(f, plt.Figure) for f in figs)
    # one hidden-layer node per residual branch, labelled with its width
    labels = sorted(t.get_text() for t in figs[-1].axes[0].texts if t.get_text().isdigit())
    assert labels == ["2", "2"]  # the stage and the head (the stem does not grow)
    with pytest.raises(ValueError):
        figures.plot_architecture({"nothing": 1})
    plt.close("all")
