"""Activation buffers for the orthogonality triggers (thesis §6.2.1, Table 8 "Buffer size").

The effective dimension of eq. 27 is the numerical rank of a layer's post-activation matrix
``H`` (units x samples) and needs more samples than units (``n > M``). One mini-batch is often
smaller than the layer (batch 128, width up to 512 in the toy setting), so each layer keeps a
first-in-first-out buffer of its most recent activations.

:class:`ActivationBuffer` is one such FIFO (``X``: the inputs of the layer's producer,
``H``: the post-activations). :class:`LayerBuffers` attaches forward hooks to the producer and the
activation module of every measured slot and pushes what they see into the FIFOs.

Two ways of filling them, as in the authors' implementation:

* ``refresh=True`` (default; what the reference code does on a CPU): the model's recent *inputs*
  are kept in a FIFO of ``size`` samples and, at every trigger evaluation, the buffers are refilled
  by one no-grad forward pass of these inputs through the current network in evaluation mode. The
  activations are always those of the current weights and widths, and a residual network can be
  measured with its shortcuts switched off (§6.2.3).
* ``refresh=False``: the hooks record the training forward passes themselves (no extra forward;
  the activations are up to ``size / batch`` steps stale). A layer that grows, or whose input
  grows, has its buffer emptied and refilled by the next steps.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from structlab.models.slots import LayerSlot

__all__ = ["ActivationBuffer", "InputBuffer", "LayerBuffers"]


class ActivationBuffer:
    """FIFO of the last ``size`` samples of a layer: producer inputs ``X`` and activations ``H``.

    Both are stored sample-major, as the modules see them: ``X`` is ``(n, in)`` or
    ``(n, C_in, H, W)``, ``H`` is ``(n, M)`` or ``(n, M, H, W)``.
    """

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"buffer size must be positive, got {size}")
        self.size = size
        self.X: torch.Tensor | None = None
        self.H: torch.Tensor | None = None

    def __len__(self) -> int:
        return 0 if self.H is None else int(self.H.shape[0])

    @property
    def full(self) -> bool:
        return len(self) >= self.size

    def clear(self) -> None:
        self.X, self.H = None, None

    @torch.no_grad()
    def push(self, X: torch.Tensor | None, H: torch.Tensor) -> None:
        """Append a batch (detached); drop the oldest samples beyond ``size``. A batch whose
        shape disagrees with the stored one (the layer grew) restarts the buffer."""
        H = H.detach()
        X = None if X is None else X.detach()
        if self.H is not None and (
            self.H.shape[1:] != H.shape[1:]
            or (X is not None and self.X is not None and self.X.shape[1:] != X.shape[1:])
        ):
            self.clear()
        self.H = H[-self.size :] if self.H is None else torch.cat([self.H, H])[-self.size :]
        if X is not None:
            self.X = X[-self.size :] if self.X is None else torch.cat([self.X, X])[-self.size :]


class InputBuffer:
    """FIFO of the network's last ``size`` inputs (the samples the triggers are measured on)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.data: torch.Tensor | None = None

    def __len__(self) -> int:
        return 0 if self.data is None else int(self.data.shape[0])

    @torch.no_grad()
    def push(self, x: torch.Tensor) -> None:
        x = x.detach()
        self.data = (
            x[-self.size :] if self.data is None else torch.cat([self.data, x])[-self.size :]
        )


class LayerBuffers:
    """Forward hooks filling one :class:`ActivationBuffer` per measured slot.

    Args:
        model: the network.
        slots: the measured slots (their ``producers[0]`` input and ``activation`` output are
            recorded).
        size: samples per buffer (Table 8: 1024 toy MLP, 1568 MNIST MLP, 128 CNNs).
        refresh: see the module docstring.
    """

    def __init__(
        self, model: nn.Module, slots: Sequence[LayerSlot], size: int, *, refresh: bool = True
    ) -> None:
        self.model = model
        self.size = size
        self.refresh = refresh
        self.names = [s.name for s in slots]
        self.buffers = {s.name: ActivationBuffer(size) for s in slots}
        self.inputs = InputBuffer(size)
        self.recording = not refresh
        self._pending: dict[str, torch.Tensor] = {}
        self._handles: list = []
        for s in slots:
            if s.activation is None:
                raise ValueError(f"slot {s.name} has no activation module to hook")
            self._handles.append(s.producers[0].register_forward_pre_hook(self._pre(s.name)))
            self._handles.append(s.activation.register_forward_hook(self._post(s.name)))

    def _pre(self, name: str):
        def hook(module, args):
            if self.recording:
                self._pending[name] = args[0]

        return hook

    def _post(self, name: str):
        def hook(module, args, output):
            if self.recording and (self.refresh or module.training):
                self.buffers[name].push(self._pending.pop(name, None), output)

        return hook

    def observe(self, inputs: torch.Tensor) -> None:
        """Record a training batch of network inputs (for ``refresh`` mode)."""
        if self.refresh:
            self.inputs.push(inputs)

    @torch.no_grad()
    def update(self, chunk: int = 4096) -> None:
        """``refresh`` mode: refill every layer buffer from the input FIFO with the current
        network (evaluation mode; a WideResNet's shortcuts are switched off while measuring)."""
        if not self.refresh or self.inputs.data is None:
            return
        for b in self.buffers.values():
            b.clear()
        was_training = self.model.training
        residual = getattr(self.model, "residual_enabled", None)
        self.model.eval()
        if residual is not None:
            self.model.residual_enabled = False
        self.recording = True
        try:
            for start in range(0, len(self.inputs), chunk):
                self.model(self.inputs.data[start : start + chunk])
        finally:
            self.recording = False
            self._pending.clear()
            if residual is not None:
                self.model.residual_enabled = residual
            self.model.train(was_training)

    def invalidate(self, names: Sequence[str] | None = None) -> None:
        """Empty the buffers ``names`` (all by default), e.g. after growth in streaming mode."""
        for name in self.names if names is None else names:
            self.buffers[name].clear()

    def __getitem__(self, name: str) -> ActivationBuffer:
        return self.buffers[name]

    def remove(self) -> None:
        """Detach the hooks."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
