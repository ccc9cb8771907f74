"""Slot inference from the traced graph: the oracle, torchvision models, refusals, taps."""

import pytest
import torch
import torchvision
from torch import nn

from structlab.graph import GraphModel, UnsupportedModelError, resizable, same_slots
from structlab.models import MLP, VGG, WideResNet


def _user_sequential() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 12, 3, padding=1), nn.BatchNorm2d(12), nn.ReLU(),
        nn.Flatten(), nn.Linear(12 * 8 * 8, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 5),
    )


@pytest.mark.parametrize(
    "model, shape",
    [
        (lambda: MLP(20, [8, 6], 3, batchnorm=True), (4, 20)),
        (lambda: MLP(20, [8, 6, 5], 3, activation=nn.Tanh), (4, 20)),
        (lambda: VGG("vgg11", width_multiplier=0.125), (2, 3, 32, 32)),
        (lambda: VGG("vgg11", width_multiplier=0.125, input_size=28, in_channels=1),
         (2, 1, 28, 28)),
        (lambda: WideResNet(16, 1), (2, 3, 32, 32)),
        (lambda: WideResNet(10, 0.5), (2, 3, 32, 32)),
        (lambda: WideResNet(16, 2), (2, 3, 32, 32)),
    ],
    ids=["mlp-bn", "mlp-tanh", "vgg11", "vgg11-28px", "wrn16-1", "wrn10-0.5", "wrn16-2"],
)
def test_oracle_inferred_slots_equal_hand_written(model, shape):
    m = model()
    g = resizable(m, torch.randn(*shape))
    assert same_slots(g.layer_slots(), m.layer_slots())
    assert len(g.layer_slots()) == len(m.layer_slots())


def test_hand_written_override_is_used():
    m = VGG("vgg11", width_multiplier=0.125)
    g = GraphModel(m, torch.randn(2, 3, 32, 32), slots=lambda _: m.layer_slots())
    assert [s.name for s in g.layer_slots()] == [s.name for s in m.layer_slots()]


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "vgg11_bn"])
def test_torchvision_models_traced_unchanged(name):
    m = getattr(torchvision.models, name)(weights=None).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = m(x)
        g = resizable(m, x).eval()
        assert torch.equal(g(x), ref)
    for s in g.layer_slots():
        s.check()
        assert s.activation is not None


def test_resnet18_groups():
    m = torchvision.models.resnet18(weights=None)
    g = resizable(m, torch.randn(2, 3, 32, 32))
    slots = {s.name: s for s in g.layer_slots()}
    stem = slots["conv1"]  # stem + layer1's two residual blocks write the same channels
    assert stem.producers == [m.conv1, m.layer1[0].conv2, m.layer1[1].conv2]
    assert stem.norms == [m.bn1, m.layer1[0].bn2, m.layer1[1].bn2]
    assert {id(c.module) for c in stem.consumers} == {
        id(m.layer1[0].conv1), id(m.layer1[1].conv1), id(m.layer2[0].conv1),
        id(m.layer2[0].downsample[0])}
    inner = slots["layer1.0.conv1"]
    assert inner.producers == [m.layer1[0].conv1] and not inner.is_group
    assert [c.module for c in inner.consumers] == [m.layer1[0].conv2]
    assert len(g.layer_slots()) == 12 and len(g.single_slots()) == 8
    last = slots["layer4.0.conv2"]
    assert [c.module for c in last.consumers][-1] is m.fc


def test_vgg_flatten_spatial_factor():
    m = torchvision.models.vgg11_bn(weights=None)
    g = resizable(m, torch.randn(2, 3, 32, 32))
    last_conv = g.layer_slots()[7]
    assert last_conv.consumers[0].module is m.classifier[0]
    assert last_conv.consumers[0].spatial == 49  # AdaptiveAvgPool2d((7, 7)) then flatten


def test_user_sequential():
    m = _user_sequential()
    g = resizable(m, torch.randn(2, 1, 16, 16))
    assert [s.name for s in g.layer_slots()] == ["0", "4", "8"]
    assert g.layer_slots()[1].consumers[0].spatial == 64
    assert [s.kind for s in g.layer_slots()] == ["conv", "conv", "dense"]


def test_taps_record_what_consumers_read():
    """BasicBlock calls one in-place ReLU twice; each slot's tap sees its consumer's input."""
    m = torchvision.models.resnet18(weights=None).eval()
    x = torch.randn(2, 3, 32, 32)
    g = resizable(m, x).eval()
    seen, read = {}, {}
    hooks = []
    for s in g.layer_slots():
        hooks.append(s.activation.register_forward_hook(
            lambda mod, a, out, n=s.name: seen.__setitem__(n, out.clone())))
        hooks.append(s.consumers[0].module.register_forward_pre_hook(
            lambda mod, a, n=s.name: read.setdefault(n, a[0].clone())))
    with torch.no_grad():
        g(x)
    for h in hooks:
        h.remove()
    for s in g.layer_slots():
        if s.name != "conv1":  # the stem group's first tap is the stem's own relu + maxpool
            continue
        assert torch.equal(seen[s.name], read[s.name])
    inner = "layer1.0.conv1"
    assert torch.equal(seen[inner], read[inner]) and bool((seen[inner] >= 0).all())
    assert isinstance(g.slot(inner).activation, nn.ReLU)  # dormant-unit rules apply


def test_functional_relu_is_tapped():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(6, 5), nn.Linear(5, 2)

        def forward(self, x):
            return self.b(torch.relu(self.a(x)))

    g = resizable(Net(), torch.randn(3, 6))
    (s,) = g.layer_slots()
    z = torch.randn(4, 5)
    assert torch.equal(s.activation(z), torch.relu(z))


class _Concat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(4, 3), nn.Linear(4, 3), nn.Linear(6, 2)

    def forward(self, x):
        return self.c(torch.cat([self.a(x), self.b(x)], 1))


class _Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 3)

    def forward(self, x):
        if x.sum() > 0:
            return self.a(x)
        return -self.a(x)


@pytest.mark.parametrize(
    "model, shape, match",
    [
        (_Concat, (2, 4), "node cat .*concatenation"),
        (lambda: nn.Sequential(nn.Conv2d(3, 8, 1), nn.Conv2d(8, 8, 3, groups=8), nn.Flatten()),
         (1, 3, 4, 4), "node _1 .*depthwise convolution"),
        (lambda: nn.Sequential(nn.Linear(4, 6), nn.LayerNorm(6), nn.Linear(6, 2)), (2, 4),
         "node _1 .*LayerNorm"),
        (_Branchy, (2, 4), "cannot trace .*data-dependent control flow"),
    ],
    ids=["concat", "depthwise", "layernorm", "control-flow"],
)
def test_refusals_name_the_node(model, shape, match):
    with pytest.raises(UnsupportedModelError, match=match) as info:
        resizable(model(), torch.randn(*shape))
    assert "\n" not in str(info.value)


def test_input_and_output_dimensions_are_not_slots():
    m = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 3))
    g = resizable(m, torch.randn(2, 4))
    assert [s.name for s in g.layer_slots()] == ["0"]
