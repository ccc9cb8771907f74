"""Optimizer state follows surgery: a step after surgery equals a step on a network built at the
new size with the carried state."""

import copy

import pytest
import torch
import torch.nn.functional as F

from structlab.models import MLP, VGG
from structlab.operators import add_units, prune_global, remove_units

OPTIMIZERS = {
    "sgd": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-3),
    "adam": lambda p: torch.optim.Adam(p, lr=1e-2),
    "adamw": lambda p: torch.optim.AdamW(p, lr=1e-2, amsgrad=True),
}


def _train(model, opt, x, y, steps):
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()


def _carry(t, rows=None, cols=None, new_rows=0, new_cols=0):
    """The expected carried state: add zero columns, then zero rows, then select."""
    if new_cols:
        t = torch.cat([t, t.new_zeros(t.shape[0], new_cols, *t.shape[2:])], 1)
    if new_rows:
        t = torch.cat([t, t.new_zeros(new_rows, *t.shape[1:])], 0)
    if rows is not None:
        t = t[rows]
    if cols is not None:
        t = t[:, cols]
    return t


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_step_after_surgery_equals_step_on_rebuilt_network(name):
    torch.manual_seed(0)
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    a = MLP(6, [5, 4], 3)
    opt_a = OPTIMIZERS[name](a.parameters())
    _train(a, opt_a, x, y, 3)
    old_state = {k: copy.deepcopy(opt_a.state[p]) for k, p in a.named_parameters()}

    g = torch.Generator().manual_seed(1)
    add_units(
        a,
        "hidden0",
        2,
        fan_in=torch.randn(2, 6, generator=g),
        fan_out=torch.randn(4, 2, generator=g),
        bias=torch.ones(2),
        optimizer=opt_a,
    )
    remove_units(a, "hidden1", [1], optimizer=opt_a)
    assert {id(p) for p in opt_a.param_groups[0]["params"]} == {id(p) for p in a.parameters()}

    b = MLP(6, [7, 3], 3)
    b.load_state_dict(a.state_dict())
    opt_b = OPTIMIZERS[name](b.parameters())
    keep = [0, 2, 3]
    expected = {
        "layers.0.weight": dict(new_rows=2),
        "layers.0.bias": dict(new_rows=2),
        "layers.1.weight": dict(new_cols=2, rows=keep),
        "layers.1.bias": dict(rows=keep),
        "layers.2.weight": dict(cols=keep),
        "layers.2.bias": dict(),
    }
    for k, p in b.named_parameters():
        carried = {}
        for key, value in old_state[k].items():
            is_state = torch.is_tensor(value) and value.dim() > 0
            carried[key] = _carry(value, **expected[k]) if is_state else copy.deepcopy(value)
        opt_b.state[p] = carried
        pa = dict(a.named_parameters())[k]
        for key, value in carried.items():
            assert torch.equal(opt_a.state[pa][key], value), (k, key)

    _train(a, opt_a, x, y, 2)
    _train(b, opt_b, x, y, 2)
    for (k, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(pa, pb), k


def test_conv_surgery_with_masks_keeps_training():
    torch.manual_seed(0)
    model = VGG([4, "M", 6], input_size=8, in_channels=1, num_classes=3, dense=[5])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 3, (16,))
    _train(model, opt, x, y, 2)
    prune_global(model, 0.3, optimizer=opt)
    for slot in model.layer_slots():
        add_units(model, slot, 2, fan_in="default", optimizer=opt)
        remove_units(model, slot, [0], optimizer=opt)
    params = {id(p) for p in model.parameters()}
    assert {id(p) for g in opt.param_groups for p in g["params"]} == params
    assert all(id(p) in params for p in opt.state)
    loss0 = F.cross_entropy(model(x), y).item()
    _train(model, opt, x, y, 20)
    assert F.cross_entropy(model(x), y).item() < loss0


def test_parameters_outside_the_optimizer_are_left_alone():
    model = MLP(3, [2], 2)
    opt = torch.optim.SGD(model.layers[1].parameters(), lr=0.1, momentum=0.9)
    add_units(model, 0, 1, optimizer=opt)
    assert len(opt.param_groups[0]["params"]) == 2
    assert opt.param_groups[0]["params"][0] is model.layers[1].weight
