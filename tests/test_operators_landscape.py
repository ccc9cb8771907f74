"""The toy landscape of thesis Fig. 5."""

import numpy as np
import pytest

from structlab.operators import ToyLandscape, descend


def test_line_has_local_and_global_minimum_and_plane_has_one():
    land = ToyLandscape()
    minima = land.line_minima()
    assert len(minima) == 2 and minima[0] < 0 < minima[1]
    assert land.loss(minima[0], 0) < land.loss(minima[1], 0)
    w1 = np.linspace(-3, 3, 601)
    assert np.allclose(land.loss(w1, land.phi(w1)), land.b * (w1 + 1) ** 2)  # single basin


def test_gradient_matches_finite_differences():
    land = ToyLandscape()
    for w in [(0.3, -0.2), (1.1, 0.7), (-0.5, 1.5)]:
        g = land.grad(*w)
        eps = 1e-6
        fd = (
            (land.loss(w[0] + eps, w[1]) - land.loss(w[0] - eps, w[1])) / (2 * eps),
            (land.loss(w[0], w[1] + eps) - land.loss(w[0], w[1] - eps)) / (2 * eps),
        )
        assert g == pytest.approx(fd, rel=1e-5, abs=1e-7)


def test_creation_escapes_and_early_pruning_traps():
    land = ToyLandscape()
    s1 = land.line_minima()[1]
    one_d = descend(land, (s1, 0.0), two_d_from=None)
    assert one_d[-1][0] == pytest.approx(s1, abs=1e-4) and one_d[-1][1] == 0
    two_d = descend(land, (s1, 0.0))
    assert two_d[-1] == pytest.approx(land.global_minimum, abs=1e-3)
    early = descend(land, (s1, 0.0), prune_at=10)
    assert early[-1][0] == pytest.approx(s1, abs=1e-3)
    late = descend(land, (s1, 0.0), prune_at=300)
    assert late[-1][0] == pytest.approx(land.line_minima()[0], abs=1e-3)
    noisy = descend(land, (s1, 0.0), noise=0.05, seed=1)
    assert np.array_equal(noisy, descend(land, (s1, 0.0), noise=0.05, seed=1))
