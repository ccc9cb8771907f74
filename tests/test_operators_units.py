"""Neuron creation and removal: exact function preservation and equality with smaller networks."""

import copy

import pytest
import torch

from structlab.models import MLP, VGG, WideResNet
from structlab.operators import add_units, get_mask, prune_global, remove_units
from structlab.operators.exact import dyadic, exact_input, make_exact


def _models():
    return {
        "dense": (lambda: MLP(6, [5, 4], 3), (3, 6)),
        "dense_bn": (lambda: MLP(6, [5, 4], 3, batchnorm=True), (3, 6)),
        "conv_bn_flatten": (
            lambda: VGG([3, "M", 4], input_size=8, in_channels=2, num_classes=3, dense=[5]),
            (2, 2, 8, 8),
        ),
        "conv_nobn": (
            lambda: VGG([3, 4], batchnorm=False, input_size=4, in_channels=1, num_classes=2),
            (2, 1, 4, 4),
        ),
        "wrn_shared_stem": (lambda: WideResNet(10, 1, num_classes=3), (2, 3, 8, 8)),
        "wrn_separate_stem": (lambda: WideResNet(10, 0.5, num_classes=3), (2, 3, 8, 8)),
    }


MODELS = _models()


def _fan(slot, k, g):
    fan_in = [dyadic((k, *p.weight.shape[1:]), g) for p in slot.producers]
    fan_out = [
        dyadic((c.module.weight.shape[0], k * c.spatial, *c.module.weight.shape[2:]), g)
        for c in slot.consumers
    ]
    return fan_in, fan_out


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("zero", ["fan_in", "fan_out"])
def test_creation_preserves_function_exactly(name, zero):
    build, shape = MODELS[name]
    model = make_exact(build()).eval()
    x = exact_input(shape)
    before = model(x)
    g = torch.Generator().manual_seed(3)
    for slot in model.layer_slots():
        fan_in, fan_out = _fan(slot, 2, g)
        if zero == "fan_in":
            fan_in = "zeros"
        else:
            fan_out = "zeros"
        add_units(model, slot, 2, fan_in=fan_in, fan_out=fan_out)
        slot.check()
        assert torch.equal(model(x), before), slot.name
    # and the new units are really there and used when both fans are non-zero
    slot = model.layer_slots()[0]
    fi, fo = _fan(slot, 1, g)
    add_units(model, slot, 1, fan_in=fi, fan_out=[f.abs() + 1 for f in fo])
    assert model(x).shape == before.shape


def test_creation_defaults_are_zero_fan_out():
    torch.manual_seed(0)
    model = MLP(5, [4], 2).eval()
    x = torch.randn(3, 5)
    y = model(x)
    slot = add_units(model, 0, 3, generator=torch.Generator().manual_seed(0))
    assert slot.width == 7 and model.layers[0].out_features == 7
    assert model.layers[1].in_features == 7
    assert torch.count_nonzero(model.layers[0].weight[4:]) > 0  # default init fan-in
    assert torch.equal(model.layers[1].weight[:, 4:], torch.zeros(2, 3))
    assert torch.allclose(model(x), y, atol=1e-6)


def test_creation_with_bias_and_flatten_layout():
    model = VGG([2], input_size=2, in_channels=1, num_classes=1, batchnorm=False, dense=[])
    slot = model.layer_slots()[0]
    assert slot.consumers[0].spatial == 4
    fan_out = torch.arange(1.0, 5.0).reshape(1, 1, 4)  # (out, k, spatial)
    add_units(model, slot, 1, fan_in="zeros", fan_out=fan_out, bias=torch.tensor([2.0]))
    assert torch.equal(model.dense[0].weight[0, 8:], torch.arange(1.0, 5.0))
    assert model.convs[0].bias[-1] == 2.0
    # new channel = relu(2) = 2 everywhere -> adds 2 * (1 + 2 + 3 + 4) = 20 to the output
    model.eval()
    x = torch.randn(1, 1, 2, 2)
    w_old = model.dense[0].weight[:, :8].detach().clone()
    h = torch.relu(model.convs[0](x))[:, :2].flatten(1)
    expected = h @ w_old.t() + model.dense[0].bias + 20.0
    assert torch.allclose(model(x), expected, atol=1e-5)


@pytest.mark.parametrize("name", list(MODELS))
def test_removal_equals_zeroing_the_units_fan_out(name):
    """Removing units = keeping them but cutting every outgoing connection (any architecture)."""
    build, shape = MODELS[name]
    model = make_exact(build()).eval()
    x = exact_input(shape)
    for slot_index in range(len(model.layer_slots())):
        reference = copy.deepcopy(model)
        ref_slot = reference.layer_slots()[slot_index]
        drop = [0, ref_slot.width - 1] if ref_slot.width > 2 else [0]
        with torch.no_grad():
            for c in ref_slot.consumers:
                w = c.module.weight.view(c.module.weight.shape[0], ref_slot.width, c.spatial, -1)
                w[:, drop] = 0
        slot = model.layer_slots()[slot_index]
        old = slot.width
        remove_units(model, slot, drop)
        slot.check()
        assert slot.width == old - len(drop)
        assert torch.equal(model(x), reference(x)), slot.name


def test_removal_equals_network_built_without_the_units():
    big = make_exact(MLP(6, [5, 4], 3, batchnorm=True)).eval()
    small = make_exact(MLP(6, [3, 4], 3, batchnorm=True)).eval()
    keep = torch.tensor([0, 2, 4])
    with torch.no_grad():
        small.layers[0].weight.copy_(big.layers[0].weight[keep])
        small.layers[0].bias.copy_(big.layers[0].bias[keep])
        for t in ("weight", "bias", "running_mean", "running_var"):
            getattr(small.norms[0], t).copy_(getattr(big.norms[0], t)[keep])
        small.layers[1].weight.copy_(big.layers[1].weight[:, keep])
        for a, b in zip(list(small.parameters())[2:], list(big.parameters())[2:]):
            if a.shape == b.shape:
                a.copy_(b)
        small.layers[1].bias.copy_(big.layers[1].bias)
        for t in ("weight", "bias", "running_mean", "running_var"):
            getattr(small.norms[1], t).copy_(getattr(big.norms[1], t))
        small.layers[2].load_state_dict(big.layers[2].state_dict())
    remove_units(big, "hidden0", [1, 3])
    x = exact_input((4, 6))
    assert torch.equal(big(x), small(x))
    assert big.layers[0].out_features == 3 and big.layers[1].in_features == 3
    assert big.norms[0].num_features == 3


def test_conv_removal_equals_network_built_without_the_units():
    big = make_exact(VGG([4, "M", 3], input_size=4, in_channels=1, num_classes=2, dense=[])).eval()
    small = make_exact(VGG([4, "M", 2], input_size=4, in_channels=1, num_classes=2, dense=[]))
    small.eval()
    keep = torch.tensor([0, 2])
    cols = torch.cat([torch.arange(4 * k, 4 * k + 4) for k in keep.tolist()])
    with torch.no_grad():
        small.convs[0].load_state_dict(big.convs[0].state_dict())
        small.bns[0].load_state_dict(big.bns[0].state_dict())
        small.convs[1].weight.copy_(big.convs[1].weight[keep])
        for t in ("weight", "bias", "running_mean", "running_var"):
            getattr(small.bns[1], t).copy_(getattr(big.bns[1], t)[keep])
        small.dense[0].weight.copy_(big.dense[0].weight[:, cols])
        small.dense[0].bias.copy_(big.dense[0].bias)
    remove_units(big, "conv1", [1])
    x = exact_input((3, 1, 4, 4))
    assert torch.equal(big(x), small(x))


def test_surgery_resizes_masks():
    torch.manual_seed(0)
    model = MLP(6, [5, 4], 3)
    prune_global(model, 0.5)
    old = get_mask(model.layers[1]).clone()
    add_units(model, "hidden0", 2)
    m1 = get_mask(model.layers[1])
    assert m1.shape == (4, 7) and torch.equal(m1[:, :5], old) and torch.all(m1[:, 5:] == 1)
    assert get_mask(model.layers[0]).shape == (7, 6)
    remove_units(model, "hidden0", [0])
    assert torch.equal(get_mask(model.layers[1])[:, :4], old[:, 1:])
    x = torch.randn(2, 6)
    assert model(x).shape == (2, 3)
    assert torch.equal(model.layers[1].weight, model.layers[1].weight_orig * m1[:, 1:])


@pytest.mark.parametrize(
    "call, error",
    [
        (lambda m: add_units(m, 0, -1), ValueError),
        (lambda m: add_units(m, 0, 1.5), TypeError),
        (lambda m: add_units(m, 0, 2, fan_in=torch.zeros(3, 6)), ValueError),
        (lambda m: add_units(m, 0, 2, fan_out=torch.zeros(3, 5)), ValueError),
        (lambda m: add_units(m, 0, 2, fan_in="ones"), ValueError),
        (lambda m: add_units(m, 0, 2, fan_in=[torch.zeros(2, 6)] * 2), ValueError),
        (lambda m: add_units(m, "nope", 1), KeyError),
        (lambda m: remove_units(m, 0, [5]), IndexError),
        (lambda m: remove_units(m, 0, [1, 1]), ValueError),
        (lambda m: remove_units(m, 0, list(range(5))), ValueError),
    ],
)
def test_bad_arguments(call, error):
    with pytest.raises(error):
        call(MLP(6, [5, 4], 3))
