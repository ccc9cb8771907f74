"""Side by side with Torch-Pruning: the same channels removed from the same layers give the same
network (outputs equal to float tolerance, the same weight shapes)."""

import functools

import pytest
import torch
from outside_models import BUILDERS, build

from structlab.graph.compare import comparable_layers, prune_both

tp = pytest.importorskip("torch_pruning")


@functools.cache
def _built(name):
    m = build(name)
    with torch.no_grad():  # non-trivial BatchNorm statistics
        m.train()
        m(torch.randn(4, 3, 32, 32))
    return m.eval()


@pytest.mark.parametrize("name", list(BUILDERS))
def test_same_channels_same_network(name):
    model = _built(name)
    x = torch.randn(2, 3, 32, 32)
    layers = comparable_layers(model, x)
    assert len(layers) >= 3
    channels = {}
    for i, layer in enumerate(layers):
        width = model.get_submodule(layer).weight.shape[0]
        channels[layer] = sorted({i % width, (3 * i + 1) % width, width - 1 - i})
    ours, theirs = prune_both(model, x, channels)
    with torch.no_grad():
        a, b = ours.model(x), theirs.model(x)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    shapes_a = {n: p.shape for n, p in ours.model.graph_module.named_parameters()}
    shapes_b = {n: p.shape for n, p in theirs.model.named_parameters()}
    assert shapes_a == shapes_b
    assert shapes_b != {n: p.shape for n, p in model.named_parameters()}
