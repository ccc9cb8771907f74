"""Unit saliencies on hand-computed examples."""

import pytest
import torch
from torch import nn

from structlab.models import MLP, VGG
from structlab.operators import (
    activation_statistics,
    cosine_similarity_matrix,
    lowest_units,
    prune_units,
    taylor_saliency,
    unit_saliency,
)


def _mlp(w0, b0=None, w1=None):
    w0 = torch.tensor(w0)
    model = MLP(w0.shape[1], [w0.shape[0]], 1)
    with torch.no_grad():
        model.layers[0].weight.copy_(w0)
        model.layers[0].bias.copy_(torch.zeros(w0.shape[0]) if b0 is None else torch.tensor(b0))
        model.layers[1].weight.copy_(torch.ones(1, w0.shape[0]) if w1 is None else torch.tensor(w1))
        model.layers[1].bias.zero_()
    return model


X = torch.tensor([[1.0, 2.0], [-1.0, 0.5], [2.0, 2.0]])
Y = torch.zeros(3, dtype=torch.long)
DATA = [(X, Y)]


def test_weight_norm():
    model = _mlp([[3.0, 4.0], [0.0, 0.0], [1.0, 0.0]])
    assert torch.allclose(unit_saliency(model, 0, "weight_norm"), torch.tensor([5.0, 0.0, 1.0]))
    assert torch.allclose(unit_saliency(model, 0, "weight_norm", p=1), torch.tensor([7.0, 0, 1]))


def test_activation_mean_dormancy_and_redundancy():
    # pre-activations [[1, 2, -1], [-1, .5, -1.5], [2, 2, 0]]
    # -> relu [[1, 2, 0], [0, .5, 0], [2, 2, 0]]
    model = _mlp([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]])
    stats = activation_statistics(model, ["hidden0"], DATA)["hidden0"]
    assert torch.allclose(stats.abs_mean, torch.tensor([1.0, 1.5, 0.0]))
    assert torch.allclose(stats.dormancy, torch.tensor([1 / 3, 0.0, 1.0]))
    assert stats.count == 3
    cos01 = 6.0 / (5.0**0.5 * 8.25**0.5)
    assert stats.cosine[0, 1].item() == pytest.approx(cos01, rel=1e-6)
    assert torch.allclose(unit_saliency(model, 0, "activation", data=DATA), stats.abs_mean)
    dormancy = unit_saliency(model, 0, "dormancy", data=DATA)
    assert torch.allclose(dormancy, torch.tensor([2 / 3, 1.0, 0.0]))
    red = unit_saliency(model, 0, "redundancy", data=DATA)
    assert torch.allclose(red, torch.tensor([1 - cos01, 1 - cos01, 0.0]), atol=1e-6)  # 2 is dead


def test_conv_statistics_count_positions():
    model = VGG([2], input_size=2, in_channels=1, num_classes=1, batchnorm=False, dense=[])
    with torch.no_grad():
        model.convs[0].weight.zero_()
        model.convs[0].weight[0, 0, 1, 1] = 1.0  # channel 0 copies the input
        model.convs[0].bias.copy_(torch.tensor([0.0, -1.0]))  # channel 1 is dead
    x = torch.tensor([[[[1.0, -2.0], [0.0, 3.0]]]])
    stats = activation_statistics(model, [0], [(x, torch.zeros(1))])[model.layer_slots()[0].name]
    assert stats.count == 4
    assert torch.allclose(stats.dormancy, torch.tensor([0.5, 1.0]))
    assert torch.allclose(stats.mean, torch.tensor([1.0, 0.0]))


def test_first_order_taylor():
    model = _mlp([[1.0, 0.0], [0.5, 0.5]], w1=[[2.0, -1.0]])
    y = torch.tensor([1.0, 0.0, -1.0])

    def loss_fn(out, target):
        return 0.5 * ((out.squeeze(1) - target) ** 2).sum()

    h = torch.relu(X @ model.layers[0].weight.detach().t())
    out = h @ torch.tensor([2.0, -1.0])
    expected = (h * (out - y)[:, None] * torch.tensor([2.0, -1.0])).abs().mean(0)
    got = taylor_saliency(model, 0, [(X, y)], loss_fn=loss_fn)
    assert torch.allclose(got, expected, atol=1e-6)
    assert all(p.grad is None for p in model.parameters())


def test_cosine_matrix_and_lowest_units():
    h = torch.tensor([[1.0, 2.0, 0.0], [2.0, 4.0, 0.0]])
    cos = cosine_similarity_matrix(h)
    assert cos[0, 1].item() == pytest.approx(1.0) and cos[0, 2] == 0 and cos[2, 2] == 0
    assert lowest_units(torch.tensor([3.0, 1.0, 1.0, 0.5]), 2).tolist() == [1, 3]
    with pytest.raises(ValueError):
        lowest_units(torch.ones(2), 3)


def test_greedy_redundancy_removes_one_of_a_duplicate_pair():
    model = _mlp([[1.0, 1.0], [1.0, 1.0], [1.0, -1.0], [-1.0, 0.3]])
    removed = prune_units(model, 0, 1, "redundancy", data=DATA)
    assert removed.tolist() in ([0], [1]) and model.layer_slots()[0].width == 3


def test_greedy_redundancy_removes_dead_units_first():
    # unit 3 never fires on X (pre-activations -x1 - x2 - 5 < 0)
    model = _mlp([[1.0, 1.0], [1.0, 1.0], [1.0, -0.5], [-1.0, -1.0]], b0=[0.0, 0.0, 0.0, -5.0])
    removed = prune_units(model, 0, 2, "redundancy", data=DATA)
    assert 3 in removed.tolist() and len({0, 1} & set(removed.tolist())) == 1


def test_prune_units_by_weight_norm():
    model = _mlp([[3.0, 4.0], [0.0, 0.1], [1.0, 0.0]])
    removed = prune_units(model, "hidden0", 2, "weight_norm")
    assert removed.tolist() == [1, 2]
    assert torch.equal(model.layers[0].weight, torch.tensor([[3.0, 4.0]]))


@pytest.mark.parametrize(
    "kwargs",
    [dict(method="psychic"), dict(method="taylor"), dict(method="activation")],
)
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        unit_saliency(MLP(2, [3], 1), 0, **kwargs)


def test_random_saliency_is_seeded():
    m = MLP(2, [5], 1)
    a = unit_saliency(m, 0, "random", generator=torch.Generator().manual_seed(0))
    b = unit_saliency(m, 0, "random", generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == (5,)
    assert isinstance(m.layer_slots()[0].activation, nn.ReLU)
