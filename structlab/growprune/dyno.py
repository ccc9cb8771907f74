"""DYNO: Algorithm 5 of the thesis (§7.1-7.2) as a training callback.

Every ``every`` iterations (50 in §7.3), for each hidden layer ``l`` in forward order:

1. ``k = TRIG_PRUNE(f, l)`` (eq. 38); if ``k > 0`` remove the units chosen by SELECT_PRUNE
   (:func:`~structlab.growprune.selection.select_prune`) with
   :func:`structlab.operators.remove_units`;
2. ``k = TRIG_GROW(f, l)`` (eq. 39) on the layer as it now is; if ``k > 0`` add ``k`` units with
   INIT_GROW (NORTH-Select, :func:`~structlab.growprune.selection.init_grow`) through
   :func:`structlab.operators.add_units` (zero fan-out: the function is unchanged);

and the gradient steps of :func:`structlab.training.fit` run in between. The optimizer follows
every change (surviving units keep their Adam moments, new units start at zero).

After a change of layer ``l``, ``phi*`` of that layer is reset to phi_ED of the changed layer
(the kept rows of ``H``, or ``H`` with the new units' activations: both exact, as the remaining
units' post-activations do not change). A pruned layer changes what later layers compute, and a
grown one the inputs of the layer reading it: their buffers are refilled (one forward pass of the
input FIFO) before they are measured or grown. Only forward-pass activations are used: no
gradients, no masks.

Where ``phi*`` starts is not said by the equations: it is "the value at the last structural
change", and a pretrained network's last change is before fine-tuning. With ``initial_phi=1.0``
(the default) every layer starts from a full effective rank, what the authors' code assumes for
its ImageNet source (``threshold_score = 1.0`` in ``k8lion/DYNO``, ``src/transfer.py``): the first
evaluation then prunes every layer down to the dimensions the target data really uses, the
"immediately large architectural changes" of §7.3. With ``initial_phi=None`` each layer's
``phi*`` is its first measurement on the target data instead (as soon as the input FIFO holds
enough samples), so only changes *during* fine-tuning trigger.

Two readings of how phi_ED is measured (:data:`~structlab.growprune.triggers.SCALINGS`):
``scaling="samples"`` is eq. 37, the singular values of ``H / sqrt(n)``; ``scaling="width"``
is the authors' code, NeurOps' ``effective_rank`` with its default ``1 / sqrt(M)`` scaling on at
most ``3 M`` sampled columns. And two of where ``phi*`` is measured after a change:
``baseline_data="buffer"`` (at once, on the training buffer the trigger read) or
``"validation"`` (the authors' code: at the start of the next cycle, on ``validation`` inputs
through the changed network).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
from torch import nn

from structlab.growprune.buffers import DynamicBuffers
from structlab.growprune.selection import init_grow, is_relu_layer, select_prune
from structlab.growprune.triggers import SCALINGS, GrowPruneTrigger, phi_from_gram, phi_of
from structlab.models.slots import LayerSlot
from structlab.neurogenesis.buffers import unit_gram
from structlab.operators.units import add_units, remove_units
from structlab.training import Callback, TrainState

__all__ = ["DYNO"]


class DYNO(Callback):
    """Grow and prune neurons while fine-tuning (Algorithm 5 with the DYNO strategies).

    Args:
        every: evaluate the triggers every ``every`` iterations (50 in §7.3).
        delta: trigger threshold of eqs. 38-39 (3e-2).
        eps: effective-dimension threshold of eq. 37 (1e-2).
        candidates_per_unit: INIT_GROW candidates per unit to add (100, §7.3).
        buffer_ratio, min_samples: buffer sizes (:class:`DynamicBuffers`).
        layers: names of the slots to grow and prune (default: every hidden layer).
        min_width: units a layer keeps at least.
        max_width: optional cap on every layer's width (the thesis uses none).
        initial_phi: every layer's ``phi*`` before fine-tuning (1.0: full rank, as the authors'
            code); ``None``: the first measurement on the target data.
        seed: seed of the INIT_GROW candidates.
        scaling: ``"samples"`` (eq. 37) or ``"width"`` (the authors' code), see the module
            docstring.
        baseline_data: ``"buffer"`` or ``"validation"`` (needs ``validation``): where ``phi*``
            is measured after a change.
        validation: inputs ``phi*`` is measured on when ``baseline_data="validation"``.

    After training, ``history.extra`` holds ``dyno_widths`` (per evaluation: ``step`` and each
    layer's width), ``dyno_events`` (``step``, ``layer``, ``pruned``, ``grown``, ``dormant``,
    ``phi``), ``dyno_phi_star`` (per evaluation: each layer's baseline) and ``dyno_time``
    (seconds spent in the callback).
    """

    def __init__(
        self,
        *,
        every: int = 50,
        delta: float = 3e-2,
        eps: float = 1e-2,
        candidates_per_unit: int = 100,
        buffer_ratio: float = 2.0,
        min_samples: int = 64,
        layers: Sequence[str] | None = None,
        min_width: int = 1,
        max_width: int | None = None,
        initial_phi: float | None = 1.0,
        seed: int = 0,
        scaling: str = "samples",
        baseline_data: str = "buffer",
        validation: torch.Tensor | None = None,
    ) -> None:
        if scaling not in SCALINGS:
            raise ValueError(f"scaling must be one of {SCALINGS}, got {scaling!r}")
        if baseline_data not in ("buffer", "validation"):
            raise ValueError(f"baseline_data must be buffer or validation, got {baseline_data!r}")
        if baseline_data == "validation" and validation is None:
            raise ValueError("baseline_data='validation' needs validation inputs")
        self.scaling, self.baseline_data, self.validation = scaling, baseline_data, validation
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        if candidates_per_unit < 1:
            raise ValueError("candidates_per_unit must be positive")
        self.every = every
        self.trigger = GrowPruneTrigger(delta, eps)
        self.eps = eps
        self.candidates_per_unit = candidates_per_unit
        self.buffer_ratio, self.min_samples = buffer_ratio, min_samples
        self.layer_names = None if layers is None else list(layers)
        self.min_width, self.max_width = max(1, int(min_width)), max_width
        if initial_phi is not None and not 0 < initial_phi <= 1:
            raise ValueError(f"initial_phi must be in (0, 1] or None, got {initial_phi}")
        self.initial_phi = initial_phi
        self.seed = seed
        self.buffers: DynamicBuffers | None = None
        self.events: list[dict] = []
        self.width_log: list[dict] = []
        self.phi_log: list[dict] = []
        self.time = 0.0

    # ------------------------------------------------------------------ setup
    def slots(self, model: nn.Module) -> list[LayerSlot]:
        """The layers DYNO acts on, in forward order."""
        slots = model.layer_slots()
        if self.layer_names is None:
            return slots
        by_name = {s.name: s for s in slots}
        return [by_name[n] for n in self.layer_names]

    def on_train_begin(self, state: TrainState) -> None:
        self.generator = torch.Generator().manual_seed(self.seed)
        slots = self.slots(state.model)
        if self.initial_phi is not None:
            for s in slots:
                if not self.trigger.has_baseline(s.name):
                    self.trigger.reset(s.name, self.initial_phi)
        self.buffers = DynamicBuffers(
            state.model, slots, ratio=self.buffer_ratio, min_samples=self.min_samples
        )
        self._log(state)

    def on_train_end(self, state: TrainState) -> None:
        if self.buffers is not None:
            self.buffers.remove()
        h = state.history
        h.extra["dyno_widths"] = self.width_log
        h.extra["dyno_events"] = self.events
        h.extra["dyno_phi_star"] = self.phi_log
        h.extra["dyno_time"] = [self.time]

    def _log(self, state: TrainState) -> None:
        self.width_log.append(
            {"step": state.step, **{s.name: s.width for s in self.slots(state.model)}}
        )

    # ------------------------------------------------------------------ steps
    def on_step_end(self, state: TrainState) -> None:
        t0 = time.perf_counter()
        self.buffers.observe(state.inputs)
        slots = self.slots(state.model)
        missing = [s for s in slots if not self.trigger.has_baseline(s.name)]
        if state.step % self.every == 0:
            self.grow_and_prune(state)
        elif missing and self.buffers.available() >= self.buffers.capacity:
            self.buffers.refill()  # phi* of the pre-trained network on the target data
            for s in missing:
                if self.buffers.ready(s):
                    self.trigger.reset(s.name, self._phi(s))
        self.time += time.perf_counter() - t0

    def _phi(self, slot: LayerSlot) -> float:
        buf = self.buffers[slot.name]
        if self.scaling == "samples":
            return phi_from_gram(buf.gram(), buf.columns, self.eps)
        return self._phi_acts(buf.H)

    def _phi_acts(self, acts: torch.Tensor) -> float:
        """phi_ED of activations ``(n, M[, h, w])`` with this DYNO's scaling."""
        return phi_of(acts, self.eps, scaling=self.scaling, generator=self.generator)

    @torch.no_grad()
    def _validation_baselines(self, state: TrainState, names: set[str]) -> None:
        """``phi*`` of the layers ``names`` on the validation inputs through the current
        network (the authors' code: the start of the cycle after a change)."""
        slots = [s for s in self.slots(state.model) if s.name in names]
        if not slots:
            return
        x = self.validation.to(next(state.model.parameters()).device)
        val = DynamicBuffers(state.model, slots, ratio=1.0, min_samples=int(x.shape[0]))
        try:
            val.observe(x)
            val.refill()
            for s in slots:
                self.trigger.reset(s.name, self._phi_acts(val[s.name].H))
        finally:
            val.remove()

    @torch.no_grad()
    def grow_and_prune(self, state: TrainState) -> None:
        """One pass of Algorithm 5's loop over the hidden layers."""
        model, buffers = state.model, self.buffers
        slots = self.slots(model)
        buffers.refill()
        h_stale: set[str] = set()  # later layers whose activations changed (a pruned layer)
        x_stale: set[str] = set()  # layers whose inputs changed (a grown layer)
        changed: set[str] = set()
        for i, slot in enumerate(slots):
            name = slot.name
            if name in h_stale:
                buffers.refill()
                h_stale.clear()
                x_stale.clear()
            if not buffers.ready(slot):
                continue
            buf = buffers[name]
            gram, cols = buf.gram(), buf.columns
            phi = self._phi(slot)
            if not self.trigger.has_baseline(name):
                self.trigger.reset(name, phi)
                continue
            H, X = buf.H, buf.X
            event = {"step": state.step, "layer": name, "pruned": 0, "grown": 0, "dormant": 0,
                     "phi": phi}
            k_prune = min(self.trigger.prune_count(name, phi, slot.width),
                          slot.width - self.min_width)
            if k_prune > 0:
                idx = select_prune(gram, k_prune, dormant_first=is_relu_layer(slot),
                                   min_keep=self.min_width)
                dormant = int((torch.diagonal(gram)[idx.to(gram.device)] <= 0).sum())
                keep = torch.ones(slot.width, dtype=torch.bool)
                keep[idx] = False
                keep_idx = torch.nonzero(keep).reshape(-1).to(gram.device)
                remove_units(model, slot, idx, optimizer=state.optimizer)
                gram = gram.index_select(0, keep_idx).index_select(1, keep_idx)
                H = H.index_select(1, keep_idx.to(H.device))
                phi = (phi_from_gram(gram, cols, self.eps) if self.scaling == "samples"
                       else self._phi_acts(H))
                self.trigger.reset(name, phi)
                event.update(pruned=int(idx.numel()), dormant=dormant)
                h_stale.update(s.name for s in slots[i + 1 :])
            k_grow = self.trigger.grow_count(name, phi, slot.width)
            if self.max_width is not None:
                k_grow = min(k_grow, self.max_width - slot.width)
            if k_grow > 0:
                if name in x_stale:
                    buffers.refill()
                    h_stale.clear()
                    x_stale.clear()
                    buf = buffers[name]
                    H, X = buf.H, buf.X
                fan_in, acts = init_grow(
                    slot, X, H, k_grow, generator=self.generator,
                    candidates=self.candidates_per_unit * k_grow, eps=self.eps,
                )
                add_units(model, slot, k_grow, fan_in=fan_in, fan_out="zeros",
                          optimizer=state.optimizer)
                full = torch.cat([H, acts.to(H)], dim=1)
                phi = (phi_from_gram(unit_gram(full), cols, self.eps)
                       if self.scaling == "samples" else self._phi_acts(full))
                self.trigger.reset(name, phi)
                event["grown"] = k_grow
                readers = {id(c.module) for c in slot.consumers}
                x_stale.update(s.name for s in slots if id(s.producers[0]) in readers)
            if event["pruned"] or event["grown"]:
                event["phi"] = phi
                self.events.append(event)
                changed.add(name)
        if changed and self.baseline_data == "validation":
            self._validation_baselines(state, changed)
        self._log(state)
        self.phi_log.append({"step": state.step, **self.trigger.phi_star})
