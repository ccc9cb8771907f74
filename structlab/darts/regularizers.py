"""Regularising the architecture towards the discrete set S: proximity (eq. 20), ADMM (eqs. 21-25).

DARTS optimises relaxed architecture weights and only at the end projects them onto the set
``S`` of valid discrete cells (eqs. 13-16: binary weights, at most one operator per edge, exactly
two incoming edges per node). The gap between the relaxed weights and ``Pi_S`` of them is the
gap between what was searched and what is returned. Two regularisers add a pull towards ``S`` to
the alpha objective (eq. 17a):

* **Proximity** (PR, eq. 20, :func:`proximity_penalty`): ``(c rho_p / 2) ||w - Pi_S(w)||_2``
  with ``c`` ramped linearly from 0 to 1 over the search (:func:`linear_ramp`), so early search
  explores freely and late search is pushed to the nearest discrete cell.
* **ADMM** (eqs. 21-25, :class:`ADMM`): the constraint ``w in S`` is split off into a variable
  ``z`` in ``S`` and a scaled dual ``u``; the alpha objective gets ``(rho_a / 2) ||w - z + u||^2``
  and every ``every`` alpha steps ``z = Pi_S(w + u)`` (eq. 23) and ``u = lambda_u u + w - z``
  (eq. 25, eq. 24 with the discount ``lambda_u`` of §5.2.4).

**Which "alpha".** The thesis writes the penalties in terms of ``alpha``, but ``Pi_S`` is the
discretisation DARTS applies to the *softmaxed* alpha (§5.1, Fig. 18). Both regularisers here
act on the **activated weights** ``w = model.activated_weights()`` (softmax over the operators of
an edge, or the CRB clamp to ``[0, 1]``), the quantity that ``Pi_S`` projects and that is
comparable with the binary ``Pi_S(w)``; the raw alphas of a softmax live on another scale
(shift-invariant, unbounded), so ``||alpha - Pi_S(alpha)||`` would be meaningless there. The
gradient still reaches the raw alphas through the activation. The authors' code
(https://github.com/k8lion/DARTS-PRIME, ``src/model_admm_hard_statebn.py``) does the same
(``self.activate(x) - disc``). ``Pi_S`` is treated as a constant (no gradient through the
projection; it is piecewise constant anyway).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

__all__ = ["proximity_penalty", "linear_ramp", "ADMM"]

Projection = Callable[[list[torch.Tensor]], list[torch.Tensor]]


def _check_pairs(
    weights: Sequence[torch.Tensor], others: Sequence[torch.Tensor], what: str
) -> None:
    if len(weights) == 0:
        raise ValueError("no weight tensors given")
    if len(weights) != len(others):
        raise ValueError(f"{len(weights)} weight tensors but {len(others)} {what}")
    for i, (w, o) in enumerate(zip(weights, others)):
        if w.shape != o.shape:
            raise ValueError(f"tensor {i}: weights {tuple(w.shape)} vs {what} {tuple(o.shape)}")


def proximity_penalty(
    weights: Sequence[torch.Tensor], projections: Sequence[torch.Tensor], c: float, rho: float
) -> torch.Tensor:
    """Proximity regularisation of eq. 20: ``sum_k (c rho / 2) ||w_k - Pi_S(w)_k||_2``.

    Args:
        weights: activated architecture weights, one tensor per alpha (e.g. ``[E, P]`` for the
            normal and the reduction cell), differentiable w.r.t. the alphas.
        projections: ``Pi_S`` of ``weights`` (same shapes; binary); detached here, so the
            gradient ``(c rho / 2) (w - Pi_S(w)) / ||w - Pi_S(w)||`` makes a descent step move
            ``w`` straight towards ``Pi_S(w)``.
        c: ramp factor in ``[0, 1]`` (:func:`linear_ramp`, fraction of the search done).
        rho: ``rho_p`` (0.1 for images, 1.0 for text, §5.3.2).

    Returns:
        A scalar tensor (0 exactly when every ``w_k`` is discrete; its gradient there is 0).

    The norm is the plain Euclidean (Frobenius) norm of each tensor, *not* squared, summed over
    the tensors: this is a choice. Eq. 20 prints ``||.||_2`` while the ADMM term (eq. 21) is
    squared, and the authors' code computes ``rho / 2 * (activate(x) - disc).norm()`` per alpha
    tensor, unsquared. The unsquared norm is also what the stated intent needs: its gradient
    has constant magnitude ``c rho / 2`` whatever the distance, so the pull does not fade as
    ``w`` approaches ``S`` and can finish the discretisation, where the squared norm's pull
    ``c rho (w - Pi_S(w))`` vanishes near ``S`` and is tiny for softmax weights
    (differences ``< 1``).
    """
    _check_pairs(weights, projections, "projections")
    if not c >= 0:
        raise ValueError(f"c must be non-negative, got {c!r}")
    if not rho >= 0:
        raise ValueError(f"rho must be non-negative, got {rho!r}")
    total = weights[0].new_zeros(())
    for w, p in zip(weights, projections):
        diff = w - p.detach().to(device=w.device, dtype=w.dtype)
        # vector_norm's backward returns the subgradient 0 at diff == 0 (no NaN)
        total = total + torch.linalg.vector_norm(diff.flatten())
    return (c * rho / 2.0) * total


def linear_ramp(step: float, total: float) -> float:
    """``c`` of eq. 20: ``step / total`` clipped to ``[0, 1]`` (0 at the start of the search, 1 at
    its end)."""
    if not total > 0:
        raise ValueError(f"total must be positive, got {total!r}")
    return min(1.0, max(0.0, float(step) / float(total)))


def _check_binary(z: list[torch.Tensor]) -> None:
    for i, t in enumerate(z):
        if not bool(((t == 0) | (t == 1)).all()):
            raise ValueError(f"the projection returned a non-binary tensor (index {i}); "
                             "Pi_S must map into S (eq. 16)")


class ADMM:
    """ADMM regularisation of the alpha step (§5.2.4, eqs. 21-25) on the activated weights.

    Each alpha step minimises ``L_val + (rho_a / 2) ||w - z + u||_2^2`` (eq. 21, squared as in
    ADMM's augmented Lagrangian: ``u`` is the scaled dual variable and the term's gradient
    ``rho_a (w - z + u)`` is the usual proximal pull) for ``z``, ``u`` held fixed; eq. 21 is
    "solved" by ``every`` first-order alpha steps, after which

    * ``z <- Pi_S(w + u)`` (eq. 23; ``z`` is always a valid discrete cell),
    * ``u <- lambda_u u + w - z`` (eq. 25, eq. 24 with the discount ``lambda_u``).

    Start: ``z = Pi_S(w_0)`` of the initial weights, ``u = 0`` (:meth:`initialize`).

    Args:
        rho_a: regularisation weight (0.1 in §5.3.2).
        lambda_u: discount of past ``u`` (0.8).
        every: alpha steps between ``z``/``u`` updates (10).

    Attributes:
        z, u: lists of tensors, one per alpha tensor (``None`` before :meth:`initialize`).
        n_alpha_steps: alpha steps counted by :meth:`after_alpha_step`.
        n_updates: ``z``/``u`` updates done.

    Differences from the authors' code (https://github.com/k8lion/DARTS-PRIME, ``model_admm_hard_
    statebn.py``), where we follow the thesis: their penalty uses the unsquared norm, ``z`` starts
    as a copy of the raw alphas, ``z`` projects ``activate(alpha + u)`` and ``u`` adds the raw
    ``alpha - z``; here every quantity is on the activated weights and ``z`` starts in ``S``.
    """

    def __init__(self, rho_a: float = 0.1, lambda_u: float = 0.8, every: int = 10) -> None:
        if not rho_a >= 0:
            raise ValueError(f"rho_a must be non-negative, got {rho_a!r}")
        if not 0 <= lambda_u <= 1:
            raise ValueError(f"lambda_u must be in [0, 1], got {lambda_u!r}")
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive integer, got {every!r}")
        self.rho_a, self.lambda_u, self.every = float(rho_a), float(lambda_u), every
        self.z: list[torch.Tensor] | None = None
        self.u: list[torch.Tensor] | None = None
        self.n_alpha_steps = 0
        self.n_updates = 0

    @property
    def initialized(self) -> bool:
        return self.z is not None

    def initialize(self, weights: Sequence[torch.Tensor], project: Projection) -> None:
        """``z = Pi_S(w_0)``, ``u = 0`` from the initial activated weights."""
        w = [t.detach().clone() for t in weights]
        with torch.no_grad():
            z = [t.detach().to(device=s.device, dtype=s.dtype) for t, s in zip(project(w), w)]
        _check_pairs(w, z, "projections")
        _check_binary(z)
        self.z = z
        self.u = [torch.zeros_like(t) for t in w]
        self.n_alpha_steps = 0
        self.n_updates = 0

    def _require(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        if self.z is None or self.u is None:
            raise RuntimeError("ADMM is not initialised; call initialize(weights, project) first")
        return self.z, self.u

    def penalty(self, weights: Sequence[torch.Tensor]) -> torch.Tensor:
        """``sum_k (rho_a / 2) ||w_k - z_k + u_k||_2^2`` (eq. 21), a differentiable scalar."""
        z, u = self._require()
        _check_pairs(weights, z, "z tensors")
        total = weights[0].new_zeros(())
        for w, zk, uk in zip(weights, z, u):
            d = w - zk.to(device=w.device, dtype=w.dtype) + uk.to(device=w.device, dtype=w.dtype)
            total = total + d.pow(2).sum()
        return (self.rho_a / 2.0) * total

    def after_alpha_step(self, weights: Sequence[torch.Tensor], project: Projection) -> bool:
        """Count one alpha step; every ``every``-th, update ``z`` (eq. 23) then ``u`` (eq. 25)
        from the current activated weights. Returns True when an update happened."""
        z, u = self._require()
        self.n_alpha_steps += 1
        if self.n_alpha_steps % self.every != 0:
            return False
        w = [t.detach().to(device=uk.device, dtype=uk.dtype) for t, uk in zip(weights, u)]
        _check_pairs(w, z, "z tensors")
        with torch.no_grad():
            shifted = [wk + uk for wk, uk in zip(w, u)]
            new_z = [t.detach().to(device=s.device, dtype=s.dtype)
                     for t, s in zip(project(shifted), shifted)]
            _check_pairs(w, new_z, "projections")
            _check_binary(new_z)
            new_u = [self.lambda_u * uk + wk - zk for uk, wk, zk in zip(u, w, new_z)]
        self.z, self.u = new_z, new_u
        self.n_updates += 1
        return True

    def state_dict(self) -> dict[str, Any]:
        """Hyperparameters, counters and CPU copies of ``z`` and ``u``."""
        return {
            "rho_a": self.rho_a, "lambda_u": self.lambda_u, "every": self.every,
            "n_alpha_steps": self.n_alpha_steps, "n_updates": self.n_updates,
            "z": None if self.z is None else [t.detach().cpu().clone() for t in self.z],
            "u": None if self.u is None else [t.detach().cpu().clone() for t in self.u],
        }

    def load_state_dict(
        self, state: dict[str, Any], device: torch.device | str | None = None
    ) -> None:
        """Restore :meth:`state_dict` (tensors moved to ``device`` when given)."""
        self.rho_a, self.lambda_u = float(state["rho_a"]), float(state["lambda_u"])
        self.every = int(state["every"])
        self.n_alpha_steps, self.n_updates = int(state["n_alpha_steps"]), int(state["n_updates"])
        def restore(ts: list[torch.Tensor] | None) -> list[torch.Tensor] | None:
            return None if ts is None else [t.clone().to(device or t.device) for t in ts]

        self.z, self.u = restore(state["z"]), restore(state["u"])

    def __repr__(self) -> str:
        return (f"ADMM(rho_a={self.rho_a}, lambda_u={self.lambda_u}, every={self.every}, "
                f"n_alpha_steps={self.n_alpha_steps}, n_updates={self.n_updates})")
