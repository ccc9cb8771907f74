"""Triggers that reuse the training pass (issue: structural learning almost free).

The running Gram matrix of an activation FIFO must equal the Gram matrix of what the FIFO holds;
a trigger read from it must count what the SVD of the buffer counts; and the auxiliary gradients
recorded during a training step must equal those of an extra pass at the same weights.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from structlab.data.base import LabelledTensors
from structlab.models import MLP, VGG
from structlab.neurogenesis import (
    ActivationBuffer,
    ActivationTrigger,
    ModifiedReLU,
    Neurogenesis,
    WeightTrigger,
    auxiliary_gradients,
    unit_matrix,
)
from structlab.neurogenesis.buffers import unit_gram
from structlab.neurogenesis.metrics import scaled_singular_values
from structlab.neurogenesis.triggers import GradientRecorder
from structlab.training import fit


def _low_rank(n: int, m: int, rank: int, generator: torch.Generator, spatial=()) -> torch.Tensor:
    basis = torch.randn(rank, m, generator=generator)
    coef = torch.randn(n, *spatial, rank, generator=generator)
    acts = (coef @ basis).relu()
    return acts.movedim(-1, 1) if spatial else acts


@pytest.mark.parametrize("spatial", [(), (3, 3)])
def test_running_gram_equals_gram_of_the_fifo(spatial):
    g = torch.Generator().manual_seed(0)
    buf = ActivationBuffer(100)
    seen_h, seen_x = [], []
    for b in (30, 45, 7, 64, 100, 130, 1, 33):  # partial cuts, whole drops, oversize batches
        h = _low_rank(b, 12, 5, g, spatial)
        x = torch.randn(b, 4, generator=g)
        buf.push(x, h)
        seen_h.append(h)
        seen_x.append(x)
        want_h = torch.cat(seen_h)[-100:]
        torch.testing.assert_close(buf.H, want_h, rtol=0, atol=0)
        torch.testing.assert_close(buf.X, torch.cat(seen_x)[-100:], rtol=0, atol=0)
        if len(buf) > 40:
            gram = buf.gram()
            U = unit_matrix(want_h).double()
            torch.testing.assert_close(gram, U @ U.T, rtol=1e-12, atol=1e-10)
            assert buf.columns == U.shape[1]
    assert len(buf) == 100 and buf.full


def test_a_grown_layer_restarts_its_buffer():
    buf = ActivationBuffer(10)
    buf.push(None, torch.ones(6, 3))
    buf.push(None, torch.ones(6, 4))
    assert len(buf) == 6 and buf.units == 4
    torch.testing.assert_close(buf.gram(), unit_gram(torch.ones(6, 4)))


@pytest.mark.parametrize("metric", ["ed", "og"])
@pytest.mark.parametrize("spatial", [(), (2, 2)])
def test_trigger_from_the_buffer_counts_what_the_svd_counts(metric, spatial):
    g = torch.Generator().manual_seed(1)
    for rank in (1, 4, 9, 16):
        buf = ActivationBuffer(256)
        for _ in range(5):
            buf.push(None, _low_rank(64, 16, rank, g, spatial))
        from_tensor = ActivationTrigger(metric=metric)
        from_buffer = ActivationTrigger(metric=metric)
        assert from_buffer.measure(buf)[1] == from_tensor.measure(buf.H)[1]
        assert from_buffer.measure(buf)[0] == pytest.approx(from_tensor.measure(buf.H)[0], 1e-9)
        assert from_buffer("l", buf) == from_tensor("l", buf.H)


def test_weight_trigger_gram_count_matches_svd():
    torch.manual_seed(0)
    for rows, cols, rank in ((8, 30, 3), (40, 12, 12), (64, 785, 20)):
        W = torch.randn(rows, rank) @ torch.randn(rank, cols)
        svd = int((scaled_singular_values(W) > 0.01).sum())
        gram = int((scaled_singular_values(W, method="gram") > 0.01).sum())
        assert svd == gram == min(rank, rows, cols)
    layer = nn.Linear(30, 8)  # full rank: 8 - floor(0.99 * 8) units at its own baseline
    assert WeightTrigger()("l", layer) == 1


def _vgg():
    """A small VGG with pooling between slots and a flatten boundary before the dense slot."""
    return VGG([4, "M", 6, 6, "M", 8], in_channels=1, num_classes=4, input_size=16,
               activation=ModifiedReLU, dense=[16])


@pytest.mark.parametrize("kind", ["mlp", "vgg"])
def test_recorded_training_pass_equals_the_extra_pass(kind):
    torch.manual_seed(0)
    if kind == "mlp":
        model = MLP(12, [10, 7], 4, activation=ModifiedReLU)
        x = torch.randn(32, 12)
    else:
        model = _vgg()
        x = torch.rand(16, 1, 16, 16)
    y = torch.randint(0, 4, (x.shape[0],))
    slots = list(model.layer_slots())
    model.train()
    reference = auxiliary_gradients(model, slots, x, y)
    recorder = GradientRecorder(slots)
    model.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(model(x), y).backward()
    assert recorder.complete
    recorded = recorder.aux(slots)
    recorder.remove()
    for s in slots:
        a, b = recorded[s.name], reference[s.name]
        for field in ("X", "Z", "dZ_next", "G", "unit_norms"):
            torch.testing.assert_close(getattr(a, field), getattr(b, field), rtol=1e-5, atol=1e-7)
        assert a.consumer_input == b.consumer_input


@pytest.mark.parametrize("strategy", ["north-random", "north-select", "gradmax", "nest"])
def test_streaming_and_refresh_grow_alike(strategy):
    """Both ways of feeding the triggers grow the network during training; streaming runs no
    extra pass on the steps where nothing grows."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(512, 20, generator=g)
    y = (x[:, :4] * torch.arange(1, 5)).argmax(1)
    data = LabelledTensors(x, y, name="toy")
    widths = {}
    for refresh in (False, True):
        torch.manual_seed(0)
        model = MLP(20, [4, 4], 4, activation=ModifiedReLU)
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        cb = Neurogenesis(
            strategy, max_width=32, buffer_size=64, refresh=refresh, candidates=20, grad_scale=0.5
        )
        calls: list[int] = []

        def count(module, args, _calls=calls):
            _calls.append(len(args[0]))

        model.register_forward_pre_hook(count)
        hist = fit(model, data, epochs=2, batch_size=32, optimizer=opt, callbacks=[cb],
                   quiet=True, device="cpu")
        grown = len(hist.extra["events"])
        widths[refresh] = [s.width for s in model.layer_slots()]
        steps = 2 * (512 // 32)
        extra = len(calls) - steps
        if refresh:
            assert extra >= steps - 1  # a refill or an extra pass at every evaluation
        else:
            assert extra <= 2 * grown  # only after growth events
    assert widths[False] != [4, 4] and widths[True] != [4, 4]


def test_inertia_count_equals_eigenvalue_count():
    """The LDL^T inertia count of eq. 27 against eigvalsh, on rank-deficient Gram matrices
    (whose shifted factorisations need 2 x 2 pivots) of many shapes and scales."""
    from structlab.neurogenesis.triggers import gram_rank_count

    g = torch.Generator().manual_seed(0)
    two_by_two = 0
    for trial in range(200):
        M = int(torch.randint(2, 90, (), generator=g))
        r = int(torch.randint(1, M + 1, (), generator=g))
        H = torch.randn(M, r, generator=g, dtype=torch.float64) @ torch.randn(
            r, 300, generator=g, dtype=torch.float64
        )
        H = H * float(torch.rand((), generator=g)) * 3
        if trial % 2:
            H = H.relu()
        gram = H @ H.T
        n = 300 if trial % 3 else int(float(gram.diagonal().mean()) * 5e3) + 1
        eps = 0.01
        want = int((torch.linalg.eigvalsh(gram / n) > eps * eps).sum())
        shifted = gram / n - eps * eps * torch.eye(M, dtype=torch.float64)
        two_by_two += bool((torch.linalg.ldl_factor_ex(shifted)[1] < 0).any())
        assert gram_rank_count(gram / n, eps) == want
    assert two_by_two > 10  # the 2 x 2 blocks were exercised
