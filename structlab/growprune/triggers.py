"""TRIG_PRUNE and TRIG_GROW of DYNO (thesis §7.2, eqs. 37-39).

Both triggers read the effective dimension phi_ED of a layer's post-activations (eq. 37, the
``eps``-numerical rank of ``H / sqrt(n)`` divided by the width ``M``; the same metric as eq. 27,
:func:`structlab.neurogenesis.effective_dimension`) and compare it with ``phi*``, its value at the
layer's last structural change:

* eq. 38: ``TRIG_PRUNE = max(0, floor(M ((1 - delta) phi* - phi_ED)))``,
* eq. 39: ``TRIG_GROW  = max(0, floor(M (phi_ED - (1 + delta) phi*)))``.

The thesis prints ``min(0, ...)`` in both equations (as in eq. 28 of chapter 6), which would never
give a positive count; the text ("a significant increase ... triggers neurogenesis, a significant
decrease ... pruning") and Algorithm 5 (``if TRIG(f, l) > 0``) need ``max``, which is what is
computed here. With ``delta > 0`` the two counts are never positive together.
"""

from __future__ import annotations

import math

import torch

__all__ = ["SCALINGS", "phi_from_gram", "phi_of", "scaled_spectrum", "trig_prune", "trig_grow",
           "GrowPruneTrigger"]

#: Scalings of ``H`` before thresholding its singular values: ``"samples"`` is eq. 37
#: (``H / sqrt(n)``); ``"width"`` is the authors' code (``k8lion/DYNO`` calls NeurOps'
#: ``effective_rank``, which scales by ``1 / sqrt(M)``, on at most ``3 M`` sampled columns).
SCALINGS = ("samples", "width")


def phi_from_gram(gram: torch.Tensor, columns: int, eps: float = 1e-2) -> float:
    """phi_ED (eq. 37) from the Gram matrix ``H H^T`` (``M x M``) of a layer's unit matrix with
    ``columns`` columns (samples, times spatial positions for a convolution): the number of
    eigenvalues of ``H H^T / n`` above ``eps^2`` (the singular values of ``H / sqrt(n)`` above
    ``eps``), divided by ``M``. Computed in float64."""
    if eps <= 0:
        raise ValueError(f"eps must be positive, got {eps}")
    M = int(gram.shape[0])
    if M == 0:
        raise ValueError("empty Gram matrix")
    if columns < 1:
        raise ValueError(f"columns must be positive, got {columns}")
    lam = torch.linalg.eigvalsh(gram.double() / columns)
    return float((lam > eps * eps).sum()) / M


def _unit_rows(acts: torch.Tensor) -> torch.Tensor:
    """``(n[ h w], M)``: the transposed unit matrix of activations ``(n, M[, h, w])`` (a
    convolution's positions count as samples, §7.2)."""
    a = acts.detach()
    if a.dim() > 2:
        a = a.transpose(0, 1).reshape(a.shape[1], -1).T
    return a.reshape(a.shape[0], -1)


def scaled_spectrum(acts: torch.Tensor, *, scaling: str = "samples", limit_ratio: int = 3,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """The singular values (descending, float64) that phi_ED thresholds, of a layer's
    activations ``(n, M[, h, w])``.

    ``scaling="samples"``: those of ``H / sqrt(n)`` with ``n`` the columns of the unit matrix
    (eq. 37). ``scaling="width"``: the authors' code, those of ``H / sqrt(M)`` on at most
    ``limit_ratio * M`` columns drawn without replacement with ``generator`` (NeurOps'
    ``effective_rank(..., limit_ratio=3)`` as ``k8lion/DYNO`` calls it).
    """
    if scaling not in SCALINGS:
        raise ValueError(f"scaling must be one of {SCALINGS}, got {scaling!r}")
    rows = _unit_rows(acts).double()
    n, M = rows.shape
    if M == 0 or n == 0:
        raise ValueError("empty activations")
    if scaling == "samples":
        lam = torch.linalg.eigvalsh(rows.T @ rows / n)
    else:
        if limit_ratio > 0 and n > limit_ratio * M:
            pick = torch.randperm(n, generator=generator)[: limit_ratio * M].to(rows.device)
            rows = rows.index_select(0, pick)
        lam = torch.linalg.eigvalsh(rows.T @ rows / M)
    return lam.clamp(min=0).sqrt().flip(0)


def phi_of(acts: torch.Tensor, eps: float = 1e-2, *, scaling: str = "samples",
           limit_ratio: int = 3, generator: torch.Generator | None = None) -> float:
    """phi_ED (eq. 37) of activations ``(n, M[, h, w])``: the fraction of the ``M`` singular
    values of :func:`scaled_spectrum` above ``eps``."""
    if eps <= 0:
        raise ValueError(f"eps must be positive, got {eps}")
    sv = scaled_spectrum(acts, scaling=scaling, limit_ratio=limit_ratio, generator=generator)
    M = _unit_rows(acts).shape[1]
    return float((sv > eps).sum()) / M


def _floor(x: float) -> int:
    return int(math.floor(x + 1e-9))


def trig_prune(phi: float, phi_star: float, width: int, delta: float = 3e-2) -> int:
    """TRIG_PRUNE (eq. 38, with ``max``): ``max(0, floor(M ((1 - delta) phi* - phi)))``, the
    number of neurons to prune when phi_ED fell well below its value at the last change."""
    if delta <= 0:
        raise ValueError(f"delta must be positive, got {delta}")
    return max(0, _floor(width * ((1 - delta) * phi_star - phi)))


def trig_grow(phi: float, phi_star: float, width: int, delta: float = 3e-2) -> int:
    """TRIG_GROW (eq. 39, with ``max``): ``max(0, floor(M (phi - (1 + delta) phi*)))``, the number
    of neurons to add when phi_ED rose well above its value at the last change."""
    if delta <= 0:
        raise ValueError(f"delta must be positive, got {delta}")
    return max(0, _floor(width * (phi - (1 + delta) * phi_star)))


class GrowPruneTrigger:
    """The two triggers of DYNO with the moving baseline ``phi*`` of every layer.

    ``phi*`` of a layer is set the first time the layer is measured (the start of fine-tuning:
    the distribution change) and then only by :meth:`reset`, which DYNO calls after it pruned
    or grew that layer, with phi_ED of the changed layer. Evaluating the triggers never moves it.

    Args:
        delta: threshold of eqs. 38-39 (3e-2 in §7.3).
        eps: threshold of eq. 37 (1e-2 in §7.3).
    """

    def __init__(self, delta: float = 3e-2, eps: float = 1e-2) -> None:
        if delta <= 0 or eps <= 0:
            raise ValueError(f"delta and eps must be positive, got {delta}, {eps}")
        self.delta, self.eps = delta, eps
        self.phi_star: dict[str, float] = {}

    def has_baseline(self, name: str) -> bool:
        return name in self.phi_star

    def reset(self, name: str, phi: float) -> None:
        """Set ``phi*`` of layer ``name`` to ``phi`` (at a structural change of that layer)."""
        self.phi_star[name] = float(phi)

    def counts(self, name: str, phi: float, width: int) -> tuple[int, int]:
        """``(TRIG_PRUNE, TRIG_GROW)`` of layer ``name`` at phi_ED ``phi`` (eqs. 38-39); the
        first call for a layer takes ``phi`` as its baseline and returns ``(0, 0)``."""
        if name not in self.phi_star:
            self.reset(name, phi)
            return 0, 0
        star = self.phi_star[name]
        return (trig_prune(phi, star, width, self.delta), trig_grow(phi, star, width, self.delta))

    def prune_count(self, name: str, phi: float, width: int) -> int:
        """TRIG_PRUNE of layer ``name`` (eq. 38)."""
        return self.counts(name, phi, width)[0]

    def grow_count(self, name: str, phi: float, width: int) -> int:
        """TRIG_GROW of layer ``name`` (eq. 39)."""
        return self.counts(name, phi, width)[1]
