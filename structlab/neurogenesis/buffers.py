"""Activation buffers for the orthogonality triggers (thesis §6.2.1, Table 8 "Buffer size").

The effective dimension of eq. 27 is the numerical rank of a layer's post-activation matrix
``H`` (units x samples) and needs more samples than units (``n > M``). One mini-batch is often
smaller than the layer (batch 128, width up to 512 in the toy setting), so each layer keeps a
first-in-first-out buffer of its most recent activations.

:class:`ActivationBuffer` is one such FIFO (``X``: the inputs of the layer's producer,
``H``: the post-activations). It stores the batches as they arrive and keeps, per batch, its
share of the Gram matrix ``H H^T`` (``M x M``, float64): the Gram matrix of the buffer is the sum
of those of the batches it holds, so a trigger evaluated after every step costs one ``b x M^2``
product for the batch that entered and an ``M x M`` eigenvalue problem, not an SVD of ``M x n``.
:class:`LayerBuffers` attaches forward hooks to the producer and the activation module of every
measured slot and pushes what they see into the FIFOs.

Two ways of filling them:

* ``refresh=False`` (default): the hooks record the training forward passes themselves, so a
  trigger reuses the activations training has already computed (no extra forward; the oldest
  activations in the buffer are ``size / batch`` steps old). After a growth event the buffers
  are refilled once from the input FIFO (:meth:`LayerBuffers.update`), since the layer's
  shape changed.
* ``refresh=True`` (what the authors' reference code does): at every trigger evaluation the
  buffers are refilled by one no-grad forward pass of the recent inputs through the current
  network in evaluation mode. The activations are always those of the current weights, at the
  price of an extra forward pass of ``size`` samples per evaluation.

In both modes a WideResNet is measured with its shortcuts switched off while refilling
(§6.2.3).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from structlab.models.slots import LayerSlot

__all__ = ["ActivationBuffer", "InputBuffer", "LayerBuffers", "unit_gram"]


def unit_gram(acts: torch.Tensor) -> torch.Tensor:
    """``H H^T`` (float64, ``M x M``) of activations ``(n, M)`` or ``(n, M, H, W)``, with ``H``
    the ``(M, n[ H W])`` unit matrix of eq. 27
    (:func:`~structlab.neurogenesis.metrics.unit_matrix`)."""
    a = acts.detach().double()
    if a.dim() > 2:
        a = a.transpose(0, 1).reshape(a.shape[1], -1).T
    return a.T @ a


class _Fifo:
    """The last ``size`` samples of a stream of batches (sample-major), stored as the batches
    arrived; the oldest batch is cut when only part of it still fits."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"buffer size must be positive, got {size}")
        self.size = size
        self.chunks: list[torch.Tensor] = []
        self._cat: torch.Tensor | None = None

    def __len__(self) -> int:
        return sum(int(c.shape[0]) for c in self.chunks)

    def clear(self) -> None:
        self.chunks, self._cat = [], None

    def push(self, batch: torch.Tensor) -> int:
        """Append ``batch``; return how many rows the oldest surviving chunk lost (0: none)."""
        self.chunks.append(batch[-self.size :])
        self._cat = None
        excess = len(self) - self.size
        while excess > 0 and excess >= self.chunks[0].shape[0]:
            excess -= int(self.chunks.pop(0).shape[0])
        if excess > 0:
            self.chunks[0] = self.chunks[0][excess:]
        return excess

    @property
    def data(self) -> torch.Tensor | None:
        if not self.chunks:
            return None
        if self._cat is None:
            self._cat = self.chunks[0] if len(self.chunks) == 1 else torch.cat(self.chunks)
        return self._cat


class ActivationBuffer:
    """FIFO of the last ``size`` samples of a layer: producer inputs ``X`` and activations ``H``.

    Both are stored sample-major, as the modules see them: ``X`` is ``(n, in)`` or
    ``(n, C_in, H, W)``, ``H`` is ``(n, M)`` or ``(n, M, H, W)``. :meth:`gram` is ``H H^T`` of the
    unit matrix, summed from per-batch Gram matrices computed once each, on first use.
    """

    def __init__(self, size: int) -> None:
        self._H = _Fifo(size)
        self._X = _Fifo(size)
        self._grams: list[torch.Tensor | None] = []
        self.size = size

    def __len__(self) -> int:
        return len(self._H)

    @property
    def full(self) -> bool:
        return len(self) >= self.size

    @property
    def H(self) -> torch.Tensor | None:
        return self._H.data

    @property
    def X(self) -> torch.Tensor | None:
        return self._X.data

    def clear(self) -> None:
        self._H.clear()
        self._X.clear()
        self._grams = []

    @torch.no_grad()
    def push(self, X: torch.Tensor | None, H: torch.Tensor) -> None:
        """Append a batch (detached); drop the oldest samples beyond ``size``. A batch whose
        shape disagrees with the stored one (the layer grew) restarts the buffer."""
        H = H.detach()
        X = None if X is None else X.detach()
        old_H, old_X = self._H.chunks, self._X.chunks
        if old_H and (
            old_H[0].shape[1:] != H.shape[1:]
            or (X is not None and old_X and old_X[0].shape[1:] != X.shape[1:])
        ):
            self.clear()
        before = len(self._H.chunks)
        cut = self._H.push(H)
        dropped = before + 1 - len(self._H.chunks)
        self._grams = self._grams[dropped:] + [None]
        if cut:
            self._grams[0] = None  # the oldest batch lost rows: its Gram is recomputed
        if X is not None:
            self._X.push(X)

    def gram(self) -> torch.Tensor:
        """``H H^T`` (float64, ``M x M``) of the buffered activations' unit matrix."""
        if not self._H.chunks:
            raise ValueError("the buffer is empty")
        for i, (g, chunk) in enumerate(zip(self._grams, self._H.chunks)):
            if g is None:
                self._grams[i] = unit_gram(chunk)
        total = self._grams[0].clone()
        for g in self._grams[1:]:
            total += g
        return total

    @property
    def units(self) -> int:
        """``M``: units (neurons or channels) of the buffered layer (0 when empty)."""
        return int(self._H.chunks[0].shape[1]) if self._H.chunks else 0

    @property
    def columns(self) -> int:
        """Columns ``n`` of the unit matrix: samples times spatial positions."""
        H = self._H.chunks
        return 0 if not H else len(self) * int(H[0][0].numel() // H[0].shape[1])


class InputBuffer:
    """FIFO of the network's last ``size`` inputs (the samples the triggers are measured on)."""

    def __init__(self, size: int) -> None:
        self._fifo = _Fifo(size)
        self.size = size

    def __len__(self) -> int:
        return len(self._fifo)

    @property
    def data(self) -> torch.Tensor | None:
        return self._fifo.data

    @torch.no_grad()
    def push(self, x: torch.Tensor) -> None:
        self._fifo.push(x.detach())


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
        self, model: nn.Module, slots: Sequence[LayerSlot], size: int, *, refresh: bool = False
    ) -> None:
        self.model = model
        self.size = size
        self.refresh = refresh
        self.names = [s.name for s in slots]
        self.buffers = {s.name: ActivationBuffer(size) for s in slots}
        self.inputs = InputBuffer(size)
        self.recording = not refresh
        self._refilling = False
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
            if self.recording and (self.refresh or module.training or self._refilling):
                self.buffers[name].push(self._pending.pop(name, None), output)

        return hook

    def observe(self, inputs: torch.Tensor) -> None:
        """Record a training batch of network inputs (the FIFO :meth:`update` refills from)."""
        self.inputs.push(inputs)

    @torch.no_grad()
    def update(self, chunk: int = 4096) -> None:
        """Refill every layer buffer from the input FIFO with the current network (evaluation
        mode; a WideResNet's shortcuts are switched off while measuring). Called at every
        trigger evaluation in ``refresh`` mode, and after a growth event in streaming mode."""
        if self.inputs.data is None:
            return
        for b in self.buffers.values():
            b.clear()
        was_training = self.model.training
        residual = getattr(self.model, "residual_enabled", None)
        recording = self.recording
        self.model.eval()
        if residual is not None:
            self.model.residual_enabled = False
        self.recording, self._refilling = True, True
        try:
            data = self.inputs.data
            for start in range(0, len(self.inputs), chunk):
                self.model(data[start : start + chunk])
        finally:
            self.recording, self._refilling = recording, False
            self._pending.clear()
            if residual is not None:
                self.model.residual_enabled = residual
            self.model.train(was_training)

    def invalidate(self, names: Sequence[str] | None = None) -> None:
        """Empty the buffers ``names`` (all by default)."""
        for name in self.names if names is None else names:
            self.buffers[name].clear()

    def __getitem__(self, name: str) -> ActivationBuffer:
        return self.buffers[name]

    def remove(self) -> None:
        """Detach the hooks."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
