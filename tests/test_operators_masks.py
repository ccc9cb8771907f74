"""Synaptic pruning and synaptogenesis through masks."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from structlab.operators import (
    connection_gradients,
    get_mask,
    prune_global,
    prune_unstructured,
    regrow_connections,
    remove_masks,
    set_mask,
    sparsity,
    step_amount,
)
from structlab.operators.masks import lowest_entries


def _linear(weight):
    weight = torch.as_tensor(weight, dtype=torch.float32)
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
    return layer


W1 = [[0.1, -0.5, 0.3, -0.05], [2.0, -0.2, 0.01, 1.0]]
W2 = [[0.6, -0.02], [0.4, 3.0]]


def test_local_magnitude_pruning_removes_smallest():
    layer = _linear(W1)
    prune_unstructured(layer, 0.5)
    expected = torch.tensor([[0, 1, 1, 0], [1, 0, 0, 1]], dtype=torch.float32)
    assert torch.equal(get_mask(layer), expected)
    assert torch.equal(layer.weight, torch.tensor(W1) * expected)
    assert sparsity(layer) == 0.5


def test_global_vs_local_pruning():
    a, b = _linear(W1), _linear(W2)
    prune_global([a, b], 3)  # the three smallest of all 12: 0.01, -0.02, -0.05
    assert get_mask(a)[1, 2] == 0 and get_mask(a)[0, 3] == 0 and get_mask(b)[0, 1] == 0
    assert sparsity([a, b]) == 3 / 12
    c, d = _linear(W1), _linear(W2)
    prune_unstructured([c, d], 0.5)
    assert int((get_mask(d) == 0).sum()) == 2 and int((get_mask(c) == 0).sum()) == 4


def test_taylor_pruning_uses_weight_times_gradient():
    layer = _linear(W2)
    grad = torch.tensor([[0.01, 10.0], [1.0, 0.001]])
    # |w g| = [[0.006, 0.2], [0.4, 0.003]] -> prune (1, 1) then (0, 0)
    prune_unstructured(layer, 2, method="taylor", gradients={layer: grad})
    assert torch.equal(get_mask(layer), torch.tensor([[0.0, 1.0], [1.0, 0.0]]))


def test_random_pruning_is_seeded_and_counts():
    masks = []
    for _ in range(2):
        layer = _linear(torch.ones(10, 10))
        prune_unstructured(layer, 0.3, method="random", generator=torch.Generator().manual_seed(0))
        masks.append(get_mask(layer).clone())
    assert torch.equal(masks[0], masks[1]) and int((masks[0] == 0).sum()) == 30


def test_pruning_amount_is_relative_to_active_connections():
    layer = _linear(torch.arange(1.0, 11.0).reshape(1, 10))
    prune_unstructured(layer, 0.5)
    prune_unstructured(layer, 0.4)  # 40 % of the 5 survivors
    assert sparsity(layer) == pytest.approx(0.7)
    assert step_amount(0.5, 0.75) == pytest.approx(0.5)


@pytest.mark.parametrize("opt_name", ["sgd", "adam"])
def test_masks_stay_applied_through_optimizer_steps(opt_name):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
    if opt_name == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=0.05)
    x, y = torch.randn(16, 5), torch.randint(0, 3, (16,))
    for _ in range(3):  # momentum / Adam moments everywhere
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    prune_global(model, 0.6, optimizer=opt)
    masks = [get_mask(m).clone() for m in (model[0], model[2])]
    for _ in range(5):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        for m, mask in zip((model[0], model[2]), masks):
            assert torch.all(m.weight_orig[mask == 0] == 0)
    out = model(x)
    for m, mask in zip((model[0], model[2]), masks):
        assert torch.equal(get_mask(m), mask) and torch.all(m.weight[mask == 0] == 0)
    h = torch.relu(x @ (model[0].weight_orig * masks[0]).t() + model[0].bias)
    assert torch.allclose(out, h @ (model[2].weight_orig * masks[1]).t() + model[2].bias)


def test_ephemeral_revival_and_remove_masks():
    layer = _linear(W1)
    prune_unstructured(layer, 0.5)
    set_mask(layer, torch.ones(2, 4), revive_value=0.25)
    expected = torch.tensor([[0.25, -0.5, 0.3, 0.25], [2.0, 0.25, 0.25, 1.0]])
    assert torch.equal(layer.weight, expected)
    remove_masks(layer)
    assert isinstance(layer.weight, nn.Parameter) and not hasattr(layer, "weight_mask")


def test_kernel_granularity_prunes_whole_kernels():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3)
    prune_unstructured(conv, 0.5, granularity="kernel")
    mask = get_mask(conv)
    per_kernel = mask.flatten(2)
    assert torch.all((per_kernel == 0).all(2) | (per_kernel == 1).all(2))
    assert int((per_kernel[..., 0] == 0).sum()) == 6
    l1 = conv.weight_orig.detach().abs().sum((2, 3))
    assert l1[per_kernel[..., 0] == 0].max() <= l1[per_kernel[..., 0] == 1].min()


def test_connection_gradients_include_dormant_connections():
    torch.manual_seed(0)
    layer = nn.Linear(3, 2, bias=False)
    prune_unstructured(layer, 0.5)
    x, t = torch.randn(4, 3), torch.randn(4, 2)

    def loss_fn(out, target):
        return 0.5 * ((out - target) ** 2).sum()

    grads = connection_gradients(layer, [(x, t)], loss_fn=loss_fn)
    w = layer.weight_orig.detach() * get_mask(layer)
    expected = (x @ w.t() - t).t() @ x
    assert torch.allclose(grads[layer], expected, atol=1e-6)
    assert torch.any(grads[layer][get_mask(layer) == 0] != 0)
    assert layer.weight_orig.grad is None


def test_nest_regrowth_picks_largest_gradients():
    layer = _linear(torch.ones(2, 3))
    set_mask(layer, torch.tensor([[1.0, 0, 0], [0, 0, 1]]))
    grad = torch.tensor([[9.0, 0.5, -3.0], [2.0, -0.1, 7.0]])
    regrow_connections(layer, 2, gradients={layer: grad}, init="gradient", step_size=0.1)
    assert torch.equal(get_mask(layer), torch.tensor([[1.0, 0, 1], [1, 0, 1]]))
    assert layer.weight[0, 2].item() == pytest.approx(0.3)
    assert layer.weight[1, 0].item() == pytest.approx(-0.2)
    assert layer.weight[0, 0] == 1.0  # active connections untouched


def test_random_regrowth_only_revives_dormant():
    layer = _linear(torch.ones(6, 6))
    prune_unstructured(layer, 0.5, method="random", generator=torch.Generator().manual_seed(0))
    before = get_mask(layer).clone()
    regrow_connections(layer, 0.5, method="random", generator=torch.Generator().manual_seed(1))
    after = get_mask(layer)
    assert torch.all(after >= before) and int((after - before).sum()) == 9
    assert torch.all(layer.weight[(after - before) > 0] == 0)  # zero init: function unchanged


@pytest.mark.parametrize(
    "call",
    [
        lambda m: prune_unstructured(m, 1.5),
        lambda m: prune_unstructured(m, -1),
        lambda m: prune_unstructured(m, 0.5, method="optimal"),
        lambda m: prune_unstructured(m, 0.5, method="taylor"),
        lambda m: prune_unstructured(m, 0.5, granularity="row"),
        lambda m: regrow_connections(m, 1, method="gradient"),
        lambda m: regrow_connections(m, 1, method="hebbian"),
        lambda m: step_amount(0.5, 0.2),
    ],
)
def test_bad_arguments(call):
    with pytest.raises(ValueError):
        call(_linear(W1))


@pytest.mark.parametrize("n", [0, 1, 5, 300, 4095, 4096, 20000])
def test_lowest_entries_is_a_stable_selection(n):
    """The n smallest scores, ties at the threshold broken by lowest position (the order a
    stable sort gives), also on inputs large enough for the sampled bound and with many ties."""
    g = torch.Generator().manual_seed(n)
    scores = torch.randint(0, 50, (20000,), generator=g).float()  # many ties
    scores[::7] = float("inf")
    expected = torch.sort(scores, stable=True).indices[:n].sort().values
    assert torch.equal(lowest_entries(scores, n), expected)
    smooth = torch.rand(30000, generator=g)
    expected = torch.sort(smooth, stable=True).indices[:n].sort().values
    assert torch.equal(lowest_entries(smooth, n), expected)


def test_global_pruning_and_regrowth_follow_the_stable_ranking():
    """prune_global and NeST regrowth pick exactly the connections a full stable sort ranks
    lowest (pruning: smallest |w|; regrowth: largest |dL/dw| among dormant ones), and zero the
    optimizer state of exactly those."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(30, 40), nn.ReLU(), nn.Linear(40, 20), nn.ReLU(),
                          nn.Linear(20, 5))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = torch.randn(64, 30), torch.randint(0, 5, (64,))
    F.cross_entropy(model(x), y).backward()
    opt.step()
    layers = [model[0], model[2], model[4]]
    weights = torch.cat([m.weight.detach().reshape(-1).abs() for m in layers])
    n = 700
    expected = torch.sort(weights, stable=True).indices[:n]
    before = torch.cat([opt.state[m.weight]["exp_avg"].reshape(-1) for m in layers])
    prune_global(model, n, optimizer=opt)
    masks = torch.cat([get_mask(m).reshape(-1) for m in layers])
    assert int((masks == 0).sum()) == n and bool((masks[expected] == 0).all())
    state = torch.cat([opt.state[m.weight_orig]["exp_avg"].reshape(-1) for m in layers])
    assert bool((state[expected] == 0).all())
    assert torch.equal(state[masks > 0], before[masks > 0])
    grads = connection_gradients(model, [(x, y)])
    g = torch.cat([grads[m].reshape(-1) for m in layers])
    score = torch.where(masks == 0, -g.abs(), torch.full_like(g, float("inf")))
    grown = torch.sort(score, stable=True).indices[:50]
    regrow_connections(model, 50, gradients=grads, optimizer=opt)
    after = torch.cat([get_mask(m).reshape(-1) for m in layers])
    assert bool((after[grown] == 1).all()) and int((after == 0).sum()) == n - 50
    for m in layers:
        assert torch.equal(m.weight, m.weight_orig * m.weight_mask)
