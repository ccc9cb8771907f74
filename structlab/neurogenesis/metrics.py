"""Orthogonality metrics of a layer (thesis §6.2.1, eq. 27, 29, 30) and candidate scoring.

Conventions: a layer's activations are a matrix ``H`` with **one row per unit and one column per
sample** (``M x n``), as in the thesis. A convolutional layer's post-activations ``(n, C, H, W)``
become ``C x (n H W)`` for the effective dimension (:func:`unit_matrix`, §6.2.3) and
``(C H W) x n`` for the orthogonality gap (:func:`sample_matrix`). A weight matrix is one row
per unit (its fan-in, flattened, with the bias as a last column: :func:`weight_matrix`).

Besides the metrics themselves, this module scores *candidate* units for NORTH-Select and
NORTH-Pre: the value of the metric of ``[H; h_c]`` for each candidate row ``h_c``, computed for
a thousand candidates at the cost of one eigendecomposition of ``H H^T`` (see
:func:`candidate_ed_scores`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

__all__ = [
    "effective_dimension",
    "effective_dimensions",
    "orthogonality_gap",
    "gram_orthogonality_gap",
    "small_gram",
    "scaled_singular_values",
    "unit_matrix",
    "sample_matrix",
    "weight_matrix",
    "candidate_ed_scores",
    "candidate_og_scores",
    "METRICS",
]

#: Names of the orthogonality metrics of activations (``"ed"``: eq. 27, ``"og"``: eq. 29).
METRICS = ("ed", "og")


def _as_matrix(H: torch.Tensor, what: str = "H") -> torch.Tensor:
    H = torch.as_tensor(H)
    if H.dim() != 2:
        raise ValueError(f"{what} must be 2-D (units x samples), got shape {tuple(H.shape)}")
    if H.numel() == 0:
        raise ValueError(f"{what} is empty: shape {tuple(H.shape)}")
    if not H.is_floating_point():
        H = H.float()
    return H


def scaled_singular_values(H: torch.Tensor, *, method: str = "svd") -> torch.Tensor:
    """Singular values of ``H / sqrt(n)`` for ``H`` of shape ``(..., M, n)``, in descending order.

    ``method="svd"`` uses ``torch.linalg.svdvals`` (batched over leading dimensions);
    ``method="gram"`` takes square roots of the eigenvalues of ``H H^T / n`` computed in float64
    (the same numbers up to rounding, about five times faster on a CPU when ``M < n``; the
    triggers use it). Both return ``min(M, n)`` values.
    """
    H = torch.as_tensor(H)
    if not H.is_floating_point():
        H = H.float()
    n = H.shape[-1]
    if method == "svd":
        return torch.linalg.svdvals(H / math.sqrt(n))
    if method == "gram":
        gram = small_gram(H) / n
        eig = torch.linalg.eigvalsh(gram).flip(-1).clamp_min(0)
        return eig.sqrt().to(H.dtype)
    raise ValueError(f"unknown method {method!r}; use 'svd' or 'gram'")


def effective_dimension(H: torch.Tensor, eps: float = 0.01, *, method: str = "svd") -> float:
    """Effective dimension phi_ED of a layer (thesis eq. 27).

    ``phi_ED = |{sigma in SVD(H / sqrt(n)) : sigma > eps}| / M``: the eps-numerical rank of the
    post-activation matrix, divided by the number of units.

    Args:
        H: ``(M, n)`` tensor, one row per unit (neuron or channel), one column per sample. For a
            convolution, flatten each channel over space and samples into its row
            (:func:`unit_matrix`). The thesis requires ``n > M``: with fewer samples the value is
            at most ``n / M``.
        eps: threshold on the scaled singular values (0.01 in Table 8).
        method: ``"svd"`` or ``"gram"`` (see :func:`scaled_singular_values`).

    Returns:
        A float in ``[0, 1]``.
    """
    H = _as_matrix(H)
    if eps <= 0:
        raise ValueError(f"eps must be positive, got {eps}")
    sv = scaled_singular_values(H, method=method)
    return float((sv > eps).sum()) / H.shape[0]


def effective_dimensions(
    matrices: Sequence[torch.Tensor], eps: float = 0.01, *, method: str = "gram"
) -> list[float]:
    """:func:`effective_dimension` of several matrices; those of equal shape share one batched
    ``svdvals`` / ``eigvalsh`` call (the layers of a network evaluated together)."""
    if eps <= 0:
        raise ValueError(f"eps must be positive, got {eps}")
    out: list[float] = [0.0] * len(matrices)
    groups: dict[tuple[tuple[int, ...], torch.dtype, torch.device], list[int]] = {}
    mats = [_as_matrix(H, f"matrices[{i}]") for i, H in enumerate(matrices)]
    for i, H in enumerate(mats):
        groups.setdefault((tuple(H.shape), H.dtype, H.device), []).append(i)
    for (shape, _, _), idx in groups.items():
        batch = torch.stack([mats[i] for i in idx])
        counts = (scaled_singular_values(batch, method=method) > eps).sum(-1)
        for i, c in zip(idx, counts.tolist()):
            out[i] = c / shape[0]
    return out


def orthogonality_gap(H: torch.Tensor) -> float:
    """Orthogonality metric phi_OG of a layer (thesis eq. 29, after Daneshmand et al. 2021).

    ``phi_OG = 1 - || H^T H / ||H||_F^2 - I_n / ||I_n||_F^2 ||_F`` with ``H`` of shape ``(M, n)``
    (the thesis prints ``1 / ||I_n||_F^2`` without ``I_n``; the identity is meant). It is 1 when
    the ``n`` samples' activation vectors are orthogonal with equal norms, and it is computed
    without forming the ``n x n`` matrix: ``||G / ||H||^2 - I/n||_F^2 = ||H H^T||_F^2 / ||H||_F^4
    - 1/n``. A convolutional layer's activations are flattened to ``(C H W) x n`` first
    (:func:`sample_matrix`). An all-zero ``H`` has no orthogonality: 0 is returned.
    """
    H = _as_matrix(H).double()
    return gram_orthogonality_gap(small_gram(H), H.shape[1], fro2=float((H * H).sum()))


def gram_orthogonality_gap(gram: torch.Tensor, n: int, *, fro2: float | None = None) -> float:
    """phi_OG (eq. 29) from either Gram matrix of ``H`` (``H H^T`` or ``H^T H``: their squared
    Frobenius norms agree) and its ``n`` samples: ``1 - sqrt(||G||_F^2 / ||H||_F^4 - 1/n)``,
    with ``||H||_F^2 = tr(G)`` unless ``fro2`` is given."""
    if fro2 is None:
        fro2 = float(torch.diagonal(gram).sum())
    if fro2 == 0.0:
        return 0.0
    gap2 = float((gram * gram).sum()) / fro2**2 - 1.0 / n
    return 1.0 - math.sqrt(max(gap2, 0.0))


def small_gram(A: torch.Tensor) -> torch.Tensor:
    """The smaller of ``A A^T`` and ``A^T A`` in float64, for ``A`` of shape ``(..., r, c)``:
    the same nonzero eigenvalues (the squared singular values of ``A``) at the lower cost."""
    Ad = A.double()
    At = Ad.transpose(-1, -2)
    return Ad @ At if A.shape[-2] <= A.shape[-1] else At @ Ad


def unit_matrix(acts: torch.Tensor) -> torch.Tensor:
    """Activations ``(n, M)`` or ``(n, C, H, W)`` as the ``(units, columns)`` matrix of eq. 27:
    ``(M, n)`` or ``(C, n H W)`` (§6.2.3, "Effective Dimension")."""
    if acts.dim() < 2:
        raise ValueError(f"activations must be (n, M, ...), got shape {tuple(acts.shape)}")
    return acts.transpose(0, 1).reshape(acts.shape[1], -1)


def sample_matrix(acts: torch.Tensor) -> torch.Tensor:
    """Activations ``(n, M)`` or ``(n, C, H, W)`` as the ``(features, samples)`` matrix of eq. 29:
    ``(M, n)`` or ``(C H W, n)`` (§6.2.3, "Orthogonality Gap")."""
    if acts.dim() < 2:
        raise ValueError(f"activations must be (n, M, ...), got shape {tuple(acts.shape)}")
    return acts.reshape(acts.shape[0], -1).T


def weight_matrix(module: nn.Module) -> torch.Tensor:
    """The weights of a ``Linear`` / ``Conv2d`` as one row per output unit, ``(M, fan_in [+1])``,
    with the bias as a last column when there is one (``W_l`` of §6.1.1; flattened as in §6.2.3,
    "Weight-based Trigger")."""
    w = getattr(module, "weight_orig", None)
    w = module.weight if w is None else w
    rows = w.detach().reshape(w.shape[0], -1)
    b = getattr(module, "bias_orig", None)
    b = getattr(module, "bias", None) if b is None else b
    if b is not None:
        rows = torch.cat([rows, b.detach().reshape(-1, 1)], dim=1)
    return rows


def _eigh_gram(H: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (ascending, >= 0) and eigenvectors of ``H H^T / N`` in float64."""
    Hd = H.double()
    gram = Hd @ Hd.T / Hd.shape[1]
    lam, U = torch.linalg.eigh(gram)
    return lam.clamp_min(0), U


def candidate_ed_scores(
    H: torch.Tensor,
    candidates: torch.Tensor,
    eps: float = 0.01,
    *,
    nodes: int = 64,
    chunk: int = 512,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Effective dimension of ``[H; h_c]`` for every candidate row ``h_c``, and its tie-breaker.

    NORTH-Select and NORTH-Pre (§6.2.2) keep the candidates that, each added alone to the layer,
    give the highest phi_ED, breaking ties by the sum of singular values. Doing one SVD per
    candidate costs ``C (M+1)^2 n``; here the layer's Gram matrix ``H H^T / N = U diag(l) U^T``
    is decomposed once and each candidate only needs ``c = U^T H h / N`` and ``d = |h|^2 / N``:

    * the augmented Gram matrix is ``[[diag(l), c], [c^T, d]]`` in that basis, so by the
      inertia additivity of the Schur complement the number of its eigenvalues above
      ``t = eps^2`` is ``#{l_i > t} + [d - t - sum_i c_i^2 / (l_i - t) > 0]``;
    * the increase of the sum of singular values is ``(2/pi) int_0^inf F(s) ds`` with
      ``F(s) = 1 - s^2 (1 + sum_i c_i^2 / (l_i + s^2)^2) / (d + s^2 - sum_i c_i^2 / (l_i + s^2))``
      (from ``sqrt(x) = (2/pi) int x / (x + s^2) ds`` and the trace of the bordered inverse),
      integrated by the trapezoidal rule in ``log s`` (exponentially accurate: the integrand is
      analytic in a strip of width pi/2 around the real ``log s`` axis).

    Args:
        H: ``(M, N)`` activations of the existing units (one row per unit).
        candidates: ``(C, N)`` activations of the candidates on the same columns.
        eps: threshold of eq. 27.
        nodes: quadrature nodes for the tie-breaker.

    Returns:
        ``(ed, nuclear_gain)``: two ``(C,)`` float64 tensors, the phi_ED of each augmented layer
        (in ``[0, 1]``) and the increase of the sum of singular values of ``[H; h_c] / sqrt(N)``.
    """
    H = _as_matrix(H)
    candidates = _as_matrix(candidates, "candidates")
    if candidates.shape[1] != H.shape[1]:
        raise ValueError(f"candidates have {candidates.shape[1]} columns, H has {H.shape[1]}")
    M, N = H.shape
    lam, U = _eigh_gram(H)
    t = eps**2
    base = int((lam > t).sum())
    Hd = H.double()
    scale = math.sqrt(max(float(lam.max()), 1e-300))
    eds, gains = [], []
    for start in range(0, candidates.shape[0], chunk):
        C = candidates[start : start + chunk].double()
        c = (C @ Hd.T / N) @ U  # (B, M): coordinates of H h / N in the eigenbasis
        c2 = c * c
        d = (C * C).sum(1) / N
        gap = lam - t
        safe = torch.where(gap.abs() < 1e-300, torch.full_like(gap, 1e-300), gap)
        schur = d - t - (c2 / safe).sum(1)
        eds.append((base + (schur > 0).double()) / (M + 1))
        top = max(scale, float(d.max().sqrt()) if d.numel() else scale, 1e-150)
        xs = torch.linspace(math.log(top * 1e-9), math.log(top * 1e6), nodes, dtype=torch.float64)
        h = float(xs[1] - xs[0])
        s2 = torch.exp(2 * xs).to(lam.device)  # (nodes,)
        inv = 1.0 / (lam[None, :] + s2[:, None])  # (nodes, M)
        sch = d[:, None] + s2[None, :] - c2 @ inv.T  # (B, nodes)
        num = 1 + c2 @ (inv * inv).T
        # F lies in [0, 1]; rounding can break that where sch ~ 0 (a candidate in the span of
        # H at the tiniest nodes, whose weight ~ s is negligible): clamp.
        f = torch.nan_to_num(1 - s2[None, :] * num / sch, nan=0.0, posinf=1.0, neginf=0.0)
        f = f.clamp(0.0, 1.0)
        w = torch.exp(xs).to(lam.device) * h
        w[0] *= 0.5
        w[-1] *= 0.5
        first = f[:, 0]
        # the integral below the first node (0 <= F <= 1 there) and above the last (F ~ d / s^2)
        total = f @ w + math.exp(float(xs[0])) * first + d / math.exp(float(xs[-1]))
        gains.append(2 / math.pi * total)
    return torch.cat(eds), torch.cat(gains)


def candidate_og_scores(H: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """phi_OG (eq. 29) of ``[H; B_c]`` for each candidate block ``B_c``.

    Args:
        H: ``(R, n)`` features x samples of the existing layer (:func:`sample_matrix`).
        candidates: ``(C, r, n)`` blocks of ``r`` feature rows per candidate (``r = 1`` for a
            dense neuron, ``H W`` for a channel), or ``(C, n)`` for single rows.

    Returns:
        ``(C,)`` float64 tensor of phi_OG values, using ``||[H;B][H;B]^T||_F^2 = ||H H^T||_F^2 +
        2 ||H B^T||_F^2 + ||B B^T||_F^2``.
    """
    H = _as_matrix(H).double()
    B = torch.as_tensor(candidates).double()
    if B.dim() == 2:
        B = B.unsqueeze(1)
    if B.dim() != 3 or B.shape[2] != H.shape[1]:
        raise ValueError(f"candidates must be (C, r, {H.shape[1]}), got {tuple(B.shape)}")
    n = H.shape[1]
    hh = H @ H.T if H.shape[0] <= n else H.T @ H
    base_sq = float((hh * hh).sum())
    fro_h = float((H * H).sum())
    cross = torch.einsum("crn,mn->crm", B, H)
    cross_sq = (cross * cross).sum((1, 2))
    bb = B @ B.transpose(1, 2)
    self_sq = (bb * bb).sum((1, 2))
    fro = fro_h + (B * B).sum((1, 2))
    gap2 = (base_sq + 2 * cross_sq + self_sq) / fro.clamp_min(1e-300) ** 2 - 1.0 / n
    return 1 - gap2.clamp_min(0).sqrt()
