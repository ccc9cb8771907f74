"""Every structural method of structlab on outside models through inferred slots:
torchvision resnet18, resnet50, vgg11_bn and a user nn.Sequential."""

import copy
import functools

import pytest
import torch
from outside_models import BUILDERS, build
from torch import nn
from torch.utils.data import TensorDataset

from structlab.graph import dyno_layers, growth_groups, resizable
from structlab.growprune import DYNO
from structlab.neurogenesis import Neurogenesis
from structlab.operators import add_units, prune_units, remove_units
from structlab.training import fit

SIZE = 32


@functools.cache
def _built(name: str) -> nn.Module:
    return build(name)


def _model(name: str):
    """A fresh copy of the model (built once per session) wrapped with inferred slots."""
    m = copy.deepcopy(_built(name))
    x = torch.randn(2, 3, SIZE, SIZE)
    g = resizable(m, x)
    with torch.no_grad():  # non-trivial BatchNorm statistics
        g.train()
        g(torch.randn(4, 3, SIZE, SIZE))
    return g.eval(), x


def _slots_to_test(g):
    slots = g.layer_slots()
    picked = [slots[0], slots[1], slots[len(slots) // 2], slots[-1]]
    return list({id(s): s for s in picked}.values())


@pytest.mark.parametrize("name", list(BUILDERS))
def test_add_units_preserves_function(name):
    g, x = _model(name)
    with torch.no_grad():
        ref = g(x)
    small = name in ("resnet18", "sequential")  # optimizer state for 130M VGG weights: slow
    opt = torch.optim.Adam(g.parameters(), lr=1e-3) if small else None
    gen = torch.Generator().manual_seed(0)
    for s in _slots_to_test(g):
        w = s.width
        add_units(g, s, 3, fan_in="default", optimizer=opt, generator=gen)
        assert s.width == w + 3
        s.check()
    with torch.no_grad():
        out = g(x)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    if opt is not None:
        g.train()
        opt.zero_grad()
        g(torch.randn(4, 3, SIZE, SIZE)).logsumexp(1).mean().backward()
        opt.step()  # the optimizer follows the new shapes


@pytest.mark.parametrize("name", list(BUILDERS))
def test_remove_units_of_silenced_units_preserves_function(name):
    """Removing units whose fan-out is zero does not change the function (exact surgery)."""
    g, x = _model(name)
    chosen = {}
    with torch.no_grad():
        for s in _slots_to_test(g):
            idx = torch.tensor([0, s.width // 2, s.width - 1])
            chosen[s.name] = idx
            for c in s.consumers:
                w = c.module.weight
                cols = (idx[:, None] * c.spatial + torch.arange(c.spatial)).reshape(-1)
                w[:, cols] = 0
        ref = g(x)
    for s in _slots_to_test(g):
        w = s.width
        remove_units(g, s, chosen[s.name])
        assert s.width == w - 3
        s.check()
    with torch.no_grad():
        out = g(x)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["resnet18", "sequential"])
@pytest.mark.parametrize("method", ["weight_norm", "taylor"])
def test_structured_pruning(name, method):
    g, x = _model(name)
    data = [(torch.randn(2, 3, SIZE, SIZE), torch.randint(0, 10, (2,)))]
    for s in _slots_to_test(g):
        w = s.width
        kwargs = {"data": data} if method == "taylor" else {}
        idx = prune_units(g, s, 2, method, **kwargs)
        assert idx.numel() == 2 and s.width == w - 2
    assert g(x).shape == (2, 10)


def _data(n: int = 8) -> TensorDataset:
    g = torch.Generator().manual_seed(1)
    return TensorDataset(torch.rand(n, 3, SIZE, SIZE, generator=g),
                         torch.randint(0, 10, (n,), generator=g))


@pytest.mark.parametrize("name", list(BUILDERS))
@pytest.mark.parametrize("strategy", ["north-select", "gradmax"])
def test_neurogenesis(name, strategy):
    g, _ = _model(name)
    gradient = strategy == "gradmax"
    groups = growth_groups(g, gradient=gradient)
    if name == "vgg11_bn" and gradient:
        # the last convolution is read through AdaptiveAvgPool2d((7, 7)), which upsamples a
        # 1 x 1 map at 32 px: GradMax's auxiliary gradient handles r x r pooling only
        groups = [grp for grp in groups if grp != ["features.25"]]
    groups = groups[:2] if name == "sequential" else groups[:1]
    start = {grp[0]: g.slot(grp[0]).width for grp in groups}
    cb = Neurogenesis(strategy, max_width={n: w + 4 for n, w in start.items()},
                      groups=groups, buffer_size=8, candidates=8, gamma_a=0.0)
    if gradient:
        cb.grad_trigger.scale = 0.0  # always grow (the trigger is tested elsewhere)
    opt = torch.optim.SGD(g.parameters(), lr=0.01)
    h = fit(g, _data(), epochs=1, batch_size=8, optimizer=opt, device="cpu", quiet=True,
            callbacks=[cb])
    grown = {n: g.slot(n).width - w for n, w in start.items()}
    assert h.extra["events"], grown
    assert all(0 <= v <= 4 for v in grown.values())
    assert any(v > 0 for v in grown.values())
    for s in g.layer_slots():
        s.check()


@pytest.mark.parametrize("name", list(BUILDERS))
def test_dyno_grow_and_prune(name):
    g, _ = _model(name)
    layers = dyno_layers(g)[:2]
    cb = DYNO(every=1, layers=layers, min_samples=8, candidates_per_unit=4, min_width=2)
    opt = torch.optim.SGD(g.parameters(), lr=1e-3)
    before = {n: g.slot(n).width for n in layers}
    h = fit(g, _data(), epochs=1, batch_size=8, optimizer=opt, device="cpu", quiet=True,
            callbacks=[cb])
    after = {n: g.slot(n).width for n in layers}
    assert h.extra["dyno_events"] and after != before  # initial_phi=1 prunes at once
    for s in g.layer_slots():
        s.check()
    assert g(torch.randn(2, 3, SIZE, SIZE)).shape == (2, 10)
