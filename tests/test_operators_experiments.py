"""The chapter's experiment drivers on a tiny problem (fast smoke and consistency checks)."""

import pytest
import torch

from structlab.data.base import LabelledTensors
from structlab.models import MLP, VGG
from structlab.operators.experiments import (
    creation_check,
    iterative_pruning,
    one_shot_pruning,
    prune_regrow_cycles,
    structured_pruning,
)


@pytest.fixture
def problem():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 1, 4, 4, generator=g)
    y = (x.flatten(1)[:, :3].sum(1) > 0).long()
    data = LabelledTensors(x, y, name="toy", classes=["a", "b"])
    torch.manual_seed(0)
    model = MLP(16, [12, 8], 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(30):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model, data


def _sgd(net):
    return torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)


def test_one_shot_and_iterative(problem):
    model, data = problem
    a = one_shot_pruning(model, data, data, [0.5, 0.9], optimizer_factory=_sgd,
                         finetune_epochs=[1, 2], gradient_batches=1, quiet=True)
    b = iterative_pruning(model, data, data, [0.5, 0.9], optimizer_factory=_sgd,
                          gradient_batches=1, quiet=True)
    assert len(a) == len(b) == 6
    assert a.sparsity.round(2).tolist() == [0.5, 0.9] * 3
    assert b.groupby("method").finetune_epochs.max().tolist() == [2, 2, 2]
    assert model.layers[0].weight.count_nonzero() == model.layers[0].weight.numel()  # untouched
    with pytest.raises(ValueError):
        iterative_pruning(model, data, data, [0.9, 0.5], optimizer_factory=_sgd)
    with pytest.raises(ValueError):
        one_shot_pruning(model, data, data, [1.5])


def test_structured_pruning_widths(problem):
    model, data = problem
    df = structured_pruning(model, data, [0.25, 0.5], data=data, batches=1, quiet=True)
    assert set(df.method) == {"weight_norm", "activation", "dormancy", "taylor", "redundancy",
                              "random"}
    assert df[df.fraction == 0.5].width_after.unique().tolist() == [6 + 4]
    assert model.widths() == {"hidden0": 12, "hidden1": 8}
    with pytest.raises(ValueError):
        structured_pruning(model, data, [1.0], data=data)


def test_creation_check_reports_zero_change():
    torch.manual_seed(0)
    vgg = VGG([4, "M", 6], input_size=4, in_channels=1, num_classes=2, dense=[5]).eval()
    df = creation_check(vgg, torch.rand(8, 1, 4, 4), 3, zero="fan_in", dtype=torch.float64)
    assert df.kind.tolist() == ["conv", "flatten", "dense"]
    assert (df.max_abs_change < 1e-12).all() and (df.predictions_changed == 0).all()
    assert df.width.tolist() == [7, 9, 8]


def test_prune_regrow_keeps_sparsity(problem):
    model, data = problem
    df = prune_regrow_cycles(model, data, data, target_sparsity=0.8, regrow_fraction=0.25,
                             cycles=2, optimizer_factory=_sgd, gradient_batches=1, quiet=True)
    end = df[df.stage == "regrown"]
    assert (end.sparsity.sub(df.sparsity.iloc[0]).abs() < 1e-9).all()
    assert set(df.strategy) == {"none", "random", "gradient"}
