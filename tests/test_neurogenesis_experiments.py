"""Experiment drivers of the neurogenesis chapter: the probe of the gradient trigger (eq. 32)."""

from __future__ import annotations

import pytest
import torch

from structlab.data.base import LabelledTensors
from structlab.neurogenesis.experiments import gradient_trigger_probe


def _toy(n=200, d=16, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = (x[:, :classes] * torch.arange(1, classes + 1)).argmax(1)
    return LabelledTensors(x, y, name="toy")


def test_gradient_trigger_probe_rows_and_threshold():
    data = _toy()
    probe = gradient_trigger_probe(data, hidden=[8, 8], steps=[1, 5], batch_size=32,
                                   lr=1e-3, grad_scale=0.5)
    assert list(probe.step) == [1, 1, 5, 5] and list(probe.layer) == [1, 2, 1, 2]
    assert (probe.width == 8).all()
    assert torch.allclose(torch.tensor(probe.ratio), torch.tensor(probe.top_sv / probe.threshold))
    assert torch.allclose(torch.tensor(probe.sv_over_unit),
                          torch.tensor(probe.top_sv / probe.mean_unit_norm))
    # the trigger adds a unit exactly when the top singular value exceeds the threshold
    assert ((probe["count"] > 0) == (probe.top_sv > probe.threshold)).all()
    # the threshold is grad_scale times the summed unit norms: M * scale * mean norm
    assert torch.allclose(torch.tensor(probe.threshold),
                          torch.tensor(0.5 * probe.width * probe.mean_unit_norm))


def test_gradient_trigger_probe_fires_with_a_tiny_threshold():
    probe = gradient_trigger_probe(_toy(), hidden=[8, 8], steps=[1], batch_size=32,
                                   grad_scale=1e-6)
    assert (probe["count"] > 0).all()


def test_gradient_trigger_probe_spans_epochs_and_rejects_bad_steps():
    data = _toy(n=64)
    probe = gradient_trigger_probe(data, hidden=[4], steps=[3], batch_size=32)  # 2 steps/epoch
    assert list(probe.step) == [3]
    with pytest.raises(ValueError, match="positive"):
        gradient_trigger_probe(data, hidden=[4], steps=[0], batch_size=32)


def test_gradient_trigger_probe_does_not_change_training():
    """Probing is deterministic and measuring a step does not change the steps after it."""
    data = _toy(n=64)
    a = gradient_trigger_probe(data, hidden=[8], steps=[2], batch_size=32)
    b = gradient_trigger_probe(data, hidden=[8], steps=[1, 2], batch_size=32)
    assert a.top_sv[0] == b.top_sv[1] and a.threshold[0] == b.threshold[1]
