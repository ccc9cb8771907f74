"""Noisy Heuristics NAS: growth, training until the loss flattens, shrink, layer rules (Fig. 3).

One iteration of :func:`heuristic_search`:

1. **Meta-parameters** are read (:class:`~structlab.heuristics.meta.MetaSource`).
2. **Growth phase** (:func:`grow`): ``P`` neurons are added to the growable connections, 70 % of
   them placed with probability ``p_i ∝ MA(ΔN_i)``, the moving average of each layer's net
   change ``ΔN_i = P_i - M_i`` over past iterations, the rest uniformly at random
   (:func:`allocate_neurons`). New neurons have zero fan-out: the function is unchanged.
3. **Training** until the loss curve flattens (``a < -5``, appendix A,
   :class:`~structlab.heuristics.stopping.FlatteningStop`) or ``max_epochs``.
4. **Shrink phase**: importance ``I = A (1 - B^33)`` of every hidden neuron, ``A = sum_i |sigma_i
   d sigma_i|`` over the data and ``B`` the fraction of positive activations
   (:func:`importance_scores`, :func:`importance_from`); the ``M`` least important neurons
   globally (:func:`select_neurons`) have their outgoing weights decayed to zero over
   ``decay_epochs`` while the others fine-tune (:class:`NeuronDecay`), then they are removed
   (:func:`prune_neurons`).
5. **Layer rules** (:func:`apply_layer_rules`): a residual layer left with at most one neuron is
   removed; a residual layer whose width ``H > (I O^2)^(1/3)`` has its inner connections made
   hierarchical (they get a residual branch and become growable).
6. The model, its metrics and the meta-parameters are **saved** (an
   :class:`~structlab.experiment_store.ExperimentStore` and/or a directory).

Readings where the paper leaves room, closest to its intent and to the authors' code:

* ``MA`` is an exponential moving average over ``ma_window = 5`` iterations (the authors'
  ``beta = (n - 1) / n``); probabilities are ``max(MA_i, 0)`` normalised (uniform when every
  ``MA_i <= 0``); ``placement="softplus"`` uses ``log(1 + exp(MA_i))`` as the authors' code does.
  A connection that loses its branch starts again from ``MA = 0``.
* ``M = ceil(P / add_to_remove_ratio)`` (the authors' code).
* For a convolutional channel, ``A`` sums ``|sum_{h,w} sigma d sigma|`` over images (the
  first-order Taylor estimate of removing the channel for that image, the authors' code) and
  ``B`` counts positions. Scores are computed in evaluation mode with the per-example loss
  gradient (the loss summed over the batch).
* During the decay, the outgoing weights follow ``w0 (1 - t/T)^2`` (the authors' schedule) and
  the fan-in of the chosen neurons is held fixed, so only the other neurons fine-tune.
* "Decreases to near zero (say 1)": a residual layer that the pruning would leave with at most
  ``min_layer_width = 1`` neuron has all its neurons decayed and is removed with them (a layer
  that is narrow without having shrunk, e.g. one created by the growth phase with one neuron,
  is kept). A new hierarchical layer starts with
  ``new_layer_width = 2`` neurons (zero output), so that it survives unless it is pruned; layers
  added in one iteration are thus "susceptible to removal" in the next (the paper). A connection
  whose layer was removed gets no new one in the same step.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from structlab.experiment_store import ExperimentStore, fingerprint, run_experiment
from structlab.heuristics.hrn import (
    HRN,
    add_neurons,
    add_residual,
    load_optimizer_state,
    optimizer_state,
    remove_neurons,
    remove_residual,
    should_add_layer,
)
from structlab.heuristics.meta import MetaParams, MetaSource, Source
from structlab.heuristics.stopping import FlatteningStop
from structlab.metrics import count_parameters
from structlab.reproducibility import get_device
from structlab.results import atomic_write_bytes, atomic_write_json
from structlab.training import Callback, TrainState, evaluate, fit, make_loader

__all__ = [
    "PLACEMENTS",
    "allocate_neurons",
    "placement_probabilities",
    "update_moving_average",
    "grow",
    "importance_from",
    "importance_scores",
    "select_neurons",
    "NeuronDecay",
    "prune_neurons",
    "apply_layer_rules",
    "make_optimizer",
    "heuristic_search",
    "history_frame",
]

#: How the moving averages become placement probabilities.
PLACEMENTS = ("linear", "softplus")


# ---------------------------------------------------------------------- growth phase
def placement_probabilities(
    ma: Sequence[float] | torch.Tensor, placement: str = "linear"
) -> torch.Tensor:
    """``p_i ∝ MA(ΔN_i)``: ``max(MA_i, 0)`` normalised, uniform when no ``MA_i`` is positive
    (``"linear"``), or ``softplus(MA_i)`` normalised (``"softplus"``, the authors' code)."""
    if placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {PLACEMENTS}, got {placement!r}")
    m = torch.as_tensor(ma, dtype=torch.float64).reshape(-1)
    if m.numel() == 0:
        raise ValueError("no layers to place neurons in")
    w = F.softplus(m) if placement == "softplus" else m.clamp(min=0)
    if not float(w.sum()) > 0:
        w = torch.ones_like(m)
    return w / w.sum()


def allocate_neurons(
    n: int,
    ma: Sequence[float] | torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    stat_fraction: float = 0.7,
    placement: str = "linear",
) -> torch.Tensor:
    """How many of ``n`` new neurons go to each layer: ``floor(stat_fraction n)`` drawn with
    :func:`placement_probabilities`, the rest uniformly; returns counts (int64, one per layer)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    if not 0.0 <= stat_fraction <= 1.0:
        raise ValueError(f"stat_fraction must be in [0, 1], got {stat_fraction}")
    p = placement_probabilities(ma, placement)
    k = p.numel()
    n_stat = int(stat_fraction * n + 1e-9)
    counts = torch.zeros(k, dtype=torch.long)
    if n - n_stat:
        counts += torch.bincount(torch.randint(k, (n - n_stat,), generator=generator), minlength=k)
    if n_stat:
        counts += torch.bincount(
            torch.multinomial(p, n_stat, replacement=True, generator=generator), minlength=k
        )
    return counts


def update_moving_average(
    ma: Mapping[str, float],
    delta: Mapping[str, int],
    targets: Sequence[str],
    *,
    window: int = 5,
    reset: Sequence[str] = (),
) -> dict[str, float]:
    """``MA_i <- beta MA_i + (1 - beta) ΔN_i`` with ``beta = (window - 1) / window`` for every
    growth target (new ones start at 0); targets in ``reset`` (their layer was removed) restart
    at 0; targets that no longer exist are dropped."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    beta = (window - 1) / window
    out = {}
    for t in targets:
        if t in reset:
            out[t] = 0.0
        else:
            out[t] = beta * float(ma.get(t, 0.0)) + (1 - beta) * float(delta.get(t, 0))
    return out


def grow(
    model: HRN,
    n: int,
    ma: Mapping[str, float] | None = None,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    generator: torch.Generator | None = None,
    stat_fraction: float = 0.7,
    placement: str = "linear",
) -> dict[str, int]:
    """Growth phase: add ``n`` neurons over ``model.growth_targets()`` (:func:`allocate_neurons`
    with the moving averages ``ma``, 0 for unknown targets); a connection without a branch gets
    one. Returns the neurons added per connection path (only those with some)."""
    targets = model.growth_targets()
    if not targets:
        raise ValueError("the model has no growable connection")
    ma = ma or {}
    counts = allocate_neurons(
        n,
        [ma.get(t, 0.0) for t in targets],
        generator=generator,
        stat_fraction=stat_fraction,
        placement=placement,
    )
    added = {}
    for t, c in zip(targets, counts.tolist()):
        if c:
            add_neurons(model, t, int(c), optimizer=optimizer, generator=generator)
            added[t] = int(c)
    return added


# ---------------------------------------------------------------------- importance
def importance_from(
    activations: torch.Tensor, gradients: torch.Tensor, *, exponent: float | None = 33.0
) -> torch.Tensor:
    """``I = A (1 - B^exponent)`` per unit from activations ``sigma`` and their gradients
    ``d sigma`` over a set of examples: ``(N, units)`` for dense units, ``A = sum_i |sigma_i
    d sigma_i|``, ``B = mean_i 1[sigma_i > 0]``; ``(N, C, H, W)`` for channels, ``A = sum_i
    |sum_{h,w} sigma d sigma|``, ``B`` over images and positions. ``exponent=None`` gives ``A``
    alone (the first-order Taylor score without the firing-rate factor)."""
    a_sum, pos, count = _importance_terms(activations, gradients)
    return _combine(a_sum, pos, count, exponent)


def _combine(a_sum: torch.Tensor, pos: torch.Tensor, count: int,
             exponent: float | None) -> torch.Tensor:
    if exponent is None:
        return a_sum
    return a_sum * (1 - (pos / count) ** exponent)


def _importance_terms(h: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    if h.shape != g.shape:
        raise ValueError(f"activations {tuple(h.shape)} and gradients {tuple(g.shape)} differ")
    h, g = h.detach(), g.detach()
    f64 = torch.float64
    if h.dim() == 2:
        return (h * g).abs().sum(0, dtype=f64), (h > 0).sum(0).to(f64), h.shape[0]
    if h.dim() == 4:
        return (
            (h * g).sum((2, 3), dtype=f64).abs().sum(0),
            (h > 0).sum((0, 2, 3)).to(f64),
            h.shape[0] * h.shape[2] * h.shape[3],
        )
    raise ValueError(f"activations must be (N, units) or (N, C, H, W), got {tuple(h.shape)}")


def _default_loss(
    data: Dataset | DataLoader,
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    dataset = data.dataset if isinstance(data, DataLoader) else data
    target = dataset[0][1]
    is_class = torch.is_tensor(target) and target.dtype == torch.int64
    return F.cross_entropy if is_class else F.mse_loss


def _batches(data: Dataset | DataLoader, batch_size: int, samples: int | None, seed: int):
    if isinstance(data, DataLoader):
        if samples is None:
            yield from data
            return
        data = data.dataset
    index = None
    if samples is not None and samples < len(data):
        index = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:samples]
    if isinstance(data, torch.utils.data.TensorDataset):  # slice the tensors: no per-item work
        x, y = data.tensors[0], data.tensors[1]
        if index is not None:
            x, y = x[index], y[index]
        yield from zip(x.split(batch_size), y.split(batch_size))
        return
    if index is not None:
        data = torch.utils.data.Subset(data, index.tolist())
    yield from make_loader(data, batch_size, shuffle=False)


def importance_scores(
    model: HRN,
    data: Dataset | DataLoader,
    *,
    loss_fn: Callable | None = None,
    device: str | torch.device = "auto",
    batch_size: int = 512,
    samples: int | None = None,
    seed: int = 0,
    exponent: float | None = 33.0,
) -> dict[str, torch.Tensor]:
    """Importance ``I = A (1 - B^33)`` of every hidden neuron of every branch, keyed by branch
    path (float64 on the CPU), over ``data`` (or a seeded subset of ``samples`` examples).

    Activations are read by forward hooks on the branches' activations and their gradients by
    :func:`torch.autograd.grad` of the loss summed over each batch (no parameter gradient is
    computed or touched). The model is evaluated in evaluation mode, its mode restored after.
    ``exponent=None`` returns ``A`` alone.
    """
    device = get_device(device)
    loss_fn = loss_fn or _default_loss(data)
    branches = model.branches()
    if not branches:
        return {}
    sums = {n: None for n, _ in branches}
    captured: dict[str, torch.Tensor] = {}
    handles = []
    for name, res in branches:

        def hook(_m, _i, out, name=name):
            captured[name] = out

        handles.append(res.act.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            for x, y in _batches(data, batch_size, samples, seed):
                x, y = x.to(device), y.to(device)
                captured.clear()
                loss = loss_fn(model(x), y) * len(y)
                names = [n for n in sums if n in captured and captured[n].requires_grad]
                grads = torch.autograd.grad(loss, [captured[n] for n in names], allow_unused=True)
                for n, g in zip(names, grads):
                    h = captured[n]
                    g = torch.zeros_like(h) if g is None else g
                    terms = _importance_terms(h, g)
                    sums[n] = (
                        terms if sums[n] is None else tuple(a + b for a, b in zip(sums[n], terms))
                    )
    finally:
        for hd in handles:
            hd.remove()
        captured.clear()
        model.train(was_training)
    out = {}
    for n, terms in sums.items():
        if terms is None:
            raise ValueError("importance_scores needs at least one batch of data")
        a_sum, pos, count = terms
        out[n] = _combine(a_sum, pos, count, exponent).cpu()
    return out


# ---------------------------------------------------------------------- shrink phase
def select_neurons(
    scores: Mapping[str, torch.Tensor], m: int, *, min_layer_width: int = 1
) -> dict[str, torch.Tensor]:
    """The ``m`` least important neurons over all branches (global ranking, ties by order),
    plus every neuron of a branch whose width this pruning *decreases* to at most
    ``min_layer_width`` (that layer is removed: "decreases to near zero (say 1)"). Returns sorted
    unit indices per branch path (branches with none are omitted)."""
    if isinstance(m, bool) or not isinstance(m, int) or m < 0:
        raise ValueError(f"m must be a non-negative integer, got {m!r}")
    names = list(scores)
    if not names:
        return {}
    sizes = [int(scores[n].numel()) for n in names]
    flat = torch.cat([scores[n].reshape(-1).double().cpu() for n in names])
    chosen = torch.zeros(flat.numel(), dtype=torch.bool)
    if m:
        order = torch.sort(flat, stable=True).indices
        chosen[order[: min(m, flat.numel())]] = True
    out = {}
    for n, part in zip(names, torch.split(chosen, sizes)):
        if part.any() and part.numel() - int(part.sum()) <= min_layer_width:
            part = torch.ones_like(part)
        if part.any():
            out[n] = torch.nonzero(part).reshape(-1)
    return out


class NeuronDecay(Callback):
    """Gradual removal (shrink phase): after every optimizer step of :func:`fit`, the outgoing
    weights of the selected neurons are set to ``w0 (1 - t/T)^power`` (``t`` steps of ``T``)
    and their fan-in (weights, biases, BatchNorm entries) is held at its value, so that the other
    neurons fine-tune while the chosen ones fade out. At ``t = T`` the outgoing weights are zero
    and :func:`prune_neurons` removes the neurons without changing the function.

    ``selection``: unit indices per branch path (:func:`select_neurons`).
    """

    def __init__(
        self, model: HRN, selection: Mapping[str, torch.Tensor], steps: int, *, power: float = 2.0
    ) -> None:
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        self.steps = int(steps)
        self.power = float(power)
        self.t = 0
        self.held: list[tuple[torch.Tensor, int, torch.Tensor, torch.Tensor]] = []
        self.decayed: list[tuple[torch.Tensor, int, torch.Tensor, torch.Tensor]] = []
        slots = {s.name: s for s in model.layer_slots()}
        with torch.no_grad():
            for name, idx in selection.items():
                if name not in slots:
                    raise KeyError(f"no branch {name!r} in the model")
                slot = slots[name]
                tensors = [m.weight for m in slot.producers]
                tensors += [m.bias for m in slot.producers if m.bias is not None]
                tensors += [t for n in slot.norms for t in (n.weight, n.bias) if t is not None]
                for t in tensors:
                    i = idx.to(t.device)
                    self.held.append((t, 0, i, t.index_select(0, i).clone()))
                for c in slot.consumers:
                    w = c.module.weight
                    i = idx.to(w.device)
                    self.decayed.append((w, 1, i, w.index_select(1, i).clone()))

    @property
    def factor(self) -> float:
        return max(0.0, 1.0 - self.t / self.steps) ** self.power

    @torch.no_grad()
    def apply(self) -> None:
        """Hold the fan-in and set the fan-out to ``w0 * factor``."""
        f = self.factor
        for t, dim, i, v in self.held:
            t.index_copy_(dim, i, v)
        for t, dim, i, v in self.decayed:
            t.index_copy_(dim, i, v * f)

    def advance(self) -> None:
        """One step of the schedule."""
        self.t = min(self.t + 1, self.steps)
        self.apply()

    def on_step_end(self, state: TrainState) -> None:
        self.advance()

    def on_train_end(self, state: TrainState) -> None:
        self.t = self.steps
        self.apply()


def _conn_of(branch_path: str) -> str:
    return branch_path[: -len(".residual")]


def prune_neurons(
    model: HRN,
    selection: Mapping[str, torch.Tensor],
    *,
    optimizer: torch.optim.Optimizer | None = None,
) -> tuple[dict[str, int], list[str]]:
    """Remove the selected neurons (indices per branch path); a branch losing all of them is
    removed. Returns neurons removed per connection path (nested branches of a removed branch
    included in their own connection) and the paths of the removed branches."""
    removed: dict[str, int] = {}
    layers: list[str] = []
    for name in sorted(selection, key=lambda p: (p.count("."), p)):
        if not model.has(name):  # inside a branch removed before
            continue
        conn = _conn_of(name)
        if remove_neurons(model, name, selection[name], optimizer=optimizer):
            layers.append(name)
        removed[conn] = removed.get(conn, 0) + int(selection[name].numel())
    return removed, layers


def apply_layer_rules(
    model: HRN,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    generator: torch.Generator | None = None,
    new_layer_width: int = 2,
    min_layer_width: int = 1,
    just_removed: Sequence[str] = (),
    candidates: Sequence[str] | None = None,
) -> dict[str, list[str]]:
    """The layer rules, after the shrink phase.

    1. Remove every residual layer of width ``<= min_layer_width`` (among ``candidates``, the
       branch paths whose width the shrink phase decreased, when given; the search passes them,
       so that a layer that was born narrow and did not shrink is kept).
    2. For every residual layer of width ``H > (I O^2)^(1/3)`` (``I``, ``O``: sizes of the
       connection owning it), make its inner connections ``f_1`` and ``f_2`` hierarchical: they
       become growable and, when ``new_layer_width > 0``, get a residual branch of that width
       whose output is zero (function preserving; not where a layer was just removed, by this
       step or in ``just_removed``, the branches the shrink phase removed). Inner
       connections of layers at or below the threshold that have no branch stop being growable
       (the authors' code).

    Returns ``{"removed": [...], "added": [...]}`` (branch paths).
    """
    if new_layer_width < 0 or min_layer_width < 0:
        raise ValueError("new_layer_width and min_layer_width must be non-negative")
    removed = []
    for name, res in sorted(model.branches(), key=lambda b: (b[0].count("."), b[0])):
        eligible = candidates is None or name in candidates
        if eligible and model.has(name) and res.width <= min_layer_width:
            remove_residual(model, _conn_of(name), optimizer=optimizer)
            removed.append(name)
    added = []
    blocked = set(removed) | set(just_removed)
    for name, res in model.branches():
        owner = model.connection(_conn_of(name))
        fire = should_add_layer(res.width, owner.in_size, owner.out_size)
        for inner_name, inner in ((f"{name}.f1", res.f1), (f"{name}.f2", res.f2)):
            if fire:
                inner.growable = True
                if (
                    inner.residual is None
                    and new_layer_width > 0
                    and f"{inner_name}.residual" not in blocked
                ):
                    add_residual(
                        model, inner_name, new_layer_width, optimizer=optimizer, generator=generator
                    )
                    added.append(f"{inner_name}.residual")
            elif inner.residual is None:
                inner.growable = False
    return {"removed": removed, "added": added}


# ---------------------------------------------------------------------- driver
def make_optimizer(
    model: nn.Module,
    name: str = "adam",
    *,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
) -> torch.optim.Optimizer:
    """Adam (the paper's, appendix C) or SGD with momentum over ``model``'s parameters."""
    if name == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay
        )
    raise ValueError(f"optimizer must be 'adam' or 'sgd', got {name!r}")


def _steps_per_epoch(train: Dataset | DataLoader, batch_size: int) -> int:
    return len(train) if isinstance(train, DataLoader) else math.ceil(len(train) / batch_size)


def _metrics(model, data, device, loss_fn) -> dict[str, float]:
    if data is None:
        return {"loss": float("nan"), "accuracy": float("nan")}
    return evaluate(model, data, device=device, loss_fn=loss_fn)


def _widths(model: HRN) -> dict[str, int]:
    return {n: r.width for n, r in model.branches()}


def _run_iteration(
    model: HRN,
    optimizer: torch.optim.Optimizer,
    train,
    val,
    meta: MetaParams,
    ma: dict[str, float],
    *,
    iteration: int,
    seed: int,
    device,
    batch_size: int,
    loss_fn,
    cfg: dict[str, Any],
) -> dict[str, Any]:
    """One growth-train-shrink-rules iteration; updates ``model``, ``optimizer`` and ``ma``
    in place and returns the iteration's record."""
    times: dict[str, float] = {}
    it_seed = seed * 100_003 + iteration
    torch.manual_seed(it_seed)  # dropout and anything else drawing from the global generator
    gen = torch.Generator().manual_seed(it_seed)
    for g in optimizer.param_groups:
        g["lr"] = meta.learning_rate

    before_growth = _metrics(model, val, device, loss_fn)
    t = time.perf_counter()
    added = grow(
        model,
        meta.neurons_to_add,
        ma,
        optimizer=optimizer,
        generator=gen,
        stat_fraction=cfg["stat_fraction"],
        placement=cfg["placement"],
    )
    times["growth"] = time.perf_counter() - t
    after_growth = _metrics(model, val, device, loss_fn)

    t = time.perf_counter()
    stop = FlatteningStop(meta.max_epochs, threshold=cfg["threshold"], min_epochs=meta.min_epochs)
    hist = fit(
        model,
        train,
        epochs=meta.max_epochs,
        optimizer=optimizer,
        batch_size=batch_size,
        device=device,
        callbacks=[stop],
        loss_fn=loss_fn,
        seed=it_seed,
        quiet=True,
    )
    times["train"] = time.perf_counter() - t
    grown = _metrics(model, val, device, loss_fn)
    params_grown = count_parameters(model)
    hidden_grown = model.hidden_neurons()

    m = meta.neurons_to_prune(sum(added.values()))
    t = time.perf_counter()
    if m > 0 and model.branches():
        scores = importance_scores(
            model,
            train,
            loss_fn=loss_fn,
            device=device,
            batch_size=cfg["importance_batch_size"],
            samples=cfg["importance_samples"],
            seed=it_seed,
        )
    else:
        scores = {n: torch.zeros(r.width, dtype=torch.float64) for n, r in model.branches()}
    times["importance"] = time.perf_counter() - t
    selection = select_neurons(scores, m, min_layer_width=cfg["min_layer_width"])

    t = time.perf_counter()
    decay_hist = None
    if selection and meta.decay_epochs > 0:
        decay = NeuronDecay(
            model, selection, meta.decay_epochs * _steps_per_epoch(train, batch_size)
        )
        decay_hist = fit(
            model,
            train,
            epochs=meta.decay_epochs,
            optimizer=optimizer,
            batch_size=batch_size,
            device=device,
            callbacks=[decay],
            loss_fn=loss_fn,
            seed=it_seed + 1,
            quiet=True,
        )
    times["decay"] = time.perf_counter() - t

    t = time.perf_counter()
    removed, layers_removed = prune_neurons(model, selection, optimizer=optimizer)
    times["prune"] = time.perf_counter() - t
    widths_pruned = _widths(model)
    t = time.perf_counter()
    rules = apply_layer_rules(
        model,
        optimizer=optimizer,
        generator=gen,
        new_layer_width=cfg["new_layer_width"],
        min_layer_width=cfg["min_layer_width"],
        just_removed=layers_removed,
        candidates=list(selection),
    )
    times["rules"] = time.perf_counter() - t
    layers_removed += rules["removed"]
    for name in rules["removed"]:
        removed[_conn_of(name)] = removed.get(_conn_of(name), 0) + widths_pruned.get(name, 0)

    targets = model.growth_targets()
    delta = {k: added.get(k, 0) - removed.get(k, 0) for k in set(added) | set(removed)}
    new_ma = update_moving_average(
        ma, delta, targets, window=cfg["ma_window"], reset=[_conn_of(n) for n in layers_removed]
    )
    ma.clear()
    ma.update(new_ma)

    final = _metrics(model, val, device, loss_fn)
    train_loss = hist.train_loss[-1] if hist.train_loss else float("nan")
    return {
        "iteration": iteration,
        "meta": meta.as_dict(),
        "params": count_parameters(model),
        "params_grown": params_grown,
        "hidden_neurons": model.hidden_neurons(),
        "hidden_neurons_grown": hidden_grown,
        "depth": model.depth,
        "branches": len(model.branches()),
        "widths": _widths(model),
        "added": added,
        "removed": removed,
        "pruned": int(sum(int(v.numel()) for v in selection.values())),
        "layers_added": rules["added"],
        "layers_removed": layers_removed,
        "epochs": stop.epochs,
        "decay_epochs": decay_hist.epochs if decay_hist is not None else 0,
        "stop_reason": stop.reason,
        "flattening_rate": stop.rate,
        "rates": list(stop.rates),
        "train_loss_curve": list(hist.train_loss),
        "train_loss": train_loss,
        "train_accuracy": hist.train_acc[-1] if hist.train_acc else float("nan"),
        "val_loss_before_growth": before_growth["loss"],
        "val_loss_after_growth": after_growth["loss"],
        "val_loss_grown": grown["loss"],
        "val_accuracy_grown": grown["accuracy"],
        "val_loss": final["loss"],
        "val_accuracy": final["accuracy"],
        "moving_average": dict(ma),
        "times": times,
        "architecture": model.describe(),
        "spec": model.spec(),
    }


def _fingerprint_data(data) -> Any:
    if data is None:
        return None
    if isinstance(data, DataLoader):
        return {"loader": fingerprint(data.dataset), "batch_size": data.batch_size}
    return fingerprint(data)


def heuristic_search(
    model: HRN,
    train: Dataset | DataLoader,
    val: Dataset | DataLoader | None = None,
    *,
    meta: Source | MetaSource = None,
    iterations: int = 10,
    device: str | torch.device = "auto",
    seed: int = 0,
    batch_size: int = 128,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    optimizer: str = "adam",
    weight_decay: float = 0.0,
    threshold: float = -5.0,
    importance_samples: int | None = None,
    importance_batch_size: int = 512,
    stat_fraction: float = 0.7,
    placement: str = "linear",
    ma_window: int = 5,
    new_layer_width: int = 2,
    min_layer_width: int = 1,
    store: ExperimentStore | None = None,
    name: str = "heuristic_search",
    save_dir: str | Path | None = None,
    on_iteration: Callable[[dict[str, Any], HRN], None] | None = None,
    quiet: bool = True,
) -> list[dict[str, Any]]:
    """Run Noisy Heuristics NAS on ``model`` (changed in place) for ``iterations`` iterations.

    Args:
        model: an :class:`~structlab.heuristics.hrn.HRN` (moved to ``device``).
        train: training data (a dataset, shuffled with a seed per iteration, or a DataLoader);
            also the data of the importance scores.
        val: data evaluated after the training phase and after the shrink phase.
        meta: meta-parameters: a JSON/YAML file re-read every iteration, a schedule (list of
            dicts, the last repeated), a dict, a callable or a
            :class:`~structlab.heuristics.meta.MetaSource`.
        iterations: growth-train-shrink iterations.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``...; nothing assumes CUDA.
        seed: seeds the growth, the data order and dropout of every iteration.
        loss_fn: default cross-entropy for int64 targets, MSE otherwise.
        optimizer: ``"adam"`` or ``"sgd"`` (momentum 0.9); one optimizer for the whole search,
            whose state follows every morphism.
        threshold: of the stopping rule (``a < -5``).
        importance_samples: examples for the importance scores (default: all of ``train``,
            the paper's ``N``); a seeded subset makes the shrink phase cheaper.
        stat_fraction, placement, ma_window: growth placement (:func:`allocate_neurons`).
        new_layer_width, min_layer_width: layer rules (:func:`apply_layer_rules`).
        store: when given, every iteration is an experiment of the store (name
            ``"<name>-iterNNN"``), keyed by the settings, the initial model, the data and the
            meta-parameters read so far; an interrupted search resumes after the last finished
            iteration. Stored results hold the model snapshot, the optimizer state, the moving
            averages and the record. (With a meta-parameter file, the file is re-read on
            resume: an iteration is read back only while the file still gives the
            meta-parameters it ran with.)
        save_dir: also write ``iteration-NNN.pt`` (snapshot, optimizer state, moving averages,
            record) and ``iteration-NNN.json`` (record) there, and ``history.json``, atomically.
        on_iteration: called with each record and the model after every iteration (live plots;
            a test edits the meta-parameter file here).
        quiet: no progress bar.

    Returns:
        One record (dict of plain values) per iteration: ``params``, ``val_accuracy`` /
        ``val_loss`` (after shrinking) and ``*_grown`` (after training),
        ``val_loss_before_growth`` / ``val_loss_after_growth`` (evaluation mode, around the
        growth phase), ``hidden_neurons``,
        ``depth``, ``widths``, ``added`` / ``removed`` per connection, ``layers_added`` /
        ``layers_removed``, ``epochs`` and ``stop_reason`` of the training phase,
        ``flattening_rate``, ``decay_epochs``, ``meta``, ``times``, ``architecture``
        (:meth:`HRN.describe`) and ``spec`` (:meth:`HRN.spec`, for
        :func:`~structlab.heuristics.figures.plot_architecture`).
    """
    if not isinstance(model, HRN):
        raise ValueError(f"model must be an HRN, got {type(model).__name__}")
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
        raise ValueError(f"iterations must be a non-negative integer, got {iterations!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if importance_samples is not None and importance_samples < 1:
        raise ValueError(f"importance_samples must be positive, got {importance_samples}")
    if placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {PLACEMENTS}, got {placement!r}")
    if not 0.0 <= stat_fraction <= 1.0:
        raise ValueError(f"stat_fraction must be in [0, 1], got {stat_fraction}")
    if ma_window < 1 or new_layer_width < 0 or min_layer_width < 0:
        raise ValueError("ma_window must be >= 1, new/min_layer_width >= 0")
    if optimizer not in ("adam", "sgd"):
        raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
    if not model.growth_targets():
        raise ValueError("the model has no growable connection")
    source = meta if isinstance(meta, MetaSource) else MetaSource(meta)
    device = get_device(device)
    model.to(device)
    loss_fn = loss_fn or _default_loss(train)
    cfg = {
        "threshold": threshold,
        "importance_samples": importance_samples,
        "importance_batch_size": importance_batch_size,
        "stat_fraction": stat_fraction,
        "placement": placement,
        "ma_window": ma_window,
        "new_layer_width": new_layer_width,
        "min_layer_width": min_layer_width,
    }
    opt = make_optimizer(model, optimizer, weight_decay=weight_decay)
    ma: dict[str, float] = {}
    key_base = None
    if store is not None:
        key_base = {
            "settings": {
                **cfg,
                "seed": seed,
                "batch_size": batch_size,
                "optimizer": optimizer,
                "weight_decay": weight_decay,
                "device": device.type,
                "loss_fn": getattr(loss_fn, "__name__", repr(loss_fn)),
            },
            "initial": model.snapshot(),
            "train": _fingerprint_data(train),
            "val": _fingerprint_data(val),
        }
    out_dir = Path(save_dir) if save_dir is not None else None
    history: list[dict[str, Any]] = []
    metas: list[dict[str, Any]] = []
    pending: dict[str, Any] | None = None  # a stored result not loaded into the model yet
    previous: MetaParams | None = None
    bar = tqdm(range(iterations), desc=name, disable=quiet, unit="it")
    for i in bar:
        current = source.read(i, previous)
        previous = current
        metas.append(current.as_dict())
        computed = False

        def compute(i=i, current=current) -> dict[str, Any]:
            nonlocal pending, opt, computed
            if pending is not None:
                opt = _restore(model, pending, optimizer, weight_decay, ma)
                pending = None
            record = _run_iteration(
                model,
                opt,
                train,
                val,
                current,
                ma,
                iteration=i,
                seed=seed,
                device=device,
                batch_size=batch_size,
                loss_fn=loss_fn,
                cfg=cfg,
            )
            computed = True
            return {
                "snapshot": model.snapshot(),
                "optimizer": optimizer_state(model, opt),
                "moving_average": dict(ma),
                "record": record,
            }

        if store is None:
            result = compute()
        else:
            params = {**key_base, "metas": list(metas), "iteration": i}
            result = run_experiment(store, f"{name}-iter{i:03d}", params, compute)
        if not computed:  # read back from the store: load it before computing anything else
            pending = result
        record = result["record"]
        history.append(record)
        if out_dir is not None:
            _save_iteration(out_dir, i, result, history)
        if on_iteration is not None:
            if pending is not None:
                opt = _restore(model, pending, optimizer, weight_decay, ma)
                pending = None
            on_iteration(record, model)
        bar.set_postfix(params=record["params"], acc=f"{record['val_accuracy']:.3f}", refresh=False)
    bar.close()
    if pending is not None:
        _restore(model, pending, optimizer, weight_decay, ma)
    return history


def _restore(
    model: HRN, result: dict[str, Any], optimizer: str, weight_decay: float, ma: dict[str, float]
) -> torch.optim.Optimizer:
    model.load_snapshot(result["snapshot"])
    opt = make_optimizer(model, optimizer, weight_decay=weight_decay)
    load_optimizer_state(model, opt, result["optimizer"])
    ma.clear()
    ma.update(result["moving_average"])
    return opt


def _save_iteration(
    out_dir: Path, i: int, result: dict[str, Any], history: list[dict[str, Any]]
) -> None:
    import io

    buffer = io.BytesIO()
    torch.save(result, buffer)
    atomic_write_bytes(out_dir / f"iteration-{i:03d}.pt", buffer.getvalue())
    atomic_write_json(out_dir / f"iteration-{i:03d}.json", result["record"])
    atomic_write_json(out_dir / "history.json", history)


def history_frame(history: Sequence[Mapping[str, Any]]):
    """One row per iteration with the scalar fields of the records, the meta-parameters
    (``meta_*``) and the cumulative epochs (training + decay) at the end of each iteration."""
    import pandas as pd

    rows = []
    total = 0
    for r in history:
        total += int(r["epochs"]) + int(r["decay_epochs"])
        row = {k: v for k, v in r.items() if isinstance(v, int | float | str) or v is None}
        row.update({f"meta_{k}": v for k, v in r["meta"].items()})
        row["cumulative_epochs"] = total
        row["neurons_added"] = sum(r["added"].values())
        row["neurons_removed"] = sum(r["removed"].values())
        rows.append(row)
    return pd.DataFrame(rows)
