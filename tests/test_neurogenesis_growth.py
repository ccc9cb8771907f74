"""Neurogenesis initializations and the growth framework (thesis §6.2.2, Algorithm 4)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from structlab.data.base import LabelledTensors
from structlab.models import MLP, VGG, WideResNet
from structlab.neurogenesis import (
    STRATEGIES,
    GradientTrigger,
    InitContext,
    ModifiedReLU,
    Neurogenesis,
    PresetSchedule,
    auxiliary_gradients,
    effective_dimension,
    gradmax_capacity,
    unit_matrix,
)
from structlab.neurogenesis.initializations import init_gradmax
from structlab.training import History, TrainState, fit


def _toy(n=256, d=16, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = (x[:, :classes] * torch.arange(1, classes + 1)).argmax(1)
    return LabelledTensors(x, y, name="toy")


def _state(model, data, batch=64):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    state = TrainState(
        model=model, optimizer=opt, device=torch.device("cpu"), history=History(), total_steps=100
    )
    state.inputs, state.targets = data.inputs[:batch], data.targets[:batch]
    return state


def _prepare(cb, state, data):
    """Fill the buffers and compute auxiliary gradients as on_step_end would."""
    cb.on_train_begin(state)
    if cb.buffers is not None:
        cb.buffers.observe(data.inputs)
        cb.buffers.update()
    groups = cb._groups(state.model)
    aux = None
    if cb.needs_gradients:
        aux = auxiliary_gradients(state.model, [g[0] for g in groups], state.inputs, state.targets)
    return groups, aux


def _grow_all(cb, state, groups, k):
    """Grow every group by ``k``, refreshing buffers and gradients in between (Algorithm 4)."""
    for g in groups:
        aux = None
        if cb.buffers is not None:
            cb.buffers.update()
        if cb.needs_gradients:
            aux = auxiliary_gradients(
                state.model, [h[0] for h in groups], state.inputs, state.targets
            )
        cb.grow(state, g, k, aux)


PRESERVING = ["north-select", "north-pre", "north-random", "north-weight", "gradmax"]


@pytest.mark.parametrize("strategy", PRESERVING)
def test_function_preserving_growth(strategy):
    torch.manual_seed(0)
    data = _toy()
    model = MLP(16, [6, 5], 3, activation=ModifiedReLU)
    state = _state(model, data)
    cb = Neurogenesis(strategy, max_width=64, buffer_size=128, candidates=50, seed=1)
    groups, _ = _prepare(cb, state, data)
    before = model(data.inputs).detach()
    _grow_all(cb, state, groups, 3)
    assert model.widths() == {"hidden0": 9, "hidden1": 8}
    after = model(data.inputs).detach()
    torch.testing.assert_close(after, before, atol=1e-6, rtol=0)
    # the optimizer follows the grown parameters and can step
    loss = nn.functional.cross_entropy(model(data.inputs), data.targets)
    loss.backward()
    state.optimizer.step()


@pytest.mark.parametrize("strategy", ["firefly", "nest"])
def test_function_changing_growth_runs(strategy):
    torch.manual_seed(0)
    data = _toy()
    model = MLP(16, [6, 5], 3, activation=ModifiedReLU)
    state = _state(model, data)
    cb = Neurogenesis(strategy, max_width=64, candidates=50, seed=1)
    groups, aux = _prepare(cb, state, data)
    cb.grow(state, groups[0], 2, aux)
    assert model.widths()["hidden0"] == 8
    assert torch.isfinite(model(data.inputs)).all()


def test_north_select_does_not_lower_effective_dimension():
    torch.manual_seed(0)
    data = _toy(n=300, d=24)
    model = MLP(24, [10], 3, activation=ModifiedReLU)
    state = _state(model, data)
    cb = Neurogenesis("north-select", max_width=64, buffer_size=300, candidates=200, seed=2)
    groups, _ = _prepare(cb, state, data)
    for _ in range(4):
        cb.buffers.update()
        before = effective_dimension(unit_matrix(cb.buffers["hidden0"].H))
        cb.grow(state, groups[0], 1)
        cb.buffers.update()
        after = effective_dimension(unit_matrix(cb.buffers["hidden0"].H))
        assert after >= before - 1e-12


def test_gradmax_fan_out_is_top_singular_vectors_of_auxiliary_gradient():
    torch.manual_seed(0)
    data = _toy(n=64, d=12, classes=4)
    model = MLP(12, [5], 4, activation=ModifiedReLU)
    x, y = data.inputs, data.targets
    # independent auxiliary gradient: zero-weighted bridging connections B from the input
    # (H_{l-1}) to the next pre-activations (Z_{l+1}); dL/dB = dL/dZ_{l+1} H_{l-1}^T
    B = torch.zeros(4, 12, requires_grad=True)
    l0, l1 = model.layers
    z = l1(model.acts[0](l0(x))) + x @ B.T
    nn.functional.cross_entropy(z, y).backward()
    G = B.grad.double()
    aux = auxiliary_gradients(model, model.layer_slots(), x, y)["hidden0"]
    torch.testing.assert_close(aux.G.double(), G, atol=1e-6, rtol=1e-5)
    k = 3
    ctx = InitContext(slot=model.slot(0), generator=torch.Generator().manual_seed(0), aux=aux)
    new = init_gradmax(ctx, k)
    assert torch.count_nonzero(new.fan_in) == 0
    U = torch.linalg.svd(G)[0][:, :k]
    cols = new.fan_out.double() / new.fan_out.double().norm(dim=0, keepdim=True)
    cos = (cols * U).sum(0).abs()
    torch.testing.assert_close(cos, torch.ones(k, dtype=torch.float64), atol=1e-5, rtol=0)


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_dynamic_growth_stops_at_max_width(strategy):
    torch.manual_seed(0)
    data = _toy(n=256)
    model = MLP(16, [2, 2], 3, activation=ModifiedReLU)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    cb = Neurogenesis(
        strategy,
        max_width=[7, 5],
        buffer_size=64,
        candidates=20,
        grad_scale=0.0,
        gamma_a=0.5,
        gamma_w=0.5,
    )
    hist = fit(
        model,
        data,
        epochs=2,
        batch_size=32,
        optimizer=opt,
        callbacks=[cb],
        quiet=True,
        device="cpu",
    )
    w = model.widths()
    assert w["hidden0"] <= 7 and w["hidden1"] <= 5
    assert all(e["added"] > 0 for e in hist.extra["events"])
    for rec in hist.extra["widths"]:
        assert rec["hidden0"] <= 7 and rec["hidden1"] <= 5
    if strategy in ("north-random", "north-weight", "gradmax"):  # these reach the cap here
        assert w == {"hidden0": 7, "hidden1": 5}


@pytest.mark.parametrize("kind", ["linear", "batched"])
def test_preset_schedules(kind):
    sched = PresetSchedule(final=20, kind=kind)
    total = 100
    targets = [sched.target(4, 20, s, total) for s in range(total + 1)]
    assert targets[0] == 4 and targets[75] == 20 and targets[-1] == 20
    assert all(b >= a for a, b in zip(targets, targets[1:]))
    if kind == "batched":
        assert len(set(targets)) == 9  # initial + 8 events
    torch.manual_seed(0)
    data = _toy(n=128)
    model = MLP(16, [4], 3, activation=ModifiedReLU)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    cb = Neurogenesis("north-random", max_width=64, schedule=PresetSchedule(final=12, kind=kind))
    fit(
        model,
        data,
        epochs=2,
        batch_size=16,
        optimizer=opt,
        callbacks=[cb],
        quiet=True,
        device="cpu",
    )
    assert model.widths()["hidden0"] == 12


def _images(n=32, size=16, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return LabelledTensors(
        torch.rand(n, 3, size, size, generator=g),
        torch.randint(0, classes, (n,), generator=g),
        name="img",
    )


def _step_ok(model, data):
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loss = nn.functional.cross_entropy(model(data.inputs), data.targets)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)


@pytest.mark.parametrize("strategy", ["north-select", "north-random", "north-weight"])
def test_grown_vgg_keeps_working(strategy):
    torch.manual_seed(0)
    data = _images()
    model = VGG(
        "vgg11",
        width_multiplier=0.0625,
        in_channels=3,
        num_classes=4,
        input_size=16,
        activation=ModifiedReLU,
        dense=[8, 8],
    )
    model.eval()
    before = model(data.inputs).detach()
    model.train()
    state = _state(model, data, batch=16)
    cb = Neurogenesis(strategy, max_width=64, buffer_size=16, candidates=10)
    groups, _ = _prepare(cb, state, data)
    _grow_all(cb, state, groups, 2)
    model.eval()
    torch.testing.assert_close(model(data.inputs).detach(), before, atol=1e-5, rtol=1e-5)
    model.train()
    _step_ok(model, data)
    loss = nn.functional.cross_entropy(model(data.inputs), data.targets)
    loss.backward()
    state.optimizer.step()


def test_grown_wideresnet_keeps_working():
    torch.manual_seed(0)
    data = _images()
    model = WideResNet(depth=10, widen_factor=0.25, num_classes=4, activation=ModifiedReLU)
    widths0 = model.widths()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    cb = Neurogenesis("north-select", max_width=12, buffer_size=16, candidates=10, gamma_a=0.5)
    fit(
        model,
        data,
        epochs=2,
        batch_size=16,
        optimizer=opt,
        callbacks=[cb],
        quiet=True,
        device="cpu",
    )
    assert model.residual_enabled
    widths = model.widths()
    for g in range(3):  # the blocks of a group and its stream grow together
        assert widths[f"group{g}.block0"] == widths[f"group{g}"]
        assert widths[f"group{g}"] - widths0[f"group{g}"] == (
            widths[f"group{g}.block0"] - widths0[f"group{g}.block0"]
        )
    for s in model.layer_slots():
        s.check()
    state = _state(model, data, batch=16)
    grower = Neurogenesis("north-random", max_width=64)
    groups, _ = _prepare(grower, state, data)
    model.eval()
    before = model(data.inputs).detach()
    grower.grow(state, groups[1], 3)
    torch.testing.assert_close(model(data.inputs).detach(), before, atol=1e-5, rtol=1e-5)
    model.train()
    _step_ok(model, data)


# ---------------------------------------------------------------- gradient strategies, conv


def _small_vgg(dense=(64,)):
    return VGG(
        "vgg11",
        width_multiplier=0.0625,
        in_channels=1,
        num_classes=4,
        input_size=16,
        activation=ModifiedReLU,
        dense=list(dense),
    )


def _gray(n=16, size=16, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return LabelledTensors(
        torch.rand(n, 1, size, size, generator=g),
        torch.randint(0, classes, (n,), generator=g),
        name="gray",
    )


def _bridged_auxiliary_gradient(model, slot, x, y):
    """Independent G of a conv slot: autograd through an explicit zero bridging channel
    ``consumer(avgpool(conv(H_{l-1}, w)))`` added to ``Z_{l+1}``; ``dL/dw = G^T u``, so column
    ``q`` of ``G`` is the gradient of ``(dL/dw)_q`` with respect to the fan-out ``u``."""
    prod, cons = slot.producers[0], slot.consumers[0]
    m = cons.module
    w = torch.zeros(1, *prod.weight.shape[1:], dtype=x.dtype, requires_grad=True)
    P = m.weight.numel() // slot.width
    u = torch.randn(P, dtype=x.dtype, requires_grad=True)
    seen = {}

    def pre(module, args):
        seen["x"] = args[0]

    def post(module, args, out):
        a = nn.functional.conv2d(seen["x"], w, None, prod.stride, prod.padding, prod.dilation)
        if isinstance(m, nn.Conv2d):
            a = nn.functional.adaptive_avg_pool2d(a, args[0].shape[-2:])
            kern = u.reshape(m.weight.shape[0], 1, *m.weight.shape[2:])
            return out + nn.functional.conv2d(a, kern, None, m.stride, m.padding, m.dilation)
        side = int(round(cons.spatial**0.5))
        a = nn.functional.adaptive_avg_pool2d(a, (side, side))
        return out + a.flatten(1) @ u.reshape(m.weight.shape[0], cons.spatial).T

    hs = [prod.register_forward_pre_hook(pre), m.register_forward_hook(post)]
    try:
        loss = nn.functional.cross_entropy(model(x), y)
    finally:
        for h in hs:
            h.remove()
    (gw,) = torch.autograd.grad(loss, w, create_graph=True)
    gw = gw.flatten()
    eye = torch.eye(gw.numel(), dtype=gw.dtype)
    (rows,) = torch.autograd.grad(gw, u, grad_outputs=eye, is_grads_batched=True)
    return rows.T.detach()


@pytest.mark.parametrize("name", ["conv0", "conv2", "conv7"])  # pooled, same size, flatten
def test_conv_gradmax_fan_out_is_top_singular_vectors_of_bridging_gradient(name):
    torch.manual_seed(0)
    data = _gray()
    model = _small_vgg().double()
    x, y = data.inputs.double(), data.targets
    slot = model.slot(name)
    G = _bridged_auxiliary_gradient(model, slot, x, y)
    aux = auxiliary_gradients(model, [slot], x, y)[name]
    assert aux.G.shape == G.shape
    torch.testing.assert_close(aux.G, G, atol=1e-10, rtol=1e-8)
    k = 2
    ctx = InitContext(slot=slot, generator=torch.Generator().manual_seed(0), aux=aux)
    new = init_gradmax(ctx, k)
    assert torch.count_nonzero(new.fan_in) == 0
    assert new.fan_in.shape == (k, *slot.producers[0].weight.shape[1:])
    cw = slot.consumers[0].module.weight
    out = cw.shape[0]
    vecs = new.fan_out.reshape(out, k, -1).transpose(0, 1).reshape(k, -1)  # (k, P)
    U = torch.linalg.svd(G)[0][:, :k].T
    cos = (vecs / vecs.norm(dim=1, keepdim=True) * U).sum(1).abs()
    torch.testing.assert_close(cos, torch.ones(k, dtype=torch.float64), atol=1e-8, rtol=0)


def test_conv_gradient_trigger_count_and_unit_norms():
    torch.manual_seed(0)
    data = _gray()
    model = _small_vgg()
    slots = model.layer_slots()
    aux = auxiliary_gradients(model, slots, data.inputs, data.targets)
    nn.functional.cross_entropy(model(data.inputs), data.targets).backward()
    for s in slots:
        a = aux[s.name]
        prod, cons = s.producers[0], s.consumers[0].module
        rows = prod.weight.grad.reshape(s.width, -1).pow(2).sum(1)
        if prod.bias is not None:
            rows = rows + prod.bias.grad.pow(2)
        g = cons.weight.grad  # a unit's columns: its kernels or its flatten-boundary block
        cols = g.reshape(g.shape[0], s.width, -1).transpose(0, 1).reshape(s.width, -1)
        expected = rows.sqrt() + cols.norm(dim=1)
        torch.testing.assert_close(a.unit_norms, expected, atol=1e-6, rtol=1e-5)
        cap = gradmax_capacity(s)
        assert cap == min(a.G.shape)
        counts = [GradientTrigger(scale)(s.name, a) for scale in (0.0, 0.01, 0.5, 1.0, 1e6)]
        assert all(isinstance(c, int) and 0 <= c <= cap for c in counts)
        assert counts == sorted(counts, reverse=True) and counts[0] >= 1 and counts[-1] == 0


@pytest.mark.parametrize("strategy", ["gradmax", "firefly", "nest"])
def test_gradient_strategies_grow_vgg_conv_slots(strategy):
    torch.manual_seed(0)
    data = _gray()
    model = _small_vgg()
    state = _state(model, data, batch=16)
    cb = Neurogenesis(strategy, max_width=64, candidates=10, seed=1)
    groups, _ = _prepare(cb, state, data)
    widths0 = model.widths()
    model.eval()
    before = model(data.inputs).detach()
    model.train()
    _grow_all(cb, state, groups, 2)  # every conv slot (pooled, same size, flatten) and dense0
    assert model.widths() == {n: w + 2 for n, w in widths0.items()}
    for s in model.layer_slots():
        s.check()
    model.eval()
    after = model(data.inputs).detach()
    if strategy == "gradmax":
        torch.testing.assert_close(after, before, atol=1e-6, rtol=0)
    assert torch.isfinite(after).all()
    model.train()
    loss = nn.functional.cross_entropy(model(data.inputs), data.targets)
    loss.backward()
    state.optimizer.step()
    _step_ok(model, data)


def test_dynamic_gradmax_on_vgg():
    torch.manual_seed(0)
    data = _gray(n=32)
    model = _small_vgg()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    caps = {n: w + 3 for n, w in model.widths().items()}
    cb = Neurogenesis("gradmax", max_width=caps, grad_scale=0.0)
    hist = fit(
        model,
        data,
        epochs=1,
        batch_size=16,
        optimizer=opt,
        callbacks=[cb],
        quiet=True,
        device="cpu",
    )
    assert hist.extra["events"] and all(e["added"] > 0 for e in hist.extra["events"])
    assert {e["layer"] for e in hist.extra["events"]} >= {"conv0", "conv7"}
    assert all(w <= caps[n] for n, w in model.widths().items())
    for s in model.layer_slots():
        s.check()


def test_wideresnet_group_grows_with_gradmax():
    torch.manual_seed(0)
    data = _images(n=16)
    model = WideResNet(depth=10, widen_factor=0.25, num_classes=4, activation=ModifiedReLU)
    state = _state(model, data, batch=16)
    cb = Neurogenesis("gradmax", max_width=64)
    groups, aux = _prepare(cb, state, data)
    assert [g[0].name for g in groups] == ["group0.block0", "group1.block0", "group2.block0"]
    widths0 = model.widths()
    model.eval()
    before = model(data.inputs).detach()
    model.train()
    cb.grow(state, groups[1], 3, aux)  # block0 of group 1 has a stride-2 conv1
    widths = model.widths()
    assert widths["group1.block0"] == widths0["group1.block0"] + 3
    assert widths["group1"] == widths0["group1"] + 3
    for s in model.layer_slots():
        s.check()
    model.eval()
    torch.testing.assert_close(model(data.inputs).detach(), before, atol=1e-6, rtol=0)
    model.train()
    _step_ok(model, data)
    # a residual stream has several producers: it cannot be measured on its own
    with pytest.raises(NotImplementedError, match="residual stream"):
        auxiliary_gradients(model, [model.slot("group1")], data.inputs, data.targets)
