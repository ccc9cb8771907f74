"""The first-order DARTS / DARTS-PRIME search loop (thesis §5.1-5.3, Algorithm 3).

The supernet holds two kinds of parameters: the operators' weights ``w`` and the architecture
weights ``alpha`` (one ``[E, P]`` tensor per cell type: edges x operators). The bilevel problem
(eq. 17) is approximated to first order:

1. **w-step** on a training batch: ``G = grad_w L_train(w, alpha)``, clip ``||G||`` to
   ``grad_clip``, SGD with momentum (Algorithm 3, lines 3-4).
2. The **schedule** (:mod:`structlab.darts.schedules`) sees the FIMT sample ``tr(G G^T)``
   (eq. 18) and decides whether an alpha step follows: always (DARTS), every ``r``-th w-step
   (CS10) or when the averaged FIMT drops below an adaptive threshold (FIMT, lines 5-10).
3. **alpha-step** on the next validation batch (drawn cyclically): ``L_val`` plus the
   regulariser (:mod:`structlab.darts.regularizers`: proximity, eq. 20, with ``c`` the fraction
   of the search done; or ADMM, eq. 21), backward into the alphas only, Adam (line 7). ADMM
   then counts the step and refreshes ``z``, ``u`` every ``admm_every`` alpha steps
   (eqs. 23, 25). With CRB activation (§5.2.5) every operator whose raw alpha became
   non-positive is pruned (``model.prune_nonpositive()``).

At the end the activated weights are projected onto the discrete set ``S`` (eqs. 13-16) and the
genotype is read off. :class:`SearchResult` keeps the traces a chapter needs: FIMT, its average
and the threshold per w-step (Fig. 20), which w-steps were followed by an alpha step, snapshots
of the activated weights (Fig. 18), pruning events and the final edge entropy
(:func:`edge_entropy`, lower = closer to discrete).

Choices, with the authors' code (https://github.com/k8lion/DARTS-PRIME,
``src/train_scheduled_hard_statebn.py``) as reference:

* The FIMT sample is computed from the **unclipped** gradient, before ``clip_grad_norm_`` (the
  authors' ``model.track_FI()`` also runs before clipping): it should measure what the gradient
  says about the landscape; after clipping it would saturate at ``grad_clip^2`` whenever the
  gradient is large, exactly when the schedule must hold alpha steps back.
* Learning rates are cosine-annealed per epoch (DARTS: ``CosineAnnealingLR(T_max=epochs)``):
  w from 0.025 to 0.001, alpha (``alpha_cosine``) from 3e-4 to ``alpha_lr_min``.
* **CRB**: with ``model.activation == "crb"`` the alpha learning-rate annealing and the alpha
  weight decay are switched off automatically (§5.3.2: "both turned off"); the result's
  ``notes`` and ``config`` say so.
* The alpha loss is evaluated in training mode (batch-norm batch statistics), as in DARTS.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from structlab.darts.regularizers import ADMM, linear_ramp, proximity_penalty
from structlab.darts.schedules import (
    SCHEDULES,
    FIMTSchedule,
    Schedule,
    fisher_trace,
    make_schedule,
)
from structlab.reproducibility import get_device, seed_everything

__all__ = [
    "REGULARIZERS",
    "ImageTask",
    "SearchConfig",
    "SearchResult",
    "edge_entropy",
    "search",
]

REGULARIZERS = ("none", "proximity", "admm")


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


class ImageTask:
    """Search task for image classification: cross-entropy of ``model(x)`` against ``y``.

    ``loss(model, batch, stream)`` takes a batch ``(x, y)`` with ``x`` ``[B, C, H, W]`` and
    ``y`` ``[B]`` (class indices), moves it to the model's device and returns the scalar mean
    loss. ``stream`` (``"train"`` or ``"val"``) is not needed for images (the language task
    keeps one hidden state per stream).
    """

    def loss(self, model: nn.Module, batch: Any, stream: str) -> torch.Tensor:
        if stream not in ("train", "val"):
            raise ValueError(f"stream must be 'train' or 'val', got {stream!r}")
        x, y = batch[0], batch[1]
        device = _model_device(model)
        return F.cross_entropy(model(x.to(device)), y.to(device))


@dataclass
class SearchConfig:
    """Hyperparameters of the search; defaults are DARTS's first-order search (Liu et al. 2019)
    with the DARTS-PRIME values of §5.3.2 for its parts (switched off by default:
    ``schedule="alternate"``, ``regularizer="none"``). :meth:`darts_prime` gives the full method.

    Attributes:
        w_lr, w_momentum, w_weight_decay: SGD on ``w`` (0.025, 0.9, 3e-4).
        w_lr_min: end of the per-epoch cosine annealing of the w learning rate (0.001).
        grad_clip: max norm of the w-gradient (5).
        alpha_lr, alpha_betas, alpha_weight_decay: Adam on the alphas (3e-4, (0.5, 0.999), 1e-3).
        alpha_cosine: cosine-anneal the alpha learning rate per epoch to ``alpha_lr_min``
            (on, as DARTS-PRIME; switched off with CRB together with the alpha weight decay).
        alpha_lr_min: end of the alpha annealing (0).
        schedule: ``"alternate"`` (DARTS), ``"constant"`` (CS``r``) or ``"fimt"``.
        r: w-steps per alpha step of CS``r`` / expected ratio of FIMT (10).
        h0, h_i, fimt_lambda: FIMT's initial threshold, increasing factor, EMA weight
            (1.0, 1.05, 0.2).
        regularizer: ``"none"``, ``"proximity"`` (eq. 20) or ``"admm"`` (eq. 21).
        rho_p: proximity weight (0.1 for images, 1.0 for text).
        admm_rho, admm_lambda_u, admm_every: ADMM's ``rho_a``, ``lambda_u`` and the alpha steps
            between ``z``/``u`` updates (0.1, 0.8, 10).
        record_every: w-steps between snapshots of the activated weights.
    """

    w_lr: float = 0.025
    w_momentum: float = 0.9
    w_weight_decay: float = 3e-4
    w_lr_min: float = 0.001
    grad_clip: float = 5.0
    alpha_lr: float = 3e-4
    alpha_betas: tuple[float, float] = (0.5, 0.999)
    alpha_weight_decay: float = 1e-3
    alpha_cosine: bool = True
    alpha_lr_min: float = 0.0
    schedule: str = "alternate"
    r: float = 10
    h0: float = 1.0
    h_i: float = 1.05
    fimt_lambda: float = 0.2
    regularizer: str = "none"
    rho_p: float = 0.1
    admm_rho: float = 0.1
    admm_lambda_u: float = 0.8
    admm_every: int = 10
    record_every: int = 50

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; "
                             f"expected one of {', '.join(SCHEDULES)}")
        if self.regularizer not in REGULARIZERS:
            raise ValueError(f"unknown regularizer {self.regularizer!r}; "
                             f"expected one of {', '.join(REGULARIZERS)}")
        for name in ("w_lr", "alpha_lr", "grad_clip"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        for name in ("w_lr_min", "alpha_lr_min", "w_weight_decay", "alpha_weight_decay",
                     "w_momentum", "rho_p", "admm_rho"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be non-negative, got {getattr(self, name)!r}")
        if isinstance(self.record_every, bool) or not isinstance(self.record_every, int) \
                or self.record_every < 1:
            raise ValueError(f"record_every must be a positive integer, got {self.record_every!r}")
        self.alpha_betas = (float(self.alpha_betas[0]), float(self.alpha_betas[1]))
        # builds (and so validates) the schedule and the ADMM parameters
        self.make_schedule()
        if self.regularizer == "admm":
            ADMM(self.admm_rho, self.admm_lambda_u, self.admm_every)

    @classmethod
    def darts_prime(cls, *, text: bool = False, **overrides: Any) -> SearchConfig:
        """DARTS-PRIME (Algorithm 3): FIMT schedule and proximity regularisation with
        ``rho_p = 0.1`` (images) or ``1.0`` (``text=True``); ``overrides`` replace any field."""
        values: dict[str, Any] = {"schedule": "fimt", "regularizer": "proximity",
                                  "rho_p": 1.0 if text else 0.1}
        values.update(overrides)
        return cls(**values)

    def make_schedule(self) -> Schedule:
        """The schedule object this configuration describes."""
        return make_schedule(self.schedule, self.r, h0=self.h0, h_i=self.h_i, lam=self.fimt_lambda)

    def for_activation(self, activation: str) -> tuple[SearchConfig, list[str]]:
        """The configuration actually used with a model of this activation, and notes on what
        changed: with ``"crb"`` the alpha cosine annealing and alpha weight decay are off."""
        if activation not in ("softmax", "crb"):
            raise ValueError(f"model.activation must be 'softmax' or 'crb', got {activation!r}")
        notes: list[str] = []
        if activation != "crb":
            return self, notes
        changes: dict[str, Any] = {}
        if self.alpha_cosine:
            changes["alpha_cosine"] = False
        if self.alpha_weight_decay != 0:
            changes["alpha_weight_decay"] = 0.0
        if changes:
            notes.append("CRB activation: alpha learning-rate cosine annealing and alpha weight "
                         "decay switched off (thesis §5.3.2)")
        return dataclasses.replace(self, **changes), notes


@dataclass
class SearchResult:
    """Everything :func:`search` records; plain tensors (CPU), lists and floats, so
    ``torch.save`` works. Index conventions: per-w-step lists have one entry per w-step (index
    ``t = 0 .. n_w_steps - 1``); ``alpha_steps`` holds the indices ``t`` of the w-steps after
    which an alpha step was taken (so ``fimt_ema[alpha_steps]`` are the averages that triggered
    them); ``snapshot_steps`` counts completed w-steps (0 = before the search).

    Attributes:
        primitives, activation: from the model.
        config: the effective :class:`SearchConfig` as a dict; notes: what was changed
            automatically (CRB).
        fimt_samples: FIMT sample ``tr(G G^T)`` per w-step (eq. 18, unclipped gradient).
        fimt_ema, thresholds: ``F_n`` (eq. 19) and the threshold ``h`` it was compared with per
            w-step (FIMT schedule; NaN otherwise).
        losses: training loss per w-step; epochs_of_step: epoch of each w-step.
        alpha_steps: see above; val_losses, penalties, ramp: validation loss, regulariser value
            and ``c`` per alpha step.
        snapshot_steps, snapshots: activated weights every ``record_every`` w-steps and at the
            end, one ``[S, E, P]`` tensor per alpha tensor.
        alphas, weights, projection: final raw alphas, activated weights, ``Pi_S(weights)``.
        genotype: ``model.genotype()`` at the end.
        pruned: CRB pruning events ``(w-step t, alpha index, edge, op)``.
        admm_update_steps: w-step indices after which ADMM refreshed ``z`` and ``u``.
        n_w_steps, n_alpha_steps, epochs, wall_time: counts, epochs run and seconds.
        final_entropy: :func:`edge_entropy` of the final activated weights.
        schedule_state: the schedule's ``state_dict()`` at the end.
    """

    primitives: list[str]
    activation: str
    config: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    fimt_samples: list[float] = field(default_factory=list)
    fimt_ema: list[float] = field(default_factory=list)
    thresholds: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    epochs_of_step: list[int] = field(default_factory=list)
    alpha_steps: list[int] = field(default_factory=list)
    val_losses: list[float] = field(default_factory=list)
    penalties: list[float] = field(default_factory=list)
    ramp: list[float] = field(default_factory=list)
    snapshot_steps: list[int] = field(default_factory=list)
    snapshots: list[torch.Tensor] = field(default_factory=list)
    alphas: list[torch.Tensor] = field(default_factory=list)
    weights: list[torch.Tensor] = field(default_factory=list)
    projection: list[torch.Tensor] = field(default_factory=list)
    genotype: Any = None
    pruned: list[tuple[int, int, int, int]] = field(default_factory=list)
    admm_update_steps: list[int] = field(default_factory=list)
    n_w_steps: int = 0
    n_alpha_steps: int = 0
    epochs: int = 0
    wall_time: float = 0.0
    final_entropy: float = math.nan
    schedule_state: dict[str, Any] = field(default_factory=dict)


def edge_entropy(weights: torch.Tensor | Sequence[torch.Tensor]) -> float:
    """Mean over edges of the entropy (nats) of each edge's normalised activated weights.

    Each row (edge) ``w_e`` of every ``[E, P]`` tensor is normalised to ``p = w_e / sum(w_e)``
    over its non-pruned operators (pruned ones are exactly 0 and contribute ``0 log 0 = 0``);
    ``H_e = -sum_p p log p`` lies in ``[0, ln P]``, 0 for a one-hot edge. Edges whose weights are
    all zero are skipped; NaN if none is left. Lower = more discrete.
    """
    tensors = [weights] if isinstance(weights, torch.Tensor) else list(weights)
    if not tensors:
        raise ValueError("no weight tensors given")
    rows = torch.cat([t.detach().double().cpu().reshape(-1, t.shape[-1]) for t in tensors])
    if bool((rows < 0).any()):
        raise ValueError("activated weights must be non-negative")
    total = rows.sum(-1)
    keep = total > 0
    if not bool(keep.any()):
        return math.nan
    p = rows[keep] / total[keep, None]
    h = -torch.special.xlogy(p, p).sum(-1)
    return float(h.mean())


def _cycle(batches: Iterable[Any]) -> Iterator[Any]:
    while True:
        empty = True
        for b in batches:
            empty = False
            yield b
        if empty:
            raise ValueError("val_batches is empty")


def _count(batches: Iterable[Any]) -> int:
    try:
        return len(batches)  # type: ignore[arg-type]
    except TypeError:
        return sum(1 for _ in batches)


def _cpu(ts: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return [t.detach().cpu().clone() for t in ts]


def search(
    model: nn.Module,
    task: Any,
    train_batches: Iterable[Any],
    val_batches: Iterable[Any],
    config: SearchConfig | None = None,
    *,
    epochs: int,
    device: str | torch.device = "auto",
    seed: int | None = None,
    progress: bool = True,
    callback: Callable[[dict[str, Any]], bool | None] | None = None,
) -> SearchResult:
    """Run a first-order DARTS / DARTS-PRIME search (Algorithm 3) and record it.

    Args:
        model: a supernet following the protocol of ``structlab.darts`` (``activation``,
            ``primitives``, ``arch_parameters()``, ``weight_parameters()``,
            ``activated_weights()``, ``project()``, ``genotype()``, ``prune_nonpositive()``);
            moved to ``device``.
        task: ``task.loss(model, batch, stream)`` with ``stream`` ``"train"`` (w-steps) or
            ``"val"`` (alpha steps), e.g. :class:`ImageTask`.
        train_batches: re-iterable batches for the w-steps (a ``DataLoader`` or a list); one
            epoch = one pass.
        val_batches: re-iterable batches for the alpha steps, drawn cyclically, one per alpha
            step.
        config: hyperparameters (default :class:`SearchConfig`; adjusted for CRB, see
            :meth:`SearchConfig.for_activation`).
        epochs: passes over ``train_batches`` (the cosine annealing and ``c`` span them).
        device: where the model, batches and optimisers live (``"auto"``: CUDA if present).
        seed: seeds Python, NumPy and torch when given.
        progress: show a tqdm bar over the w-steps.
        callback: called after every w-step (and its alpha step, if any) with a dict ``step``,
            ``epoch``, ``loss``, ``fimt``, ``fimt_ema``, ``threshold``, ``alpha_step``,
            ``val_loss``, ``penalty``, ``c``, ``model``; returning True stops the search.

    Returns:
        A :class:`SearchResult`.

    Raises:
        ValueError: bad arguments, empty batches, or a non-finite training gradient (the
            schedule rejects a NaN/inf FIMT sample: the search has diverged).

    The optimisers are built once: parameters that a CRB supernet deletes with a pruned
    operation simply get no gradient any more and are left alone by SGD.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    config = config if config is not None else SearchConfig()
    if seed is not None:
        seed_everything(seed, deterministic=False)
    dev = get_device(device)
    model.to(dev)
    activation = str(model.activation)
    cfg, notes = config.for_activation(activation)
    crb = activation == "crb"

    steps_per_epoch = _count(train_batches)
    if steps_per_epoch == 0:
        raise ValueError("train_batches is empty")
    total_steps = epochs * steps_per_epoch

    w_params = [p for p in model.weight_parameters() if p.requires_grad]
    a_params = list(model.arch_parameters())
    if not w_params or not a_params:
        raise ValueError("the model has no weight parameters or no architecture parameters")
    w_opt = torch.optim.SGD(w_params, lr=cfg.w_lr, momentum=cfg.w_momentum,
                            weight_decay=cfg.w_weight_decay)
    a_opt = torch.optim.Adam(a_params, lr=cfg.alpha_lr, betas=cfg.alpha_betas,
                             weight_decay=cfg.alpha_weight_decay)
    w_sched = torch.optim.lr_scheduler.CosineAnnealingLR(w_opt, T_max=epochs, eta_min=cfg.w_lr_min)
    a_sched = (torch.optim.lr_scheduler.CosineAnnealingLR(a_opt, T_max=epochs,
                                                          eta_min=cfg.alpha_lr_min)
               if cfg.alpha_cosine else None)
    schedule = cfg.make_schedule()
    is_fimt = isinstance(schedule, FIMTSchedule)
    admm: ADMM | None = None
    if cfg.regularizer == "admm":
        admm = ADMM(cfg.admm_rho, cfg.admm_lambda_u, cfg.admm_every)
        admm.initialize([w.detach() for w in model.activated_weights()], model.project)

    result = SearchResult(primitives=list(model.primitives), activation=activation,
                          config=dataclasses.asdict(cfg), notes=notes)
    snaps: list[list[torch.Tensor]] = [[] for _ in a_params]

    def snapshot(step: int) -> None:
        with torch.no_grad():
            for k, w in enumerate(model.activated_weights()):
                snaps[k].append(w.detach().cpu().clone())
        result.snapshot_steps.append(step)

    val_iter = _cycle(val_batches)
    bar = tqdm(total=total_steps, disable=not progress, desc="search", leave=False)
    for note in notes:
        if progress:
            bar.write(note)
    start = time.perf_counter()
    snapshot(0)
    t = 0
    stop = False
    model.train()
    for epoch in range(epochs):
        for batch in train_batches:
            # --- w-step (Algorithm 3, lines 3-4)
            w_opt.zero_grad(set_to_none=True)
            loss = task.loss(model, batch, "train")
            loss.backward(inputs=w_params)
            fimt = fisher_trace(w_params)  # eq. 18, before clipping
            nn.utils.clip_grad_norm_(w_params, cfg.grad_clip)
            w_opt.step()
            take = schedule.step(fimt)  # lines 5-10
            result.fimt_samples.append(fimt)
            result.fimt_ema.append(schedule.fimt if is_fimt else math.nan)
            result.thresholds.append(schedule.last_threshold if is_fimt else math.nan)
            result.losses.append(float(loss.detach()))
            result.epochs_of_step.append(epoch)
            c = linear_ramp(t + 1, total_steps)
            val_loss = penalty_value = math.nan
            # --- alpha-step (line 7)
            if take:
                vbatch = next(val_iter)
                a_opt.zero_grad(set_to_none=True)
                vloss = task.loss(model, vbatch, "val")
                objective = vloss
                if cfg.regularizer == "proximity":
                    weights = model.activated_weights()
                    with torch.no_grad():
                        proj = model.project([w.detach() for w in weights])
                    pen = proximity_penalty(weights, proj, c, cfg.rho_p)
                    objective = objective + pen
                elif admm is not None:
                    pen = admm.penalty(model.activated_weights())
                    objective = objective + pen
                else:
                    pen = vloss.new_zeros(())
                objective.backward(inputs=a_params)
                a_opt.step()
                # backward(inputs=a_params) leaves no w-gradient; clear any a custom task left
                w_opt.zero_grad(set_to_none=True)
                val_loss, penalty_value = float(vloss.detach()), float(pen.detach())
                result.alpha_steps.append(t)
                result.val_losses.append(val_loss)
                result.penalties.append(penalty_value)
                result.ramp.append(c)
                if admm is not None:
                    with torch.no_grad():
                        current = [w.detach() for w in model.activated_weights()]
                    if admm.after_alpha_step(current, model.project):
                        result.admm_update_steps.append(t)
                if crb:
                    for a_idx, edge, op in model.prune_nonpositive():
                        result.pruned.append((t, int(a_idx), int(edge), int(op)))
            t += 1
            if t % cfg.record_every == 0:
                snapshot(t)
            bar.update(1)
            if t % 10 == 0 or t == total_steps:
                bar.set_postfix(loss=f"{result.losses[-1]:.3f}", alpha=schedule.n_alpha_steps)
            if callback is not None:
                info = {"step": t - 1, "epoch": epoch, "loss": result.losses[-1], "fimt": fimt,
                        "fimt_ema": result.fimt_ema[-1], "threshold": result.thresholds[-1],
                        "alpha_step": take, "val_loss": val_loss, "penalty": penalty_value,
                        "c": c, "model": model}
                if callback(info):
                    stop = True
                    break
        w_sched.step()
        if a_sched is not None:
            with warnings.catch_warnings():  # an epoch without alpha steps still ends (FIMT)
                warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
                a_sched.step()
        result.epochs = epoch + 1
        if stop:
            break
    bar.close()
    result.wall_time = time.perf_counter() - start
    if not result.snapshot_steps or result.snapshot_steps[-1] != t:
        snapshot(t)
    result.snapshots = [torch.stack(s) for s in snaps]

    with torch.no_grad():
        weights = [w.detach() for w in model.activated_weights()]
        result.weights = _cpu(weights)
        result.projection = _cpu(model.project(weights))
    result.alphas = _cpu(a_params)
    result.genotype = model.genotype()
    result.n_w_steps = t
    result.n_alpha_steps = len(result.alpha_steps)
    result.final_entropy = edge_entropy(result.weights)
    result.schedule_state = schedule.state_dict()
    return result
