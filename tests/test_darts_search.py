"""Schedules, regularisers and the search loop of structlab.darts (CPU, seconds)."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from structlab.darts.regularizers import ADMM, linear_ramp, proximity_penalty
from structlab.darts.schedules import (
    AlternateSchedule,
    ConstantSchedule,
    FIMTSchedule,
    fisher_trace,
    make_schedule,
    train_fraction,
)
from structlab.darts.search import ImageTask, SearchConfig, SearchResult, edge_entropy, search

# --------------------------------------------------------------------------- helpers


def argmax_projection(weights: list[torch.Tensor]) -> list[torch.Tensor]:
    """A tiny Pi_S for tests: each row becomes the one-hot of its argmax (S = one op per edge)."""
    out = []
    for w in weights:
        w = w.detach()
        out.append(F.one_hot(w.argmax(-1), w.shape[-1]).to(w.dtype))
    return out


def in_tiny_s(z: torch.Tensor) -> bool:
    return bool(((z == 0) | (z == 1)).all()) and bool((z.sum(-1) == 1).all())


def run_schedule(schedule, samples) -> list[bool]:
    return [schedule.step(x) for x in samples]


class ToySupernet(nn.Module):
    """Two cells (two alpha tensors), each 2 edges in sequence, each edge a mixture of 3 linear
    ops on 8-dim features; follows the structlab.darts supernet protocol."""

    def __init__(self, activation: str = "softmax", dim: int = 8, classes: int = 3) -> None:
        super().__init__()
        self.activation = activation
        self.primitives = ["lin_a", "lin_b", "lin_c"]
        E, P = 2, 3
        self.ops = nn.ModuleList(
            nn.ModuleList(nn.ModuleList(nn.Linear(dim, dim) for _ in range(P)) for _ in range(E))
            for _ in range(2)
        )
        self.head = nn.Linear(dim, classes)
        if activation == "crb":
            init = [0.5 + 0.01 * torch.randn(E, P) for _ in range(2)]
            init[0][0, 0] = -0.1  # pruned at the first alpha step
        else:
            init = [1e-3 * torch.randn(E, P) for _ in range(2)]
        self.alpha_0 = nn.Parameter(init[0])
        self.alpha_1 = nn.Parameter(init[1])
        self.register_buffer("mask_0", torch.ones(E, P))
        self.register_buffer("mask_1", torch.ones(E, P))
        self.prune_calls = 0

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alpha_0, self.alpha_1]

    def weight_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if not n.startswith("alpha")]

    def activated_weights(self) -> list[torch.Tensor]:
        out = []
        for a, m in zip(self.arch_parameters(), (self.mask_0, self.mask_1)):
            act = torch.softmax(a, -1) if self.activation == "softmax" else a.clamp(0, 1)
            out.append(act * m)
        return out

    def project(self, weights: list[torch.Tensor]) -> list[torch.Tensor]:
        with torch.no_grad():
            return argmax_projection(weights)

    def genotype(self) -> list[list[tuple[str, int]]]:
        proj = self.project(self.activated_weights())
        return [[(self.primitives[int(r.argmax())], e) for e, r in enumerate(p)] for p in proj]

    def prune_nonpositive(self) -> list[tuple[int, int, int]]:
        self.prune_calls += 1
        if self.activation != "crb":
            return []
        events = []
        with torch.no_grad():
            for k, (a, m) in enumerate(zip(self.arch_parameters(), (self.mask_0, self.mask_1))):
                new = (a <= 0) & (m > 0)
                for e, p in new.nonzero().tolist():
                    events.append((k, e, p))
                m[new] = 0.0
        return events

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for cell, w in zip(self.ops, self.activated_weights()):
            for e, edge in enumerate(cell):
                h = torch.relu(sum(w[e, p] * op(h) for p, op in enumerate(edge)))
        return self.head(h)


def toy_data(n_train: int = 8, n_val: int = 5, batch: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    proto = torch.randn(3, 8, generator=g)

    def batches(n):
        out = []
        for _ in range(n):
            y = torch.randint(0, 3, (batch,), generator=g)
            out.append((proto[y] + 0.5 * torch.randn(batch, 8, generator=g), y))
        return out

    return batches(n_train), batches(n_val)


class CountingTask(ImageTask):
    def __init__(self, val_batches) -> None:
        self.ids = {id(b): i for i, b in enumerate(val_batches)}
        self.val_seen: list[int] = []

    def loss(self, model, batch, stream):
        if stream == "val":
            self.val_seen.append(self.ids[id(batch)])
        return super().loss(model, batch, stream)


# --------------------------------------------------------------------------- schedules


@pytest.mark.parametrize("r", [10, 3])
@pytest.mark.parametrize("h0", [0.05, 5.0])  # below and above the constant FIMT 0.5
def test_fimt_constant_sample_long_run_ratio(r, h0):
    s = FIMTSchedule(h0=h0, h_i=1.05, r=r, lam=0.2)
    n = 10_000
    alpha = sum(run_schedule(s, [0.5] * n))
    # Algorithm 3: r w-steps *without* an alpha step per alpha step -> r + 1 w-steps per alpha
    assert s.expected_w_steps_per_alpha == r + 1
    assert (n - alpha) / alpha == pytest.approx(r, rel=0.02)
    assert n / alpha == pytest.approx(r + 1, rel=0.02)
    assert s.n_alpha_steps == alpha and s.n_steps == n


def test_fimt_attributes_and_first_sample():
    s = FIMTSchedule(h0=1.0, h_i=1.05, r=10, lam=0.2)
    assert s.h_d == pytest.approx(math.exp(-10 * math.log(1.05)))
    assert math.isnan(s.fimt) and s.threshold == 1.0
    assert s.step(3.0) is False  # F_1 = first sample (3 > 1), not 0.2 * 3 = 0.6
    assert s.fimt == 3.0 and s.last_threshold == 1.0
    assert s.threshold == pytest.approx(1.05)
    s.step(1.0)  # eq. 19
    assert s.fimt == pytest.approx(0.2 * 1.0 + 0.8 * 3.0)
    s2 = FIMTSchedule(h0=1.0)
    assert s2.step(0.5) is True and s2.threshold == pytest.approx(s2.h_d)


def test_fimt_falling_fimt_delays_then_speeds_up():
    r, n = 10, 3000
    falling = [100.0 * 0.99**k for k in range(n)]
    dyn = run_schedule(FIMTSchedule(h0=1.0, r=r), falling)
    flat = run_schedule(FIMTSchedule(h0=1.0, r=r), [0.5] * n)
    const = run_schedule(ConstantSchedule(r), [0.0] * n)
    first = dyn.index(True)
    assert first > 50 and flat.index(True) == 0 and const.index(True) == r - 1
    assert sum(dyn[:100]) < sum(flat[:100]) and sum(dyn[:100]) < sum(const[:100])
    # once the threshold tracks the falling FIMT it must fall with it: more alpha steps than
    # 1/(r+1), namely (ln h_i - ln d) / ((r + 1) ln h_i) for a decay d per step
    rate = sum(dyn[1000:]) / (n - 1000)
    expected = (math.log(1.05) - math.log(0.99)) / ((r + 1) * math.log(1.05))
    assert rate == pytest.approx(expected, rel=0.05)
    assert rate > 1 / (r + 1)


def test_fimt_decreasing_then_constant_starts_later():
    n = 2000
    seq = [50.0 * (0.5 / 50.0) ** (k / 200) if k < 200 else 0.5 for k in range(n)]
    dec = run_schedule(FIMTSchedule(), seq)
    flat = run_schedule(FIMTSchedule(), [0.5] * n)
    assert dec.index(True) > flat.index(True) + 20
    assert sum(dec[:50]) == 0 < sum(flat[:50])
    # afterwards the same rhythm
    assert n / 2 / sum(dec[n // 2:]) == pytest.approx(11, rel=0.05)


def test_constant_and_alternate_schedules():
    c = ConstantSchedule(r=10)
    d = run_schedule(c, [1.0] * 1000)
    assert [i for i, x in enumerate(d) if x] == list(range(9, 1000, 10))
    assert c.n_alpha_steps == 100
    a = AlternateSchedule()
    assert all(run_schedule(a, [123.0] * 50)) and a.n_alpha_steps == 50
    assert isinstance(make_schedule("alternate"), AlternateSchedule)
    assert make_schedule("constant", r=3).r == 3
    f = make_schedule("fimt", r=4, h0=2.0, h_i=1.1, lam=0.5)
    assert (f.r, f.h0, f.h_i, f.lam) == (4, 2.0, 1.1, 0.5)


def test_schedule_state_dict_roundtrip():
    seq = [float(x) for x in torch.rand(200, generator=torch.Generator().manual_seed(1)) * 2]
    for make in (lambda: FIMTSchedule(), lambda: ConstantSchedule(7), AlternateSchedule):
        a = make()
        run_schedule(a, seq[:80])
        b = make()
        b.load_state_dict(a.state_dict())
        assert run_schedule(a, seq[80:]) == run_schedule(b, seq[80:])
    with pytest.raises(ValueError):
        ConstantSchedule(3).load_state_dict(FIMTSchedule().state_dict())


def test_train_fraction_and_errors():
    assert train_fraction("alternate") == 0.5
    assert train_fraction("constant", 10) == pytest.approx(0.9091, abs=1e-4)
    assert train_fraction("fimt", 10) == pytest.approx(10 / 11)
    assert train_fraction("fimt", 3) == 0.75
    bad = [
        lambda: make_schedule("darts"),
        lambda: train_fraction("cs10"),
        lambda: ConstantSchedule(0),
        lambda: ConstantSchedule(2.5),
        lambda: FIMTSchedule(h_i=1.0),
        lambda: FIMTSchedule(h0=0.0),
        lambda: FIMTSchedule(lam=0.0),
        lambda: FIMTSchedule(r=-1),
        lambda: FIMTSchedule().step(float("nan")),
        lambda: ConstantSchedule().step(-1.0),
    ]
    for f in bad:
        with pytest.raises(ValueError) as info:
            f()
        assert "\n" not in str(info.value)


def test_fisher_trace_sums_squared_grads():
    lin = nn.Linear(4, 3)
    lin(torch.randn(5, 4)).pow(2).sum().backward()
    expected = float(lin.weight.grad.pow(2).sum() + lin.bias.grad.pow(2).sum())
    extra = nn.Parameter(torch.zeros(2))  # no grad: skipped
    assert fisher_trace([lin.weight, lin.bias, extra]) == pytest.approx(expected, rel=1e-6)
    assert fisher_trace([extra]) == 0.0


# --------------------------------------------------------------------------- proximity


def test_proximity_penalty_zero_at_discrete_positive_elsewhere():
    onehot = torch.eye(3)[[0, 2]]
    assert float(proximity_penalty([onehot], argmax_projection([onehot]), 1.0, 0.1)) == 0.0
    w = torch.softmax(torch.randn(2, 3), -1)
    p = proximity_penalty([w], argmax_projection([w]), 1.0, 0.1)
    expected = 0.05 * float(torch.linalg.vector_norm(w - argmax_projection([w])[0]))
    assert float(p) == pytest.approx(expected) and float(p) > 0
    assert float(proximity_penalty([w], argmax_projection([w]), 0.0, 0.1)) == 0.0
    # gradient at a discrete point is 0, not NaN
    d = onehot.clone().requires_grad_(True)
    proximity_penalty([d], argmax_projection([d]), 1.0, 0.1).backward()
    assert torch.equal(d.grad, torch.zeros_like(d))


def test_proximity_gradient_moves_towards_projection():
    g = torch.Generator().manual_seed(3)
    ws = [torch.softmax(torch.randn(4, 5, generator=g), -1).requires_grad_(True) for _ in range(2)]
    proj = argmax_projection(ws)
    proj_leaf = [p.clone().requires_grad_(True) for p in proj]
    pen = proximity_penalty(ws, proj_leaf, c=0.7, rho=0.1)
    pen.backward()
    assert all(p.grad is None for p in proj_leaf)  # Pi_S is a constant
    for w, p in zip(ws, proj):
        inner = float((-w.grad * (p - w.detach())).sum())
        assert inner > 0
        before = float(torch.linalg.vector_norm(w.detach() - p))
        after = float(torch.linalg.vector_norm(w.detach() - 0.1 * w.grad - p))
        assert after < before
        # constant magnitude c rho / 2 (the unsquared norm)
        assert float(torch.linalg.vector_norm(w.grad)) == pytest.approx(0.7 * 0.1 / 2)


def test_linear_ramp_and_penalty_errors():
    assert linear_ramp(0, 100) == 0.0 and linear_ramp(50, 100) == 0.5
    assert linear_ramp(100, 100) == 1.0 and linear_ramp(150, 100) == 1.0
    with pytest.raises(ValueError):
        linear_ramp(1, 0)
    w = torch.rand(2, 3)
    with pytest.raises(ValueError):
        proximity_penalty([w], [], 1.0, 0.1)
    with pytest.raises(ValueError):
        proximity_penalty([w], [torch.zeros(3, 2)], 1.0, 0.1)
    with pytest.raises(ValueError):
        proximity_penalty([w], [torch.zeros(2, 3)], -1.0, 0.1)


# --------------------------------------------------------------------------- ADMM


def test_admm_hand_computed_eq25():
    w0 = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]])
    admm = ADMM(rho_a=0.1, lambda_u=0.8, every=1)
    admm.initialize([w0], argmax_projection)
    assert torch.equal(admm.z[0], torch.tensor([[1.0, 0, 0], [0, 0, 1]]))
    assert torch.equal(admm.u[0], torch.zeros(2, 3))
    # eq. 21: (rho/2) ||w - z + u||^2 = 0.05 * 0.5
    assert float(admm.penalty([w0])) == pytest.approx(0.025)
    w1 = torch.tensor([[0.2, 0.5, 0.3], [0.4, 0.35, 0.25]])
    assert admm.after_alpha_step([w1], argmax_projection)
    assert torch.equal(admm.z[0], torch.tensor([[0.0, 1, 0], [1, 0, 0]]))
    u1 = torch.tensor([[0.2, -0.5, 0.3], [-0.6, 0.35, 0.25]])
    torch.testing.assert_close(admm.u[0], u1)
    w2 = torch.tensor([[0.5, 0.1, 0.3], [0.3, 0.2, 0.5]])
    admm.after_alpha_step([w2], argmax_projection)  # z = Pi(w2 + u1), eq. 23
    assert torch.equal(admm.z[0], torch.tensor([[1.0, 0, 0], [0, 0, 1]]))
    u2 = torch.tensor([[-0.34, -0.3, 0.54], [-0.18, 0.48, -0.3]])  # 0.8 u1 + w2 - z2
    torch.testing.assert_close(admm.u[0], u2)
    expected = 0.05 * float((w2 - admm.z[0] + u2).pow(2).sum())
    assert float(admm.penalty([w2])) == pytest.approx(expected)


def test_admm_updates_exactly_every_k_and_z_in_s():
    g = torch.Generator().manual_seed(0)
    shapes = [(4, 5), (3, 5)]
    admm = ADMM(rho_a=0.1, lambda_u=0.8, every=4)
    admm.initialize([torch.rand(s, generator=g) for s in shapes], argmax_projection)
    updates = []
    for k in range(1, 41):
        ws = [torch.softmax(3 * torch.randn(s, generator=g), -1) for s in shapes]
        z_before = [t.clone() for t in admm.z]
        did = admm.after_alpha_step(ws, argmax_projection)
        if did:
            updates.append(k)
        else:
            assert all(torch.equal(a, b) for a, b in zip(z_before, admm.z))
        assert all(in_tiny_s(z) for z in admm.z)
    assert updates == list(range(4, 41, 4)) and admm.n_updates == 10


def test_admm_gradient_state_dict_and_errors():
    admm = ADMM(every=2)
    with pytest.raises(RuntimeError):
        admm.penalty([torch.rand(2, 3)])
    w = torch.rand(2, 3, requires_grad=True)
    admm.initialize([w], argmax_projection)
    admm.penalty([w]).backward()
    torch.testing.assert_close(w.grad, 0.1 * (w.detach() - admm.z[0] + admm.u[0]))
    admm.after_alpha_step([torch.rand(2, 3)], argmax_projection)
    admm.after_alpha_step([torch.rand(2, 3)], argmax_projection)
    other = ADMM()
    other.load_state_dict(admm.state_dict())
    assert other.every == 2 and other.n_updates == 1
    assert torch.equal(other.u[0], admm.u[0]) and torch.equal(other.z[0], admm.z[0])
    with pytest.raises(ValueError):
        ADMM().initialize([torch.rand(2, 3)], lambda ws: [w * 0.5 for w in ws])
    for bad in (dict(rho_a=-1), dict(lambda_u=1.5), dict(every=0)):
        with pytest.raises(ValueError):
            ADMM(**bad)


def test_admm_with_project_cell():
    genotypes = pytest.importorskip("structlab.darts.genotypes")
    prims = genotypes.PRIMITIVES
    E = genotypes.num_edges(4)

    def project(ws):
        return [genotypes.project_cell(w, prims, 4) for w in ws]

    g = torch.Generator().manual_seed(5)
    admm = ADMM(every=3)
    admm.initialize([torch.softmax(torch.randn(E, len(prims), generator=g), -1)], project)
    assert genotypes.is_discrete_cell(admm.z[0], prims, 4)
    for _ in range(30):
        w = torch.softmax(2 * torch.randn(E, len(prims), generator=g), -1)
        admm.after_alpha_step([w], project)
        assert genotypes.is_discrete_cell(admm.z[0], prims, 4)
    assert admm.n_updates == 10


# --------------------------------------------------------------------------- search


def test_edge_entropy():
    assert edge_entropy([torch.eye(3)]) == 0.0
    assert edge_entropy(torch.full((4, 5), 0.2)) == pytest.approx(math.log(5))
    # pruned (zero) ops do not count; all-zero edges are skipped
    w = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.0, 0.0]])
    assert edge_entropy([w, torch.tensor([[0.2, 0.0, 0.2]])]) == pytest.approx(math.log(2))
    assert math.isnan(edge_entropy([torch.zeros(2, 3)]))


@pytest.mark.parametrize("schedule", ["alternate", "constant", "fimt"])
@pytest.mark.parametrize("regularizer", ["none", "proximity", "admm"])
def test_search_runs_each_schedule_and_regularizer(schedule, regularizer):
    torch.manual_seed(0)
    model = ToySupernet()
    train, val = toy_data()
    initial = copy.deepcopy(model)
    cfg = SearchConfig(schedule=schedule, r=3, h0=10.0, regularizer=regularizer,
                       admm_every=2, record_every=5)
    task = CountingTask(val)
    res = search(model, task, train, val, cfg, epochs=2, device="cpu", progress=False)
    T = 16
    assert res.n_w_steps == T and res.epochs == 2
    assert len(res.fimt_samples) == len(res.losses) == len(res.fimt_ema) == T
    # alpha steps are exactly the schedule's decisions on the recorded FIMT samples
    replay = cfg.make_schedule()
    decided = [t for t, x in enumerate(res.fimt_samples) if replay.step(x)]
    assert res.alpha_steps == decided and res.n_alpha_steps == len(decided)
    if schedule == "alternate":
        assert res.n_alpha_steps == T
    elif schedule == "constant":
        assert res.alpha_steps == list(range(2, T, 3))
    else:
        assert res.n_alpha_steps > 0
        assert all(e < h for e, h in zip(
            [res.fimt_ema[t] for t in res.alpha_steps], [res.thresholds[t] for t in res.alpha_steps]
        ))
        assert not math.isnan(res.thresholds[0])
    if schedule != "fimt":
        assert all(math.isnan(x) for x in res.fimt_ema + res.thresholds)
    # val batches are drawn cyclically, one per alpha step
    assert task.val_seen == [k % len(val) for k in range(res.n_alpha_steps)]
    assert len(res.val_losses) == len(res.penalties) == len(res.ramp) == res.n_alpha_steps
    if regularizer == "none":
        assert all(p == 0.0 for p in res.penalties)
    else:
        assert all(p > 0 for p in res.penalties)
    if regularizer == "proximity":
        assert res.ramp == [(t + 1) / T for t in res.alpha_steps]
    if regularizer == "admm":
        assert res.admm_update_steps == res.alpha_steps[1::2]
    # FIMT of step 1 = sum of squared w-gradients of the first training loss, recomputed
    loss = F.cross_entropy(initial(train[0][0]), train[0][1])
    grads = torch.autograd.grad(loss, initial.weight_parameters())
    assert res.fimt_samples[0] == pytest.approx(float(sum(g.pow(2).sum() for g in grads)),
                                                rel=1e-5)
    # snapshots and final state
    assert res.snapshot_steps == [0, 5, 10, 15, 16]
    assert [tuple(s.shape) for s in res.snapshots] == [(5, 2, 3), (5, 2, 3)]
    torch.testing.assert_close(res.snapshots[0][-1], res.weights[0])
    torch.testing.assert_close(res.weights[0], torch.softmax(res.alphas[0], -1))
    assert all(in_tiny_s(p) for p in res.projection)
    assert res.genotype == model.genotype()
    assert 0 <= res.final_entropy <= math.log(3)
    assert res.wall_time > 0 and res.pruned == [] and model.prune_calls == 0
    assert res.config["schedule"] == schedule
    buf = io.BytesIO()
    torch.save(res, buf)
    buf.seek(0)
    back = torch.load(buf, weights_only=False)
    assert isinstance(back, SearchResult) and back.alpha_steps == res.alpha_steps


def test_search_alphas_move_and_weights_train():
    torch.manual_seed(1)
    model = ToySupernet()
    train, val = toy_data()
    a0 = [a.detach().clone() for a in model.arch_parameters()]
    w0 = [w.detach().clone() for w in model.weight_parameters()]
    res = search(model, ImageTask(), train, val, SearchConfig(), epochs=1, device="cpu",
                 progress=False, seed=0)
    assert all(not torch.equal(a, b) for a, b in zip(a0, res.alphas))
    assert any(not torch.equal(a, b.detach()) for a, b in zip(w0, model.weight_parameters()))
    assert all(p.grad is None for p in model.weight_parameters())


def test_search_crb_prunes_after_alpha_steps():
    torch.manual_seed(0)
    model = ToySupernet(activation="crb")
    train, val = toy_data()
    cfg = SearchConfig(schedule="constant", r=4, regularizer="proximity")
    res = search(model, ImageTask(), train, val, cfg, epochs=1, device="cpu", progress=False)
    assert model.prune_calls == res.n_alpha_steps == 2
    assert res.pruned[0] == (res.alpha_steps[0], 0, 0, 0)
    assert res.config["alpha_cosine"] is False and res.config["alpha_weight_decay"] == 0.0
    assert res.notes and "CRB" in res.notes[0]
    assert res.weights[0][0, 0] == 0.0
    # the caller's config is left unchanged
    assert cfg.alpha_cosine is True and cfg.alpha_weight_decay == 1e-3


def test_search_callback_stop_seed_and_errors():
    train, val = toy_data()
    seen = []

    def cb(info):
        seen.append(info["step"])
        return info["step"] == 4

    torch.manual_seed(0)
    res = search(ToySupernet(), ImageTask(), train, val, SearchConfig(), epochs=3, device="cpu",
                 progress=False, callback=cb)
    assert res.n_w_steps == 5 and seen == [0, 1, 2, 3, 4] and res.snapshot_steps[-1] == 5
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        m = ToySupernet()
        runs.append(search(m, ImageTask(), train, val, SearchConfig(), epochs=1, device="cpu",
                           progress=False, seed=7))
    assert runs[0].losses == runs[1].losses
    with pytest.raises(ValueError):
        SearchConfig(schedule="cs10")
    with pytest.raises(ValueError):
        SearchConfig(regularizer="l2")
    with pytest.raises(ValueError):
        search(ToySupernet(), ImageTask(), [], val, epochs=1, device="cpu", progress=False)
    with pytest.raises(ValueError):
        search(ToySupernet(), ImageTask(), train, [], epochs=1, device="cpu", progress=False)
    with pytest.raises(ValueError):
        search(ToySupernet(), ImageTask(), train, val, epochs=0, device="cpu", progress=False)
    with pytest.raises(ValueError):
        ImageTask().loss(ToySupernet(), train[0], "test")
    prime = SearchConfig.darts_prime(text=True)
    assert (prime.schedule, prime.regularizer, prime.rho_p) == ("fimt", "proximity", 1.0)


def test_search_with_real_supernet():
    """The real CNN supernet (CRB: pruning, ADMM with project_cell), two w-steps on 4x4 images."""
    activation = "crb"
    supernet = pytest.importorskip("structlab.darts.supernet")
    genotypes = pytest.importorskip("structlab.darts.genotypes")
    torch.manual_seed(0)
    model = supernet.Supernet(2, 3, 2, in_channels=1, activation=activation)
    with torch.no_grad():
        model.alphas_normal[0, 1] = -0.01  # pruned after the first alpha step
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(2, 1, 4, 4, generator=g), torch.randint(0, 3, (2,), generator=g))
               for _ in range(3)]
    cfg = SearchConfig(schedule="constant", r=2, regularizer="admm", admm_every=1)
    res = search(model, ImageTask(), batches[:2], batches[2:], cfg, epochs=1, device="cpu",
                 progress=False)
    assert res.n_w_steps == 2 and res.alpha_steps == [1]
    assert all(genotypes.is_discrete_cell(p, model.primitives, 4) for p in res.projection)
    assert isinstance(res.genotype, genotypes.Genotype)
    assert res.admm_update_steps == [1]
    assert (1, 0, 0, 1) in res.pruned and res.weights[0][0, 1] == 0.0
    assert res.config["alpha_cosine"] is False
    buf = io.BytesIO()
    torch.save(res, buf)
