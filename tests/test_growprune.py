"""DYNO grow-and-prune (thesis chapter 7): triggers (eqs. 37-39), SELECT_PRUNE, INIT_GROW,
Algorithm 5 as a callback, Auto-RGN and the transfer set-ups. Small synthetic tensors only."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from structlab.data import LabelledTensors
from structlab.experiment_store import ExperimentStore
from structlab.growprune import (
    DYNO,
    AutoRGN,
    GrowPruneTrigger,
    TransferTask,
    TransferVGG,
    WeightsUnavailableError,
    finetune_run,
    imagenet_vgg11,
    inference_flops,
    init_grow,
    phi_from_gram,
    relative_gradient_norms,
    rgn_learning_rates,
    rgn_param_groups,
    select_prune,
    trig_grow,
    trig_prune,
)
from structlab.growprune.transfer import _torchvision_key_map
from structlab.models import MLP
from structlab.neurogenesis import effective_dimension
from structlab.neurogenesis.buffers import unit_gram
from structlab.training import History, TrainState, fit

TINY = {"cfg": [4, "M", 6, "M"], "dense": [8], "in_channels": 1, "num_classes": 3,
        "input_size": 8, "pool_to": None, "dropout": 0.0, "mean": None, "std": None}


def _rank_matrix(M: int, n: int, rank: int, seed: int = 0) -> torch.Tensor:
    """``(M, n)`` activations of rank ``rank`` with well-separated singular values."""
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(M, rank, generator=g, dtype=torch.float64)
    B = torch.randn(rank, n, generator=g, dtype=torch.float64)
    return A @ B


# ---------------------------------------------------------------------------- triggers
def test_phi_from_gram_is_effective_dimension():
    H = _rank_matrix(10, 200, 6)
    phi = phi_from_gram(H @ H.T, 200, 1e-2)
    assert phi == pytest.approx(0.6)
    assert phi == pytest.approx(effective_dimension(H, 1e-2))


@pytest.mark.parametrize(
    ("rank", "star", "prune", "grow"),
    [
        (5, 0.8, math.floor(10 * (0.97 * 0.8 - 0.5)), 0),  # eq. 38: 2
        (10, 0.5, 0, math.floor(10 * (1.0 - 1.03 * 0.5))),  # eq. 39: 4
        (6, 0.6, 0, 0),  # no significant change
        (6, 0.61, 0, 0),  # within delta: neither
    ],
)
def test_triggers_follow_eqs_38_39(rank, star, prune, grow):
    H = _rank_matrix(10, 200, rank)
    phi = phi_from_gram(H @ H.T, 200, 1e-2)
    assert trig_prune(phi, star, 10, 3e-2) == prune
    assert trig_grow(phi, star, 10, 3e-2) == grow


def test_trigger_counts_are_non_negative():
    for phi in torch.linspace(0, 1, 21).tolist():
        for star in torch.linspace(0, 1, 21).tolist():
            p, g = trig_prune(phi, star, 64), trig_grow(phi, star, 64)
            assert p >= 0 and g >= 0
            assert p == 0 or g == 0


def test_trigger_baseline_moves_only_on_reset():
    trig = GrowPruneTrigger(3e-2, 1e-2)
    assert trig.counts("l", 0.5, 10) == (0, 0)  # first measurement: the baseline
    assert trig.phi_star["l"] == 0.5
    assert trig.counts("l", 0.2, 10) == (2, 0)
    assert trig.counts("l", 0.9, 10) == (0, 3)
    assert trig.phi_star["l"] == 0.5  # evaluating never moves phi*
    trig.reset("l", 0.9)
    assert trig.counts("l", 0.9, 10) == (0, 0)


# ---------------------------------------------------------------------------- SELECT_PRUNE
def _redundant_layer() -> torch.Tensor:
    """Unit matrix of 8 ReLU units: 1 and 5 dormant, 3 and 6 duplicates (same support, scaled),
    the others on disjoint supports (orthogonal)."""
    H = torch.zeros(8, 80, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    for u, block in zip([0, 2, 3, 4, 7], range(5)):
        H[u, block * 16 : (block + 1) * 16] = torch.rand(16, generator=g, dtype=torch.float64) + 0.1
    H[6] = 2.5 * H[3]
    return H


def test_select_prune_takes_dormant_first_then_duplicates():
    G = unit_gram(_redundant_layer().T)
    assert select_prune(G, 1).tolist() == [1, 5]  # every dormant unit, even beyond k
    three = select_prune(G, 3).tolist()
    assert three[:2] == [1, 5] and three[2] in (3, 6)
    # without the dormant rule a duplicate is the most redundant unit
    assert select_prune(G, 1, dormant_first=False).tolist()[0] in (3, 6)
    # once one duplicate is gone no unit is similar to another: ties break by index
    four = select_prune(G, 4).tolist()
    assert set(four[2:]) & {3, 6} and len(set(four)) == 4
    assert select_prune(G, 20).numel() == 7  # one unit always survives


def test_select_prune_greedy_norm_of_cosines():
    # units 0, 1, 2 share a direction pairwise at decreasing similarity; 3 is orthogonal
    H = torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 0.9, 0.1, 0.0], [1.0, 0.0, 1.0, 0.0],
                      [0.0, 0.0, 0.0, 1.0]], dtype=torch.float64)
    G = H @ H.T
    Hn = H / H.norm(dim=1, keepdim=True)
    C = Hn @ Hn.T
    C.fill_diagonal_(0)
    first = int(C.pow(2).sum(1).argmax())
    assert select_prune(G, 1, dormant_first=True)[0].item() == first
    assert 3 not in select_prune(G, 2).tolist()


# ---------------------------------------------------------------------------- INIT_GROW
def test_init_grow_activations_and_selection():
    torch.manual_seed(0)
    model = MLP(6, [5], 2)
    slot = model.slot(0)
    X = torch.randn(40, 6)
    with torch.no_grad():
        H = model.acts[0](model.layers[0](X))
    gen = torch.Generator().manual_seed(1)
    fan_in, acts = init_grow(slot, X, H, 2, generator=gen, candidates=50)
    assert fan_in.shape == (2, 6) and acts.shape == (40, 2)
    assert torch.allclose(acts, torch.relu(X @ fan_in.T))
    norm = model.layers[0].weight.norm(dim=1).mean()
    assert torch.allclose(fan_in.norm(dim=1), norm.expand(2), rtol=1e-5)


# ---------------------------------------------------------------------------- Algorithm 5
def _tiny_state(seed: int = 0):
    torch.manual_seed(seed)
    model = TransferVGG(**TINY)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(200, 1, 8, 8)
    y = torch.randint(0, 3, (200,))
    loss = nn.functional.cross_entropy(model(x[:64]), y[:64])
    loss.backward()
    opt.step()  # Adam state to carry through the changes
    state = TrainState(model=model, optimizer=opt, device=torch.device("cpu"),
                       history=History(), step=0)
    return model, opt, state, x, y


def _dyno_ready(state, x, **kw) -> DYNO:
    dyno = DYNO(every=10, min_samples=16, **kw)
    dyno.on_train_begin(state)
    for start in range(0, 200, 50):
        state.inputs = x[start : start + 50]
        state.step += 1
        dyno.on_step_end(state)
    return dyno


def test_baselines_set_from_forward_activations_and_kept_without_change():
    model, opt, state, x, _ = _tiny_state()
    dyno = _dyno_ready(state, x)
    names = [s.name for s in model.layer_slots()]
    assert set(dyno.trigger.phi_star) == set(names)
    before = dict(dyno.trigger.phi_star)
    dyno.buffers.refill()  # the activations the evaluation will see
    for s in model.layer_slots():  # make every trigger silent: phi* = the current phi_ED
        dyno.trigger.reset(s.name, dyno._phi(s))
    silent = dict(dyno.trigger.phi_star)
    state.step = 10
    dyno.grow_and_prune(state)
    assert dyno.events == [] and dyno.trigger.phi_star == silent
    assert before.keys() == silent.keys()


def test_initial_baseline_full_rank_or_first_target_measurement():
    # initial_phi=1.0 (the authors' code): phi* starts at full rank, the first evaluation
    # prunes each layer to what the target data uses (eq. 38 against phi* = 1)
    model, opt, state, x, _ = _tiny_state()
    dyno = _dyno_ready(state, x, initial_phi=1.0)
    assert dyno.trigger.phi_star == {s.name: 1.0 for s in model.layer_slots()}
    dyno.buffers.refill()
    expected = {s.name: trig_prune(dyno._phi(s), 1.0, s.width) for s in model.layer_slots()}
    state.step = 10
    dyno.grow_and_prune(state)
    first = next(s.name for s in model.layer_slots())
    pruned = {e["layer"]: e["pruned"] for e in dyno.events}
    assert pruned.get(first, 0) == expected[first]
    # initial_phi=None: phi* is each layer's first measurement on the target data
    model, opt, state, x, _ = _tiny_state()
    dyno = DYNO(every=10, min_samples=16, initial_phi=None)
    dyno.on_train_begin(state)
    assert dyno.trigger.phi_star == {}
    for start in range(0, 200, 50):  # the baselines appear once the input FIFO is full
        state.inputs = x[start : start + 50]
        state.step += 1
        dyno.on_step_end(state)
        if len(dyno.trigger.phi_star) == len(model.layer_slots()):
            break
    assert dyno.trigger.phi_star == {s.name: dyno._phi(s) for s in model.layer_slots()}
    assert min(dyno.trigger.phi_star.values()) < 1.0
    with pytest.raises(ValueError, match="initial_phi"):
        DYNO(initial_phi=1.5)


def test_prune_then_grow_keeps_function_optimizer_and_training():
    model, opt, state, x, y = _tiny_state()
    dyno = _dyno_ready(state, x)
    conv1, dense0 = model.slot("conv1"), model.slot("dense0")
    W_old = model.convs[1].weight.detach().clone()
    m_old = opt.state[model.convs[1].weight]["exp_avg"].clone()
    # force: prune conv1 (phi* far above), grow dense0 (phi* far below), others silent
    dyno.buffers.refill()
    for s in model.layer_slots():
        dyno.trigger.reset(s.name, dyno._phi(s))
    dyno.trigger.reset("conv1", 1.0 / 0.9)
    dyno.trigger.reset("dense0", 0.0)
    gram = dyno.buffers["conv1"].gram()
    phi = phi_from_gram(gram, dyno.buffers["conv1"].columns)
    k_expected = trig_prune(phi, 1.0 / 0.9, 6)
    expected = select_prune(gram, k_expected).tolist()
    state.step = 10
    with torch.no_grad():
        model.eval()
        feats = model.acts[1](model.convs[1](model.pool(model.acts[0](model.convs[0](x[:20])))))
    dyno.grow_and_prune(state)
    assert conv1.width == 6 - len(expected) and len(expected) >= 1
    keep = [i for i in range(6) if i not in expected]
    # the kept units are the same units: weights, Adam moments and post-activations
    assert torch.equal(model.convs[1].weight.detach(), W_old[keep])
    assert torch.equal(opt.state[model.convs[1].weight]["exp_avg"], m_old[keep])
    with torch.no_grad():
        new = model.acts[1](model.convs[1](model.pool(model.acts[0](model.convs[0](x[:20])))))
    assert torch.allclose(new, feats[:, keep])
    # dense0 grew with zero fan-out; new units start with zero Adam state
    grown = dense0.width - 8
    assert grown > 0
    assert torch.count_nonzero(model.dense[1].weight[:, 8:]) == 0
    assert torch.count_nonzero(opt.state[model.dense[0].weight]["exp_avg"][8:]) == 0
    ev = {e["layer"]: e for e in dyno.events}
    assert ev["conv1"]["pruned"] == len(expected) and ev["dense0"]["grown"] == grown
    # phi* reset to the changed layers' phi_ED
    assert dyno.trigger.phi_star["conv1"] < 1.0 and dyno.trigger.phi_star["dense0"] > 0.0
    # the optimizer holds exactly the model's parameters, and training goes on
    params = {id(p) for g in opt.param_groups for p in g["params"]}
    assert params == {id(p) for p in model.parameters()}
    data = LabelledTensors(x, y, name="toy")
    fit(model, data, epochs=1, optimizer=opt, batch_size=50, quiet=True)
    assert torch.isfinite(model(x[:4])).all()


def test_growth_preserves_network_output():
    model, opt, state, x, _ = _tiny_state(1)
    dyno = _dyno_ready(state, x)
    dyno.buffers.refill()
    dyno.trigger.reset("conv0", 0.0)  # grow conv0 and dense0, conv1 silent
    dyno.trigger.reset("conv1", dyno._phi(model.slot("conv1")))
    dyno.trigger.reset("dense0", 0.0)
    with torch.no_grad():
        model.eval()
        before = model(x[:10])
    state.step = 10
    dyno.grow_and_prune(state)
    assert model.slot("conv0").width > 4 and model.slot("dense0").width > 8
    with torch.no_grad():
        model.eval()
        assert torch.allclose(model(x[:10]), before, atol=1e-6)


# ---------------------------------------------------------------------------- Auto-RGN
def test_auto_rgn_learning_rates_hand_computed():
    model = nn.Sequential(nn.Linear(2, 2, bias=False), nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        model[0].weight.fill_(1.0)  # ||theta|| = 2
        model[1].weight.copy_(torch.tensor([[0.6, 0.8]]))  # ||theta|| = 1
    model[0].weight.grad = torch.full((2, 2), 0.2)  # ||g|| = 0.4 -> RGN 0.2
    model[1].weight.grad = torch.tensor([[0.3, 0.4]])  # ||g|| = 0.5 -> RGN 0.5
    opt = torch.optim.SGD(rgn_param_groups(model), lr=0.1)
    assert relative_gradient_norms(opt.param_groups) == pytest.approx([0.2, 0.5])
    assert rgn_learning_rates([0.2, 0.5], 0.1) == pytest.approx([0.04, 0.1])
    cb = AutoRGN()
    state = TrainState(model=model, optimizer=opt, device=torch.device("cpu"), history=History())
    cb.on_train_begin(state)
    w0, w1 = model[0].weight.detach().clone(), model[1].weight.detach().clone()
    opt.step()  # the pre-hook sets the rates from these gradients first
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.04, 0.1])
    assert torch.allclose(model[0].weight, w0 - 0.04 * 0.2)
    assert torch.allclose(model[1].weight, w1 - 0.1 * torch.tensor([[0.3, 0.4]]))
    cb.on_train_end(state)
    assert state.history.extra["rgn_lr"][0]["lr"] == pytest.approx([0.04, 0.1])


# ---------------------------------------------------------------------------- transfer
def test_inference_flops_counts_multiply_adds():
    assert inference_flops(nn.Linear(7, 3, bias=False), (7,)) == 2 * 7 * 3


def test_imagenet_weights_offline_fail_with_one_line(tmp_path):
    with pytest.raises(WeightsUnavailableError) as err:
        imagenet_vgg11(download=False, root=tmp_path)
    assert "\n" not in str(err.value) and "VGG-11" in str(err.value)


def test_torchvision_vgg11_key_map():
    from structlab.growprune import IMAGENET_VGG11_CONFIG

    keys = _torchvision_key_map(IMAGENET_VGG11_CONFIG)
    convs = [int(k.split(".")[1]) for k in keys if k.startswith("features") and "weight" in k]
    assert convs == [0, 3, 6, 8, 11, 13, 16, 18]
    assert keys["classifier.6.weight"] == "dense.2.weight"


def test_finetune_run_records_and_resumes(tmp_path):
    torch.manual_seed(0)
    src_model = TransferVGG(**TINY)
    source = {"name": "toy", "config": TINY, "state": src_model.state_dict()}
    g = torch.Generator().manual_seed(0)
    x = torch.rand(160, 1, 8, 8, generator=g)
    y = (x.mean((1, 2, 3)) > 0.5).long() + (x[:, 0, 0, 0] > 0.5).long()
    task = TransferTask("toy", LabelledTensors(x[:128], y[:128], name="toy/train"),
                        LabelledTensors(x[128:], y[128:], name="toy/test"), 3)
    store = ExperimentStore(tmp_path, resume=True)
    kw = dict(steps=12, batch_size=16, every=4, min_samples=16, candidates_per_unit=10,
              device="cpu", store=store)
    rec = finetune_run(task, source, "dyno+sft", 0, **kw)
    assert 0.0 <= rec["accuracy"] <= 1.0 and rec["flops"] > 0
    assert [r["step"] for r in rec["trace"]] == [0, 4, 8, 12]
    assert set(rec["grown"]) == set(rec["widths"]) == {"conv0", "conv1", "dense0"}
    for name, w in rec["widths"].items():
        assert w == rec["initial_widths"][name] + rec["grown"][name] - rec["pruned"][name]
    again = finetune_run(task, source, "dyno+sft", 0, **kw)
    assert store.resumed == 1 and again["accuracy"] == rec["accuracy"]
    static = finetune_run(task, source, "static", 0, **{**kw, "store": None})
    assert static["widths"] == static["initial_widths"] and static["events"] == []
    # the report tables of Figure 35 add up the same runs
    from structlab.growprune import flops_trace, layer_changes, runs_frame, total_change

    runs = runs_frame([rec, static])
    assert list(runs.method) == ["dyno+sft", "static"]
    assert runs.loc[1, "flops_ratio"] == 1.0 and runs.loc[1, "grown"] == 0
    assert runs.loc[0, "grown"] == sum(rec["grown"].values())
    changes = layer_changes([rec])
    assert list(changes.layer) == ["conv0", "conv1", "dense0"]
    for row in changes.itertuples():
        assert row.final == pytest.approx(1 + row.grown - row.pruned)
    turn = total_change(changes)
    assert turn.change.tolist() == pytest.approx((changes.grown + changes.pruned).tolist())
    assert len(flops_trace([rec])) == len(rec["trace"])


def test_layer_effective_dimensions_match_eq_37_on_the_post_activations():
    """phi_ED per layer as DYNO measures it equals eq. 37 on the layer's post-activations of
    the buffered inputs (the last n_l of them)."""
    from structlab.growprune import layer_effective_dimensions

    torch.manual_seed(0)
    model = TransferVGG(**TINY).eval()
    x = torch.rand(300, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    phi = layer_effective_dimensions(model, x, min_samples=40)
    assert set(phi) == {"conv0", "conv1", "dense0"}
    # dense0: the post-activations of the last 40 inputs (n_l = max(40, 2 * 8 + 1))
    h = {}
    handle = model.layer_slots()[-1].activation.register_forward_hook(
        lambda m, a, out: h.setdefault("dense0", out))
    model(x[-40:])
    handle.remove()
    assert phi["dense0"] == pytest.approx(effective_dimension(h["dense0"].T.double(), 1e-2))


def test_targets_are_checked_against_the_source_before_loading():
    from structlab.growprune import load_targets

    with pytest.raises(ValueError, match="transfers to imagenette"):
        load_targets("imagenet-vgg11", ["mnist5k"])
    with pytest.raises(ValueError, match="transfers to fashion-5-9"):
        load_targets("book", ["galaxy10"])
    with pytest.raises(ValueError, match="unknown source"):
        load_targets("resnet", ["mnist5k"])
    tasks = load_targets("book", ["mnist5k"], n_train=50, n_test=20)
    assert len(tasks["mnist5k"].train) == 50 and tasks["mnist5k"].num_classes == 10


def test_scaled_spectrum_eq37_and_authors_scaling():
    from structlab.growprune import phi_of, scaled_spectrum

    g = torch.Generator().manual_seed(0)
    acts = torch.rand(40, 6, 3, 3, generator=g)  # 360 columns of 6 units
    acts[:, 2] = 0.0
    rows = acts.transpose(0, 1).reshape(6, -1).double()
    n = rows.shape[1]
    # eq. 37: the singular values of H / sqrt(n), and phi_ED as phi_from_gram computes it
    ref = torch.linalg.svdvals(rows / math.sqrt(n))
    assert torch.allclose(scaled_spectrum(acts), ref, atol=1e-6)
    for eps in (1e-3, 1e-2, 0.3):
        assert phi_of(acts, eps) == pytest.approx(phi_from_gram(unit_gram(acts), n, eps))
    # the authors' code: H / sqrt(M); without subsampling a factor sqrt(n / M) larger
    wide = scaled_spectrum(acts, scaling="width", limit_ratio=-1)
    assert torch.allclose(wide, ref * math.sqrt(n / 6), atol=1e-6)
    # with limit_ratio 3: 18 of the 360 columns, a dormant unit stays a zero singular value
    sub = scaled_spectrum(acts, scaling="width", generator=torch.Generator().manual_seed(1))
    assert sub.numel() == 6 and float(sub[-1]) < 1e-6 and float(sub[0]) > 0
    assert phi_of(acts, 1e-6, scaling="width", generator=torch.Generator()) == pytest.approx(5 / 6)
    with pytest.raises(ValueError, match="scaling"):
        scaled_spectrum(acts, scaling="rows")


def test_scaled_config_multiplies_every_width():
    from structlab.growprune import scaled_config

    cfg = scaled_config(TINY, 2.0)
    assert cfg["cfg"] == [8, "M", 12, "M"] and cfg["dense"] == [16]
    assert scaled_config(TINY, 0.1)["cfg"] == [1, "M", 1, "M"]
    assert scaled_config(TINY, 0.5, convs=False) == {**TINY, "dense": [4]}
    assert TransferVGG(**cfg).widths() == {"conv0": 8, "conv1": 12, "dense0": 16}
    with pytest.raises(ValueError):
        scaled_config(TINY, 0.0)


def test_validation_baseline_is_phi_on_validation_inputs_after_a_change():
    model, opt, state, x, _ = _tiny_state()
    val = torch.rand(64, 1, 8, 8)
    dyno = _dyno_ready(state, x, initial_phi=1.0, baseline_data="validation", validation=val,
                       scaling="width")
    state.step = 10
    dyno.grow_and_prune(state)
    changed = {e["layer"] for e in dyno.events}
    assert changed  # phi* = 1 prunes at the first evaluation
    from structlab.growprune import DynamicBuffers, phi_of

    slots = [s for s in model.layer_slots() if s.name in changed]
    buffers = DynamicBuffers(model, slots, ratio=1.0, min_samples=64)
    buffers.observe(val)
    buffers.refill()
    for s in slots:  # the same columns are drawn when the generator is replayed
        assert 0 < dyno.trigger.phi_star[s.name] <= 1
        assert dyno.trigger.phi_star[s.name] == pytest.approx(
            phi_of(buffers[s.name].H, dyno.eps, scaling="samples"), abs=0.5)
    buffers.remove()
    with pytest.raises(ValueError, match="validation"):
        DYNO(baseline_data="validation")
    with pytest.raises(ValueError, match="scaling"):
        DYNO(scaling="rows")


def test_evaluation_changes_fill_every_evaluation():
    from structlab.growprune import evaluation_changes

    r = {"task": "t", "method": "dyno", "seed": 0, "initial_widths": {"a": 4, "b": 10},
         "events": [{"step": 50, "layer": "b", "grown": 0, "pruned": 5},
                    {"step": 150, "layer": "a", "grown": 2, "pruned": 0}]}
    frame = evaluation_changes([r, {**r, "method": "static", "events": []}], 50, 200)
    assert len(frame) == 4 * 2 and set(frame.method) == {"dyno"}
    assert frame.pruned.sum() == 5 and frame.grown.sum() == 2
    row = frame[(frame.step == 150) & (frame.layer == "a")].iloc[0]
    assert row.grown_rel == pytest.approx(0.5)
