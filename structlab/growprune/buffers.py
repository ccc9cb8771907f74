"""Per-layer FIFO activation buffers sized to the layer (thesis §7.3).

"All metrics are evaluated on post-activations, which are tracked for each layer in a FIFO buffer
that is dynamically sized to contain more samples than neurons, as necessary for the effective
dimensionality calculation" (eq. 37 needs more columns than units). :class:`DynamicBuffers`
keeps a FIFO of the most recent training inputs and, on :meth:`DynamicBuffers.refill`, runs one
no-grad forward pass of them through the current network in evaluation mode; forward hooks on
each layer's producer and activation store the producer inputs ``X`` and post-activations ``H``
in a :class:`structlab.neurogenesis.ActivationBuffer` (the FIFO of chapter 6, whose Gram matrix
``H H^T`` the triggers read) of the layer's own size:

``n_l = max(min_samples, floor(ratio * M_l / s_l) + 1)`` samples,

with ``M_l`` the current width and ``s_l`` the spatial positions of one sample's map
(``H_l W_l`` for a convolution, 1 for a dense layer), so the unit matrix ``M_l x (n_l s_l)`` has
more than ``ratio * M_l`` columns. The sizes follow the widths as layers grow and shrink. Only
forward passes are used: no gradients, no masks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from structlab.models.slots import LayerSlot
from structlab.neurogenesis.buffers import ActivationBuffer, InputBuffer

__all__ = ["DynamicBuffers"]


class DynamicBuffers:
    """Input FIFO and one dynamically sized :class:`ActivationBuffer` per measured layer.

    Args:
        model: the network (hooks are attached to the slots' modules).
        slots: the measured layers.
        ratio: columns per unit the buffers hold at least (``> ratio * M``; 1 is the thesis's
            bare "more samples than neurons").
        min_samples: samples per buffer at least.
        chunk: samples per forward pass while refilling.
    """

    def __init__(
        self,
        model: nn.Module,
        slots: Sequence[LayerSlot],
        *,
        ratio: float = 2.0,
        min_samples: int = 64,
        chunk: int = 256,
    ) -> None:
        if ratio < 1:
            raise ValueError(f"ratio must be >= 1 (more columns than units), got {ratio}")
        if min_samples < 1 or chunk < 1:
            raise ValueError("min_samples and chunk must be positive")
        self.model = model
        self.names = [s.name for s in slots]
        self._slots = {s.name: s for s in slots}
        self.ratio, self.min_samples, self.chunk = ratio, min_samples, chunk
        self.spatial: dict[str, int] = {}
        self.buffers: dict[str, ActivationBuffer] = {}
        self.inputs: InputBuffer | None = None
        self._recording = False
        self._pending: dict[str, torch.Tensor] = {}
        self._handles = []
        for s in slots:
            if s.activation is None:
                raise ValueError(f"slot {s.name} has no activation module to hook")
            self._handles.append(s.producers[0].register_forward_pre_hook(self._pre(s.name)))
            self._handles.append(s.activation.register_forward_hook(self._post(s.name)))

    # ----------------------------------------------------------------- hooks
    def _pre(self, name: str):
        def hook(module, args):
            if self._recording:
                self._pending[name] = args[0]

        return hook

    def _post(self, name: str):
        def hook(module, args, output):
            if not self._recording:
                return
            if name not in self.spatial:
                self.spatial[name] = int(output[0, 0].numel())
            buf = self.buffers.get(name)
            if buf is not None:
                buf.push(self._pending.pop(name, None), output)

        return hook

    # ----------------------------------------------------------------- sizes
    def samples_needed(self, slot: LayerSlot) -> int:
        """``n_l`` for the slot's current width (see the module docstring)."""
        s = self.spatial.get(slot.name, 1)
        return max(self.min_samples, int(math.floor(self.ratio * slot.width / s)) + 1)

    @property
    def capacity(self) -> int:
        """Samples the input FIFO keeps: the largest ``n_l``."""
        return max(self.samples_needed(s) for s in self._slots.values())

    # ----------------------------------------------------------------- data
    @torch.no_grad()
    def observe(self, inputs: torch.Tensor) -> None:
        """Record a batch of training inputs (the first one also measures each layer's map
        size with a one-sample forward pass)."""
        if not self.spatial:
            self._forward(inputs[:1], keep=False)
        cap = self.capacity
        if self.inputs is None or self.inputs.size != cap:
            old = None if self.inputs is None else self.inputs.data
            self.inputs = InputBuffer(cap)
            if old is not None:
                self.inputs.push(old)
        self.inputs.push(inputs)

    def available(self) -> int:
        """Samples in the input FIFO."""
        return 0 if self.inputs is None else len(self.inputs)

    def ready(self, slot: LayerSlot) -> bool:
        """Whether the slot's buffer holds ``n_l`` samples of its current width."""
        buf = self.buffers.get(slot.name)
        return buf is not None and buf.units == slot.width and len(buf) >= self.samples_needed(
            slot
        )

    @torch.no_grad()
    def refill(self) -> None:
        """Refill every layer buffer from the input FIFO with the current network (evaluation
        mode, no gradients); each buffer keeps its last ``n_l`` samples."""
        if self.inputs is None or self.inputs.data is None:
            return
        self.buffers = {n: ActivationBuffer(self.samples_needed(s)) for n, s in self._slots.items()}
        self._forward(self.inputs.data, keep=True)

    def _forward(self, data: torch.Tensor, *, keep: bool) -> None:
        saved = self.buffers
        if not keep:
            self.buffers = {}
        was_training = self.model.training
        self.model.eval()
        self._recording = True
        try:
            for start in range(0, data.shape[0], self.chunk):
                self.model(data[start : start + self.chunk])
        finally:
            self._recording = False
            self._pending.clear()
            self.model.train(was_training)
            if not keep:
                self.buffers = saved

    def __getitem__(self, name: str) -> ActivationBuffer:
        return self.buffers[name]

    def remove(self) -> None:
        """Detach the hooks."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
