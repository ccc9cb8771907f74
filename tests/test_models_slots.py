"""The resizable models and their layer-slot interface."""

import pytest
import torch
from torch import nn

from structlab.models import MLP, VGG, VGG_CONFIGS, WideResNet


def test_mlp_slots_and_forward():
    m = MLP(12, [7, 5], 3, batchnorm=True)
    slots = m.layer_slots()
    assert [s.name for s in slots] == ["hidden0", "hidden1"]
    assert [s.width for s in slots] == [7, 5]
    assert slots[0].producers == [m.layers[0]] and slots[0].consumers[0].module is m.layers[1]
    assert slots[0].norms == [m.norms[0]] and slots[0].activation is m.acts[0]
    assert m(torch.randn(4, 3, 2, 2)).shape == (4, 3)
    for s in slots:
        s.check()
    assert m.slot("hidden1") is not None and m.slot(-1).name == "hidden1"
    with pytest.raises(KeyError):
        m.slot("nope")
    with pytest.raises(IndexError):
        m.slot(5)


def test_separate_activation_modules():
    m = MLP(4, [3, 3, 3], 2, activation=lambda: nn.LeakyReLU(0.1))
    acts = [s.activation for s in m.layer_slots()]
    assert len({id(a) for a in acts}) == 3
    assert all(isinstance(a, nn.LeakyReLU) for a in acts)


def test_vgg11_layout_and_multiplier():
    v = VGG("vgg11", width_multiplier=0.25)
    assert list(v.widths().values()) == [16, 32, 64, 64, 128, 128, 128, 128, 1024, 1024]
    assert v.spatial == 1
    assert v(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    full = [w for w in VGG_CONFIGS["vgg11"][0] if w != "M"]
    assert full == [64, 128, 256, 256, 512, 512, 512, 512]


def test_vgg_flatten_boundary_spatial_factor():
    v = VGG([4, "M", 6], input_size=8, in_channels=2, num_classes=3, dense=[5])
    last = v.layer_slots()[1]
    assert last.consumers[0].module is v.dense[0] and last.consumers[0].spatial == 16
    assert v.dense[0].in_features == 6 * 16
    assert v(torch.randn(2, 2, 8, 8)).shape == (2, 3)


def test_vgg_small_inputs_skip_pools():
    v = VGG("vgg11", width_multiplier=1 / 16, in_channels=1, input_size=28)
    assert sum(v.pool_after) == 4 and v.spatial == 1
    assert v(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_wrn28_slots():
    w = WideResNet(28, 1)
    names = [s.name for s in w.layer_slots()]
    # widen 1: the stem has the width of group 0, identity shortcut: one stream slot
    assert "stem" not in names and names.count("group0") == 1
    assert len(names) == 12 + 3
    g0 = w.slot("group0")
    assert g0.width == 16 and len(g0.producers) == 1 + 4
    assert w.slot("group2").consumers[-1].module is w.fc
    w4 = WideResNet(28, 4)
    assert w4.layer_slots()[0].name == "stem"
    assert [w4.slot(f"group{g}").width for g in range(3)] == [64, 128, 256]
    for s in w4.layer_slots():
        s.check()


def test_wrn_residual_switch_changes_function():
    torch.manual_seed(0)
    w = WideResNet(10, 1, num_classes=3).eval()
    x = torch.randn(2, 3, 8, 8)
    y = w(x)
    w.residual_enabled = False
    assert all(not b.residual for g in w.groups for b in g)
    assert not torch.allclose(w(x), y)
    w.residual_enabled = True
    assert torch.equal(w(x), y)


@pytest.mark.parametrize(
    "build",
    [
        lambda: MLP(4, [0], 2),
        lambda: VGG("vgg99"),
        lambda: VGG(width_multiplier=-1),
        lambda: WideResNet(27),
    ],
)
def test_bad_parameters_raise(build):
    with pytest.raises(ValueError):
        build()
