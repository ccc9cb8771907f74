"""Surgical fine-tuning with Auto-RGN (Lee et al. 2022, "Surgical Fine-Tuning Improves Adaptation
to Distribution Shifts"; thesis §7.3, "SFT").

Auto-RGN gives every layer a learning rate proportional to its *relative gradient norm*

``RGN_g = ||grad(theta_g)||_2 / ||theta_g||_2``,   ``lr_g = lr * RGN_g / max_h RGN_h``,

so the layer whose parameters the loss pulls on hardest, relative to their size, trains at the
base learning rate and every other layer slower (SFT only ever lowers learning rates, as §7.3
notes). Here a "layer" is a parameter group of the optimizer; :func:`rgn_param_groups` makes one
group per module (a layer's weight and bias together: the thesis's "layer-wise", the default)
or one per parameter tensor (``by="tensor"``, the granularity of the authors' code). The rates
are set from the gradients of the current mini-batch just before every ``every``-th optimizer
step (an optimizer step pre-hook), so Auto-RGN works alone or together with
:class:`~structlab.growprune.DYNO`, whose structural changes swap resized tensors into the same
groups. (Lee et al. average the norms over 5 batches once per epoch; fine-tuning here runs a
fixed number of iterations without epochs.)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

from structlab.training import Callback, TrainState

__all__ = ["rgn_param_groups", "relative_gradient_norms", "rgn_learning_rates", "AutoRGN"]


def rgn_param_groups(model: nn.Module, *, by: str = "module", **options) -> list[dict]:
    """Optimizer parameter groups for Auto-RGN (with ``options`` such as ``lr`` or
    ``weight_decay``): one per module holding trainable parameters (``by="module"``: a layer's
    weight and bias share one rate) or one per trainable tensor (``by="tensor"``)."""
    if by == "tensor":
        return [{"params": [p], **options} for p in model.parameters() if p.requires_grad]
    if by != "module":
        raise ValueError(f"by must be 'module' or 'tensor', got {by!r}")
    groups = []
    for module in model.modules():
        params = [p for p in module.parameters(recurse=False) if p.requires_grad]
        if params:
            groups.append({"params": params, **options})
    return groups


def relative_gradient_norms(groups: Iterable[dict]) -> list[float]:
    """``||g|| / ||theta||`` of every parameter group (norms over all its tensors; 0 for a group
    without gradients or with all-zero parameters)."""
    out = []
    for group in groups:
        g2, p2 = 0.0, 0.0
        for p in group["params"]:
            if p.grad is None:
                continue
            g2 += float(p.grad.detach().double().pow(2).sum())
            p2 += float(p.detach().double().pow(2).sum())
        out.append(0.0 if p2 == 0.0 else (g2 / p2) ** 0.5)
    return out


def rgn_learning_rates(rgn: Sequence[float], lr: float) -> list[float]:
    """Auto-RGN's learning rates ``lr * RGN_g / max_h RGN_h`` (all ``lr`` when every RGN is 0)."""
    top = max(rgn, default=0.0)
    if top <= 0:
        return [lr for _ in rgn]
    return [lr * r / top for r in rgn]


class AutoRGN(Callback):
    """Auto-RGN layer-wise learning rates, set before every ``every``-th optimizer step.

    Args:
        lr: the base learning rate (the largest any group gets; default: each group's ``lr``
            when training starts, the largest of them).
        every: recompute the rates every ``every`` steps (1: every step).

    Build the optimizer over :func:`rgn_param_groups`; a group of several tensors gets one rate.
    ``history.extra["rgn_lr"]`` holds the rates (one list per recomputation, in group order,
    with the step).
    """

    def __init__(self, lr: float | None = None, *, every: int = 1) -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.lr, self.every = lr, every
        self._handle = None
        self._calls = 0
        self.log: list[dict] = []

    def on_train_begin(self, state: TrainState) -> None:
        opt = state.optimizer
        if self.lr is None:
            self.lr = max(float(g["lr"]) for g in opt.param_groups)
        self._calls = 0
        self._handle = opt.register_step_pre_hook(self._pre_step)

    def _pre_step(self, optimizer: torch.optim.Optimizer, args, kwargs) -> None:
        if self._calls % self.every == 0:
            lrs = self.apply(optimizer)
            self.log.append({"step": self._calls + 1, "lr": lrs})
        self._calls += 1

    def apply(self, optimizer: torch.optim.Optimizer) -> list[float]:
        """Set every group's ``lr`` from the current gradients; return the rates."""
        lrs = rgn_learning_rates(relative_gradient_norms(optimizer.param_groups), self.lr)
        for group, lr in zip(optimizer.param_groups, lrs):
            group["lr"] = lr
        return lrs

    def on_train_end(self, state: TrainState) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        state.history.extra["rgn_lr"] = self.log
