"""The backbone of thesis §4.5 and the EquiNAS algorithms on tiny data."""

import pytest
import torch

from structlab.data.base import LabelledTensors
from structlab.equivariance import (
    ALL_GROUPS,
    EquivariantCNN,
    equinas_d,
    equinas_e,
    get_group,
    is_monotone,
    pareto_front,
    random_discrete_architectures,
    random_mixtures,
    train_network,
    valid_relaxations,
    with_prior,
)
from structlab.metrics import count_parameters

CH = (2, 3)


def randomized(model: EquivariantCNN, seed: int = 0) -> EquivariantCNN:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm3d)):
            m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.bias.shape, generator=g) - 0.5)
    return model.eval()


@pytest.fixture
def tiny():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(96, 1, 16, 16, generator=g)
    y = (x[:, 0, :8].mean(dim=(1, 2)) > x[:, 0, 8:].mean(dim=(1, 2))).long()
    return LabelledTensors(x, y, name="tiny", classes=["a", "b"])


@pytest.mark.parametrize("name", ["C2", "C4", "D4"])
def test_logits_are_invariant_on_32x32(name):
    torch.manual_seed(0)
    net = randomized(EquivariantCNN([name] * 8, channels=CH).double())
    x = torch.randn(3, 1, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        logits = net(x)
        for g in get_group(name).elements:
            assert torch.allclose(net(get_group(name).act_on_image(x, g)), logits, atol=1e-10)
        # and the test can fail: a C2 network is not invariant to a quarter turn
        if name == "C2":
            assert not torch.allclose(net(torch.rot90(x, 1, (2, 3))), logits, atol=1e-4)


@pytest.mark.parametrize(
    "chain", [["D4", "D2", "C2", "C1"], ["D4", "C4", "C2", "C1"], ["D4", "D1", "C1"]]
)
def test_network_relaxation_preserves_logits(chain):
    torch.manual_seed(1)
    net = randomized(EquivariantCNN([chain[0]] * 8, channels=CH).double())
    x = torch.randn(4, 1, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        before = net(x)
        params = count_parameters(net)
        for group in chain[1:]:
            for layer in reversed(range(8)):
                net.relax(layer, group)
                assert torch.allclose(net(x), before, atol=1e-12)
        assert count_parameters(net) > params
        assert net.groups == [chain[-1]] * 8


def test_relax_refuses_a_non_subgroup_and_mixed_layers():
    net = EquivariantCNN(["C4"] * 8, channels=CH)
    with pytest.raises(ValueError, match="D1 is not a subgroup of C4"):
        net.relax(3, "D1")
    mixed = EquivariantCNN([("C1", "D4")] * 8, channels=CH)
    with pytest.raises(ValueError, match="only group layers"):
        mixed.relax(0, "C1")
    with pytest.raises(IndexError):
        net.relax(8, "C1")


def test_parameter_counts_follow_group_sizes():
    counts = {
        g: EquivariantCNN([g] * 8, channels=(4, 8)).convs[3].weight.numel() for g in ALL_GROUPS
    }
    for g, n in counts.items():
        assert n * get_group(g).order == counts["D4"] * 8


def test_mixed_network_collapses_to_plain_convolutions():
    torch.manual_seed(2)
    net = EquivariantCNN([tuple(ALL_GROUPS)] * 8, channels=CH).double()
    with torch.no_grad():
        for m in net.mixed_layers():
            m.alpha.normal_()
    randomized(net)
    x = torch.randn(2, 1, 16, 16, dtype=torch.float64)
    collapsed = net.collapse()
    assert collapsed.groups == ["C1"] * 8
    with torch.no_grad():
        assert torch.allclose(collapsed(x), net(x), atol=1e-10)
    assert net.stored_parameters() < count_parameters(net)


def test_mutations_keep_networks_monotone():
    start = ["D4"] * 8
    moves = valid_relaxations(start)
    assert moves and all(layer == 7 for layer, _ in moves)
    assert {g for _, g in moves} == {"C1", "D1", "C2", "D2", "C4"}
    arch = ["D4", "D4", "C4", "C4", "C2", "C2", "C1", "C1"]
    for layer, g in valid_relaxations(arch):
        new = list(arch)
        new[layer] = g
        assert is_monotone(new)
    for arch in random_discrete_architectures(20, seed=3):
        assert is_monotone(arch) and len(arch) == 8


def test_pareto_front():
    scores = [(0.9, 100), (0.8, 50), (0.85, 200), (0.7, 50), (0.95, 300)]
    assert pareto_front(scores) == [0, 1, 4]


def test_prior_network_equals_its_prior_at_initialization():
    torch.manual_seed(0)
    built = {}

    def build(specs):
        torch.manual_seed(5)
        built["last"] = EquivariantCNN(list(specs), channels=CH)
        return built["last"]

    prior = build(["D4"] * 8).eval()
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        expected = prior(x)
        model = with_prior(build, ["C1"] * 8, "D4").eval()
        assert model.groups == ["C1"] * 8
        assert torch.allclose(model(x), expected, atol=1e-5)


def test_equinas_e_runs_and_selects(tiny):
    def build(specs):
        return EquivariantCNN(list(specs), channels=CH, num_classes=2, hidden=8)

    result = equinas_e(
        build,
        tiny,
        tiny,
        generations=2,
        parents=2,
        children_per_parent=2,
        epochs_per_generation=0.5,
        batch_size=32,
        seed=0,
    )
    assert 1 <= len(result.population) <= 4
    for ind in result.population:
        assert is_monotone(ind.groups)
    log = result.log
    assert set(log["generation"]) == {0, 1}
    # generation 0: the D4 network and two children relaxed in the last layer
    assert (log["generation"] == 0).sum() == 3
    assert result.selected()["selected"].all()


def test_equinas_d_updates_z_and_random_z_differs(tiny):
    def run(random_z):
        torch.manual_seed(0)
        model = EquivariantCNN([tuple(ALL_GROUPS)] * 8, channels=CH, num_classes=2, hidden=8)
        return equinas_d(model, tiny, epochs=1, batch_size=16, seed=0, random_z=random_z)

    a, b = run(False), run(True)
    za, zb = a.z_history[-1], b.z_history[-1]
    assert za.shape == (8, 6)
    assert torch.allclose(za.sum(dim=1), torch.ones(8))
    assert not torch.allclose(za, torch.full_like(za, 1 / 6))
    assert not torch.allclose(za, zb)
    assert len(a.z_history) == len(a.z_steps) and a.z_steps[-1] == pytest.approx(1.0)


def test_random_mixtures_and_fractional_training(tiny):
    alphas = random_mixtures(3, seed=0)
    for a in alphas:
        assert torch.allclose(a.exp().sum(dim=1), torch.ones(8))
    model = EquivariantCNN(["C4"] * 8, channels=CH, num_classes=2, hidden=8)
    history = train_network(model, tiny, epochs=1.5, lr=0.1, batch_size=32)
    assert len(history.train_loss) == 2
    with pytest.raises(ValueError, match="non-negative"):
        train_network(model, tiny, epochs=-1)


def test_batch_norm_calibration_matches_the_data(tiny):
    from structlab.equivariance import calibrate_batch_norm

    model = EquivariantCNN(["C4"] * 8, channels=CH, num_classes=2, hidden=8)
    calibrate_batch_norm(model, tiny, len(tiny))
    first = model.norms[0]
    with torch.no_grad():
        h = model.convs[0](tiny.inputs)
        order = first.layout.natural_to_canonical
        nat = h[:, order].reshape(len(tiny), first.layout.relaxed_channels, 4, 16, 16)
        expected = nat.transpose(0, 1).reshape(first.layout.relaxed_channels, -1).mean(dim=1)
    assert torch.allclose(first.bn.running_mean, expected, atol=1e-5)
    assert first.bn.momentum == 0.1  # restored


def test_common_subgroup_and_mixed_fields():
    from structlab.equivariance import common_subgroup

    assert common_subgroup(["D4", "C4"]).name == "C4"
    assert common_subgroup(["D2", "C4"]).name == "C2"
    assert common_subgroup(ALL_GROUPS).name == "C1"
    net = EquivariantCNN([("C4", "D4")] * 8, channels=CH)
    assert net.norms[0].group.name == "C4" and net.pool.layout.group.name == "C4"


@pytest.mark.parametrize("spec", ["D4", "C4", "D1", "C1", tuple(ALL_GROUPS), "rpp"])
def test_export_to_plain_modules_equals_the_network(spec):
    """export() gives plain Conv2d / BatchNorm2d / Linear modules with the same logits."""
    torch.manual_seed(0)
    model = randomized(EquivariantCNN([spec] * 4, channels=CH, pool_after=(2, 4)).double())
    exported = model.export()
    kinds = {type(m) for m in exported}
    assert torch.nn.Conv2d in kinds and torch.nn.BatchNorm2d in kinds
    assert not any("equivariance" in type(m).__module__ for m in exported.modules())
    x = torch.randn(5, 1, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(exported(x), model(x), rtol=0, atol=1e-12)


def test_summary_is_the_mean_and_spread_over_seeds_of_each_seeds_mean():
    """Table 3/4: a method's error is the mean over seeds of each seed's mean over its networks,
    and its std the (population) standard deviation of those per-seed means."""
    import pandas as pd

    from structlab.equivariance.experiments import summarize

    rows = pd.DataFrame([
        {"method": "A", "seed": 0, "test_error": 10.0, "params": 5, "stored_params": 5},
        {"method": "A", "seed": 0, "test_error": 20.0, "params": 5, "stored_params": 5},
        {"method": "A", "seed": 1, "test_error": 5.0, "params": 7, "stored_params": 7},
        {"method": "B", "seed": 0, "test_error": 1.0, "params": 3, "stored_params": 2},
    ])
    table = summarize(rows, ["B", "A"])
    assert list(table.index) == ["B", "A"]
    assert table.loc["A", "test error (%)"] == pytest.approx((15.0 + 5.0) / 2)
    assert table.loc["A", "std"] == pytest.approx(5.0)
    assert (table.loc["A", "seeds"], table.loc["A", "networks"]) == (2, 3)
    assert table.loc["B", "std"] == 0.0 and table.loc["B", "stored params"] == 2
