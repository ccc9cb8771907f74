"""Orthogonality metrics and triggers of the neurogenesis chapter (thesis eq. 27-32)."""

from __future__ import annotations

import math

import pytest
import torch

from structlab.neurogenesis import (
    ActivationTrigger,
    WeightTrigger,
    candidate_ed_scores,
    candidate_og_scores,
    effective_dimension,
    orthogonality_gap,
    scaled_singular_values,
    threshold_count,
)


@pytest.mark.parametrize("rank", [1, 3, 7, 12])
def test_effective_dimension_of_known_rank(rank):
    g = torch.Generator().manual_seed(rank)
    M, n = 12, 200
    H = torch.randn(M, rank, generator=g) @ torch.randn(rank, n, generator=g)
    assert effective_dimension(H) == pytest.approx(rank / M)
    assert effective_dimension(H, method="gram") == pytest.approx(rank / M)


def test_effective_dimension_threshold_scales_with_sqrt_n():
    # singular values of H / sqrt(n): an orthogonal block with entries 0.02 * sqrt(n) has all
    # scaled singular values 0.02 (> eps = 0.01), a block at 0.005 * sqrt(n) has none
    n = 64
    Q = torch.linalg.qr(torch.randn(n, 8))[0].T * math.sqrt(n)
    assert effective_dimension(0.02 * Q) == 1.0
    assert effective_dimension(0.005 * Q) == 0.0
    assert effective_dimension(0.005 * Q, eps=0.001) == 1.0


def test_orthogonality_gap_extremes():
    n = 6
    H = torch.eye(n)  # samples orthogonal with equal norms
    assert orthogonality_gap(H) == pytest.approx(1.0)
    same = torch.ones(4, n)  # every sample identical
    assert orthogonality_gap(same) == pytest.approx(1 - math.sqrt(1 - 1 / n))
    G = torch.randn(5, n, dtype=torch.float64)
    direct = 1 - torch.linalg.norm(G.T @ G / (G**2).sum() - torch.eye(n, dtype=G.dtype) / n)
    assert orthogonality_gap(G) == pytest.approx(float(direct))


def test_candidate_scores_match_brute_force():
    g = torch.Generator().manual_seed(0)
    H = torch.relu(torch.randn(10, 4, generator=g) @ torch.randn(4, 80, generator=g))
    C = torch.relu(torch.randn(12, 80, generator=g))
    C[:3] = H[:3] * 0.5  # candidates in the span of H
    ed, gain = candidate_ed_scores(H, C)
    og = candidate_og_scores(H, C)
    base = float(scaled_singular_values(H.double()).sum())
    for i in range(len(C)):
        A = torch.cat([H, C[i : i + 1]])
        assert float(ed[i]) == pytest.approx(effective_dimension(A))
        sv = scaled_singular_values(A.double())
        assert float(gain[i]) == pytest.approx(float(sv.sum()) - base, abs=1e-5)
        assert float(og[i]) == pytest.approx(orthogonality_gap(A), abs=1e-9)


def test_threshold_count_is_non_negative_and_rounds_the_threshold():
    assert threshold_count(4, 1.0, 4, 0.97) == 1  # floor(3.88) = 3 -> one unit
    assert threshold_count(2, 1.0, 4, 0.97) == 0  # rank dropped: never negative
    assert threshold_count(0, 0.5, 10, 0.9) == 0
    for score in range(0, 20):
        assert threshold_count(score, 0.8, 16, 0.97) >= 0


def test_activation_trigger_baseline_and_running_max():
    trig = ActivationTrigger(0.97)
    full = torch.randn(100, 8)  # (n, M), full rank
    low = torch.randn(100, 2) @ torch.randn(2, 8)
    assert trig("a", full) == 1  # 8 - floor(0.97 * 8)
    assert trig("a", low) == 0
    conv = ActivationTrigger(0.97, running_max=True)
    assert conv("c", low) >= 0
    assert conv("c", full) >= 0
    assert conv.baselines["c"] == 1.0
    og = ActivationTrigger(0.97, metric="og")
    assert og("o", full) >= 0


def test_weight_trigger_is_non_negative():
    lin = torch.nn.Linear(16, 8)
    trig = WeightTrigger(0.99)
    assert trig("w", lin) >= 0
    with torch.no_grad():
        lin.weight[1:] = lin.weight[0]
        lin.bias.zero_()
    assert trig("w", lin) == 0
