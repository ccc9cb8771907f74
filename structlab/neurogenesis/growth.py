"""The neurogenesis framework (thesis Algorithm 4, Table 7) as a training callback.

After every ``every``-th gradient step, for each growable group of units ``l``:
``k = min(TRIGGER(f, l), max_width - width)``; if ``k > 0``, add ``k`` units initialized by
INITIALIZATION(f, l) with :func:`structlab.operators.add_units` (the optimizer follows). Groups
are processed in forward order and the information a group's trigger needs (buffers, auxiliary
gradients) is recomputed when an earlier group has grown in the same step, as the sequential loop
of Algorithm 4 implies.

A *group* is a list of slot names that grow together: usually one slot; for a WideResNet the
block slots and the residual stream of a group (:func:`wrn_groups`), measured on the first one.
The other members of a group receive random fan-in at their layer's norm and zero fan-out, which
keeps the network's function.

The seven strategies of Table 7 are selected by name; a :class:`PresetSchedule` replaces the
trigger by a fixed schedule (Linear, or Batched with 8 events, in the first 75 % of training)
to compare initializations alone.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from structlab.models.slots import LayerSlot
from structlab.neurogenesis.buffers import LayerBuffers
from structlab.neurogenesis.initializations import INITIALIZATIONS, InitContext, rescale_rows
from structlab.neurogenesis.triggers import (
    ActivationTrigger,
    GradientRecorder,
    GradientTrigger,
    WeightTrigger,
    auxiliary_gradients,
)
from structlab.operators.units import add_units
from structlab.training import Callback, TrainState

__all__ = ["STRATEGIES", "Neurogenesis", "PresetSchedule", "wrn_groups", "gradmax_capacity"]

#: Table 7: strategy -> (trigger, initialization).
STRATEGIES: dict[str, tuple[str, str]] = {
    "north-select": ("activation", "select"),
    "north-pre": ("activation", "pre"),
    "north-random": ("activation", "random"),
    "north-weight": ("weight", "weight"),
    "gradmax": ("gradient", "gradmax"),
    "firefly": ("gradient", "firefly"),
    "nest": ("gradient", "nest"),
}


@dataclass
class PresetSchedule:
    """A fixed growth schedule from the initial widths to ``final`` widths (§6.3.3).

    ``kind="linear"``: the target width rises linearly with the step over the first
    ``fraction`` of training (many small growth events, one unit at a time when there are more
    steps than units to add); ``kind="batched"``: ``events`` equal additions at regular
    intervals of that period (the first one after ``1/events`` of it).
    """

    final: int | Sequence[int] | Mapping[str, int]
    kind: str = "linear"
    events: int = 8
    fraction: float = 0.75

    def __post_init__(self) -> None:
        if self.kind not in ("linear", "batched"):
            raise ValueError(f"schedule kind must be 'linear' or 'batched', got {self.kind!r}")

    def target(self, initial: int, final: int, step: int, total: int) -> int:
        """Width the schedule asks for after ``step`` of ``total`` steps."""
        span = max(1.0, self.fraction * total)
        progress = min(1.0, step / span)
        if self.kind == "linear":
            return initial + int(math.floor((final - initial) * progress + 1e-9))
        stage = min(self.events, int(math.floor(self.events * progress + 1e-9)))
        return initial + (final - initial) * stage // self.events


def wrn_groups(model: nn.Module) -> list[list[str]]:
    """Groups of a :class:`~structlab.models.WideResNet` that grow together (§6.3.4): for each
    residual group ``g`` its block slots ``group{g}.block{b}`` then its stream ``group{g}``
    (which includes the stem when the group starts with an identity shortcut). The first
    member, the inner width of the group's first block, is measured."""
    names = [s.name for s in model.layer_slots()]
    groups = []
    g = 0
    while f"group{g}" in names:
        blocks = [n for n in names if n.startswith(f"group{g}.block")]
        groups.append(blocks + [f"group{g}"])
        g += 1
    if not groups:
        raise ValueError("not a WideResNet: no slot named group0")
    return groups


def gradmax_capacity(slot: LayerSlot) -> int:
    """``min(P, Q)``: how many independent fan-outs GradMax can give (§6.2.2), the number of
    singular values of the auxiliary gradient ``(P, Q)``: ``min(M_{l+1}, M_{l-1})`` for a dense
    layer, ``min(C_{l+1} k_{l+1}^2, C_{l-1} k_l^2)`` for a convolution (``P`` is the number of
    fan-out entries of one unit, ``Q`` of its fan-in)."""
    cons = slot.consumers[0].module
    prod = slot.producers[0]
    w_in = getattr(prod, "weight_orig", prod.weight)
    w_out = getattr(cons, "weight_orig", cons.weight)
    return min(int(w_out.numel() // slot.width), int(math.prod(w_in.shape[1:])))


class Neurogenesis(Callback):
    """Algorithm 4 run by :func:`structlab.training.fit` after every ``every``-th step.

    Args:
        strategy: a name of :data:`STRATEGIES` (``north-select``, ``north-pre``, ``north-random``,
            ``north-weight``, ``gradmax``, ``firefly``, ``nest``); with ``schedule`` only its
            initialization is used.
        max_width: maximum width of every group (int), per group (list) or by first slot name.
        schedule: a :class:`PresetSchedule` instead of the strategy's trigger.
        every: evaluate the triggers every ``every`` steps (1 in the thesis).
        gamma_a, gamma_w: thresholds of eq. 28 and 31 (Table 8: 0.97 and 0.99).
        metric: ``"ed"`` (phi_ED) or ``"og"`` (phi_OG) for the activation trigger and selection.
        eps: threshold of eq. 27 and 30.
        buffer_size: samples in the activation buffers (Table 8: 1024 / 1568 / 128).
        candidates: candidates per growth event (default 1000 dense, 100 conv; plus ``k``).
        running_max: eq. 35 (default: for convolutional slots).
        grad_scale: ``scale`` of :class:`~structlab.neurogenesis.triggers.GradientTrigger`.
        firefly_eps, nest_quantile: settings of Firefly and NeST (§6.2.2).
        refresh: ``False`` (default): the triggers reuse the training pass, the activation
            buffers recording its activations (:mod:`structlab.neurogenesis.buffers`) and the
            gradient triggers its gradients (:class:`GradientRecorder`), with an extra pass
            only after a growth event; ``True``: every evaluation refills the buffers with a
            forward pass at the current weights and runs an extra forward/backward pass for
            the auxiliary gradients (the authors' code; results differ by the staleness of the
            recorded activations, at most ``buffer_size / batch`` steps). ``None``: streaming,
            except for a model whose shortcuts are switched off while measuring (a WideResNet,
            §6.2.3), whose training pass is not what the triggers measure.
        groups: slot names growing together (default: every slot alone, or
            :func:`wrn_groups` for a model with ``residual_enabled``).
        seed: seed of the candidates and random weights.
        loss_fn: loss for the auxiliary gradients (default cross-entropy).

    After training, ``history.extra`` holds ``widths`` (one dict per evaluation: ``step`` and the
    width of each group), ``events`` (step, group, units added), ``trigger_time`` and
    ``init_time`` (seconds spent deciding and initializing).
    """

    def __init__(
        self,
        strategy: str,
        *,
        max_width: int | Sequence[int] | Mapping[str, int],
        schedule: PresetSchedule | None = None,
        every: int = 1,
        gamma_a: float = 0.97,
        gamma_w: float = 0.99,
        metric: str = "ed",
        eps: float = 0.01,
        buffer_size: int = 1024,
        candidates: int | None = None,
        running_max: bool | None = None,
        grad_scale: float = 1.0,
        firefly_eps: float = 1e-4,
        nest_quantile: float = 0.4,
        refresh: bool | None = None,
        groups: Sequence[Sequence[str]] | None = None,
        seed: int = 0,
        loss_fn=None,
    ) -> None:
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}; choose from {list(STRATEGIES)}")
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.strategy = strategy
        self.trigger_kind, self.init_name = STRATEGIES[strategy]
        self.max_width = max_width
        self.schedule = schedule
        self.every = every
        self.metric, self.eps = metric, eps
        self.buffer_size = buffer_size
        self.candidates = candidates
        self.running_max = running_max
        self.firefly_eps, self.nest_quantile = firefly_eps, nest_quantile
        self.refresh_setting = refresh
        self.refresh = bool(refresh)
        self.group_names = None if groups is None else [list(g) for g in groups]
        self.seed = seed
        self.loss_fn = loss_fn
        self.act_triggers = {
            False: ActivationTrigger(gamma_a, metric=metric, eps=eps),
            True: ActivationTrigger(gamma_a, metric=metric, eps=eps, running_max=True),
        }
        self.weight_trigger = WeightTrigger(gamma_w, eps=eps)
        self.grad_trigger = GradientTrigger(grad_scale)
        self.buffers: LayerBuffers | None = None
        self.recorder: GradientRecorder | None = None
        self._stale: set[str] = set()
        self._x_stale: set[str] = set()
        self.trigger_time = 0.0
        self.init_time = 0.0
        self.events: list[dict] = []
        self.width_log: list[dict] = []

    # ------------------------------------------------------------------ setup
    def _groups(self, model: nn.Module) -> list[list[LayerSlot]]:
        names = self.group_names
        if names is None:
            if hasattr(model, "residual_enabled"):
                names = wrn_groups(model)
            else:
                names = [[s.name] for s in model.layer_slots()]
        return [[model.slot(n) for n in g] for g in names]

    def _max(self, i: int, group: list[LayerSlot]) -> int:
        m = self.max_width
        if isinstance(m, Mapping):
            return int(m[group[0].name])
        if isinstance(m, int):
            return m
        return int(list(m)[i])

    def _final(self, i: int, group: list[LayerSlot]) -> int:
        f = self.schedule.final
        if isinstance(f, Mapping):
            return int(f[group[0].name])
        if isinstance(f, int):
            return f
        return int(list(f)[i])

    @property
    def needs_buffers(self) -> bool:
        if self.schedule is not None:
            return self.init_name in ("select", "pre")
        return self.trigger_kind == "activation"

    @property
    def needs_gradients(self) -> bool:
        return self.init_name in ("gradmax", "firefly", "nest") or (
            self.schedule is None and self.trigger_kind == "gradient"
        )

    def on_train_begin(self, state: TrainState) -> None:
        model = state.model
        self.generator = torch.Generator().manual_seed(self.seed)
        groups = self._groups(model)
        if self.refresh_setting is None:
            self.refresh = hasattr(model, "residual_enabled")
        self.initial = [g[0].width for g in groups]
        if self.needs_buffers:
            self.buffers = LayerBuffers(
                model, [g[0] for g in groups], self.buffer_size, refresh=self.refresh
            )
        if self.needs_gradients and not self.refresh:
            self.recorder = GradientRecorder([g[0] for g in groups])
            self.recorder.armed = 1 % self.every == 0
        if self.schedule is None and self.trigger_kind == "weight":
            for g in groups:  # the baseline phi_w(f_0, l) at initialization
                self.weight_trigger(g[0].name, g[0].producers[0])
        self._log(state, groups)

    def on_train_end(self, state: TrainState) -> None:
        if self.buffers is not None:
            self.buffers.remove()
        if self.recorder is not None:
            self.recorder.remove()
            self.recorder = None
        h = state.history
        h.extra["widths"] = self.width_log
        h.extra["events"] = self.events
        h.extra["trigger_time"] = [self.trigger_time]
        h.extra["init_time"] = [self.init_time]

    def _log(self, state: TrainState, groups: list[list[LayerSlot]]) -> None:
        self.width_log.append({"step": state.step, **{g[0].name: g[0].width for g in groups}})

    # ------------------------------------------------------------------ step
    def on_step_end(self, state: TrainState) -> None:
        t0 = time.perf_counter()
        if self.buffers is not None:
            self.buffers.observe(state.inputs)
        evaluate = state.step % self.every == 0
        recorded = None
        if self.recorder is not None:
            if evaluate and self.recorder.complete:
                recorded = self.recorder
            self.recorder.armed = (state.step + 1) % self.every == 0
        self.trigger_time += time.perf_counter() - t0
        if not evaluate:
            if self.recorder is not None:
                self.recorder.clear()
            return
        model = state.model
        groups = self._groups(model)
        # what the triggers read. A buffer is refilled (one forward pass over the input FIFO)
        # before a count when it is stale: in refresh mode every buffer at every evaluation and
        # after every growth event (the authors' code); in streaming mode the buffers already
        # hold this step's activations, and only a growth event makes one stale: the grown
        # layer's own buffer, and the producer inputs X of the layer reading it before an
        # initialization uses X (a function-preserving growth leaves every other activation as
        # it was). The training pass's gradients serve the gradient triggers until a growth
        # event changes the network.
        if self.buffers is not None and self.refresh:
            self._stale.update(self.buffers.names)
        aux = None
        for i, group in enumerate(groups):
            t1 = time.perf_counter()
            slot = group[0]
            if self.buffers is not None and self._needs_refill(slot.name):
                self._refill()
            if aux is None and self.needs_gradients:
                dense = [g[0] for g in groups]
                if recorded is not None:
                    aux = recorded.aux(dense)
                else:
                    aux = auxiliary_gradients(
                        model, dense, state.inputs, state.targets, self.loss_fn
                    )
            k = self.count(i, group, state, aux)
            k = max(0, min(k, self._max(i, group) - slot.width))
            if self.init_name == "gradmax":
                k = min(k, gradmax_capacity(slot))
            t2 = time.perf_counter()
            self.trigger_time += t2 - t1
            if k > 0:
                if self.init_name in ("select", "pre") and slot.name in self._x_stale:
                    self._refill()  # the initialization reads X, which has grown
                self.grow(state, group, k, aux)
                self.events.append({"step": state.step, "layer": slot.name, "added": k})
                aux, recorded = None, None
                if self.buffers is not None:
                    self._mark_stale(groups, group)
            self.init_time += time.perf_counter() - t2
        if self.recorder is not None:
            self.recorder.clear()
        self._log(state, groups)

    def _mark_stale(self, groups: list[list[LayerSlot]], grown: list[LayerSlot]) -> None:
        """After the group ``grown`` grew: its buffer is stale, and so are the inputs ``X`` of
        the measured slots whose producer reads one of its slots (in refresh mode: every
        buffer)."""
        if self.refresh:
            self._stale.update(self.buffers.names)
            return
        self._stale.add(grown[0].name)
        readers = {id(c.module) for s in grown for c in s.consumers}
        for g in groups:
            if id(g[0].producers[0]) in readers:
                self._x_stale.add(g[0].name)

    def _refill(self) -> None:
        self.buffers.update()
        self._stale.clear()
        self._x_stale.clear()

    def _needs_refill(self, name: str) -> bool:
        """Whether the buffer ``name`` must be refilled before its count: it is stale, or it
        restarted after growth (streaming) while the input FIFO is full."""
        if name in self._stale:
            return True
        return len(self.buffers[name]) < self.buffer_size <= len(self.buffers.inputs)

    def count(self, i: int, group: list[LayerSlot], state: TrainState, aux) -> int:
        """The trigger's count for group ``i`` (or the schedule's), before clipping."""
        slot = group[0]
        if self.schedule is not None:
            target = self.schedule.target(
                self.initial[i], self._final(i, group), state.step, state.total_steps
            )
            return target - slot.width
        if self.trigger_kind == "activation":
            buf = self.buffers[slot.name]
            if len(buf) < self.buffer_size:
                return 0
            if self.metric == "ed" and slot.kind == "dense" and len(buf) <= slot.width:
                return 0  # eq. 27 needs n > M
            running = slot.kind == "conv" if self.running_max is None else self.running_max
            return self.act_triggers[running](slot.name, buf)
        if self.trigger_kind == "weight":
            return self.weight_trigger(slot.name, slot.producers[0])
        return self.grad_trigger(slot.name, aux[slot.name])

    @torch.no_grad()
    def grow(self, state: TrainState, group: list[LayerSlot], k: int, aux=None) -> None:
        """Add ``k`` units to every slot of ``group`` with the strategy's initialization."""
        slot = group[0]
        buf = self.buffers[slot.name] if self.buffers is not None else None
        ctx = InitContext(
            slot=slot,
            generator=self.generator,
            X=None if buf is None else buf.X,
            H=None if buf is None else buf.H,
            aux=None if aux is None else aux.get(slot.name),
            candidates=self.candidates,
            metric=self.metric,
            eps=self.eps,
            firefly_eps=self.firefly_eps,
            nest_quantile=self.nest_quantile,
        )
        new = INITIALIZATIONS[self.init_name](ctx, k)
        bias = None if new.bias is None else new.bias
        fan_out = "zeros" if new.fan_out is None else new.fan_out
        add_units(
            state.model,
            slot,
            k,
            fan_in=new.fan_in,
            fan_out=fan_out,
            bias=bias,
            optimizer=state.optimizer,
        )
        if new.after is not None:
            new.after()
        for other in group[1:]:
            fan_in = []
            for prod in other.producers:
                w = getattr(prod, "weight_orig", prod.weight)
                r = torch.rand((k, *w.shape[1:]), generator=self.generator) * 2 - 1
                norm = float(w.detach().reshape(w.shape[0], -1).norm(dim=1).mean())
                fan_in.append(rescale_rows(r.to(w), norm))
            add_units(
                state.model, other, k, fan_in=fan_in, fan_out="zeros", optimizer=state.optimizer
            )
