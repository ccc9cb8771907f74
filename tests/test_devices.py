"""Every structural method on every accelerator computes what it computes on the CPU (issue 27).

Each case below builds its objects with a fixed seed **on the CPU** (the reference), copies them
and their inputs to a device, runs the method there (forward, backward, an optimizer step, a
structural change) and returns what it computed; :func:`compare` checks the device's results
against the CPU's. A case therefore fails when a method creates a tensor on the wrong device,
drops a mask or an optimizer entry on the way, draws different random numbers, or computes
something else.

Devices: every CUDA device (and MPS) the process sees. The ordinary suite hides CUDA
(``tests/conftest.py``), so there these tests skip; ``make gpu-check`` runs them with
``STRUCTLAB_DEVICE_TESTS=1``. ``STRUCTLAB_DEVICE_TESTS_SELF=1`` runs the same comparisons with the
CPU as the "device" (CPU against CPU), which proves the harness on a machine without a GPU.

**Tolerance.** Floating results must agree normwise: ``max |a - b| <= RTOL * max |a| + ATOL``
with ``RTOL = 1e-4`` and ``ATOL = 1e-6``, in float32 with TF32 switched off (cuDNN and cuBLAS
would otherwise round convolution and matmul inputs to a 10-bit mantissa, a relative error of
about 1e-3 that has nothing to do with device correctness). A device computes the same sums in
another order (cuDNN's algorithms, atomics in reductions): for the few thousand terms and few
layers of these networks, that moves results by some 1e-6 relative (float32's unit roundoff is
6e-8, times the reduction lengths and depths here), so ``1e-4`` leaves a factor of ten while any
real fault (a missing mask, another random draw, a wrong index) changes results by order one.
Discrete results (masks, widths, counts, selected indices) must be equal; sign-ambiguous ones
(singular vectors) are compared up to sign where stated.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Mapping
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

RTOL = 1e-4
ATOL = 1e-6
SELF_ENV = "STRUCTLAB_DEVICE_TESTS_SELF"


# ------------------------------------------------------------------------------ the harness
def accelerators() -> list[torch.device]:
    """The devices to compare with the CPU: the CPU itself under ``STRUCTLAB_DEVICE_TESTS_SELF=1``,
    else every visible CUDA device and MPS when present."""
    if os.environ.get(SELF_ENV) == "1":
        return [torch.device("cpu")]
    found = [torch.device("cuda", i) for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        found.append(torch.device("mps"))
    return found


NO_DEVICE = ("no accelerator visible: the ordinary suite hides CUDA (tests/conftest.py); "
             "`make gpu-check` runs these tests on a GPU (STRUCTLAB_DEVICE_TESTS=1), "
             f"{SELF_ENV}=1 runs them CPU against CPU")


def _device_params() -> list[Any]:
    found = accelerators()
    if not found:
        return [pytest.param(None, id="no-device", marks=pytest.mark.skip(reason=NO_DEVICE))]
    return [pytest.param(d, id=str(d).replace(":", "")) for d in found]


def to_cpu(value: Any) -> Any:
    """``value`` with every tensor detached and copied to the CPU (dicts, lists, tuples)."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu")
    if isinstance(value, Mapping):
        return {k: to_cpu(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(to_cpu(v) for v in value)
    return value


def compare(reference: Any, other: Any, *, rtol: float = RTOL, atol: float = ATOL,
            where: str = "") -> list[str]:
    """The differences between two results (see the module docstring's tolerance); [] if none.

    Tensors: same shape and dtype; floating ones within ``rtol`` normwise, others equal. Python
    floats within ``rtol`` relatively; everything else equal. Mappings must have the same keys."""
    name = where or "result"
    if isinstance(reference, torch.Tensor) or isinstance(other, torch.Tensor):
        if not (isinstance(reference, torch.Tensor) and isinstance(other, torch.Tensor)):
            return [f"{name}: a tensor against {type(other).__name__}"]
        a, b = reference.detach().cpu(), other.detach().cpu()
        if a.shape != b.shape or a.dtype != b.dtype:
            return [f"{name}: {a.dtype}{list(a.shape)} against {b.dtype}{list(b.shape)}"]
        if a.is_floating_point() or a.is_complex():
            if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
                same = torch.equal(a.isnan(), b.isnan()) and torch.equal(
                    torch.where(a.isnan(), 0, a), torch.where(b.isnan(), 0, b))
                return [] if same else [f"{name}: non-finite values differ"]
            if a.numel() == 0:
                return []
            err = float((a.double() - b.double()).abs().max())
            scale = float(a.double().abs().max())
            if err > rtol * scale + atol:
                return [f"{name}: max |difference| {err:.3g} > {rtol:g} x max |reference| "
                        f"{scale:.3g} + {atol:g}"]
            return []
        return [] if torch.equal(a, b) else [
            f"{name}: {int((a != b).sum())} of {a.numel()} entries differ"]
    if isinstance(reference, Mapping) and isinstance(other, Mapping):
        if set(reference) != set(other):
            return [f"{name}: keys differ: {sorted(map(str, set(reference) ^ set(other)))}"]
        return [d for k in reference for d in compare(reference[k], other[k], rtol=rtol,
                                                       atol=atol, where=f"{name}[{k!r}]")]
    if isinstance(reference, list | tuple) and isinstance(other, list | tuple):
        if len(reference) != len(other):
            return [f"{name}: {len(reference)} items against {len(other)}"]
        return [d for i, (x, y) in enumerate(zip(reference, other))
                for d in compare(x, y, rtol=rtol, atol=atol, where=f"{name}[{i}]")]
    if isinstance(reference, float) and isinstance(other, float | int):
        if abs(reference - other) > rtol * abs(reference) + atol:
            return [f"{name}: {reference!r} against {other!r}"]
        return []
    return [] if reference == other and type(reference) is type(other) else [
        f"{name}: {reference!r} against {other!r}"]


def assert_same(reference: Any, other: Any, **kw: Any) -> None:
    """Raise an ``AssertionError`` listing every difference :func:`compare` finds."""
    diffs = compare(reference, other, **kw)
    assert not diffs, f"{len(diffs)} difference(s):\n" + "\n".join(diffs[:20])


@pytest.fixture(autouse=True, scope="module")
def _full_float32():
    """float32 results at float32 precision: no TF32 (see the tolerance), float32 default."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.get_default_dtype())
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_default_dtype(torch.float32)
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[:2]
    torch.set_default_dtype(saved[2])


def step_results(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 optimizer: torch.optim.Optimizer | None = None) -> dict[str, Any]:
    """Output, loss, every parameter's gradient of one cross-entropy step, and (with an
    optimizer) the parameters after the step."""
    model.zero_grad(set_to_none=True)
    out = model(x)
    loss = F.cross_entropy(out, y)
    loss.backward()
    found: dict[str, Any] = {"out": out, "loss": loss}
    for name, p in model.named_parameters():
        if p.grad is not None:
            found[f"grad {name}"] = p.grad
    if optimizer is not None:
        optimizer.step()
        found.update({f"after {n}": p for n, p in model.named_parameters()})
    return to_cpu(found)


CASES: dict[str, Callable[[torch.device], dict[str, Any]]] = {}


def case(fn: Callable[[torch.device], dict[str, Any]]) -> Callable[[torch.device], dict[str, Any]]:
    """Register a case: ``fn(device)`` builds on the CPU, runs on ``device``, returns results."""
    CASES[fn.__name__] = fn
    return fn


def _data(shape: tuple[int, ...], classes: int, n: int | None = None,
          seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g)
    y = torch.randint(0, classes, (shape[0] if n is None else n,), generator=g)
    return x, y


# ------------------------------------------------------------------------------ operators
def _mlp():
    from structlab.models import MLP

    torch.manual_seed(0)
    return MLP(12, [10, 8], 4)


def _vgg(batchnorm: bool = True):
    from structlab.models import VGG

    torch.manual_seed(1)
    return VGG([4, "M", 6], input_size=8, in_channels=2, num_classes=3, dense=[5],
               batchnorm=batchnorm)


@case
def masks_magnitude(device: torch.device) -> dict[str, Any]:
    """Global and per-layer magnitude pruning, per weight and per kernel, then a masked step."""
    from structlab.operators import get_mask, prunable_modules, prune_global, prune_unstructured

    out: dict[str, Any] = {}
    model = _mlp().to(device)
    x, y = (t.to(device) for t in _data((16, 12), 4))
    prune_global(model, 0.5)
    out["mlp masks"] = [get_mask(m) for m in prunable_modules(model)]
    out["mlp step"] = step_results(model, x, y, torch.optim.SGD(model.parameters(), lr=0.1,
                                                                 momentum=0.9))
    vgg = _vgg().to(device)
    x, y = (t.to(device) for t in _data((6, 2, 8, 8), 3))
    prune_unstructured(vgg, 0.3, granularity="kernel")
    out["vgg masks"] = [get_mask(m) for m in prunable_modules(vgg)]
    out["vgg step"] = step_results(vgg, x, y, torch.optim.Adam(vgg.parameters(), lr=1e-2))
    return to_cpu(out)


@case
def masks_taylor_and_nest_regrowth(device: torch.device) -> dict[str, Any]:
    """Taylor pruning ``|w dL/dw|`` from connection gradients, NeST regrowth by gradient."""
    from structlab.operators import (
        connection_gradients,
        get_mask,
        prunable_modules,
        prune_global,
        regrow_connections,
    )

    model = _vgg().to(device)
    x, y = (t.to(device) for t in _data((8, 2, 8, 8), 3))
    grads = connection_gradients(model, [(x, y)], device=device)
    out: dict[str, Any] = {"gradients": [grads[m] for m in prunable_modules(model)]}
    prune_global(model, 0.4, method="taylor", gradients=grads)
    out["pruned"] = [get_mask(m) for m in prunable_modules(model)]
    grads = connection_gradients(model, [(x, y)], device=device)
    regrow_connections(model, 0.2, gradients=grads, init="gradient", step_size=0.1)
    out["regrown"] = [get_mask(m) for m in prunable_modules(model)]
    out["step"] = step_results(model, x, y, torch.optim.SGD(model.parameters(), lr=0.05))
    return to_cpu(out)


@case
def masks_random(device: torch.device) -> dict[str, Any]:
    """Random pruning and regrowth from a seeded (CPU) generator: the same draws everywhere."""
    from structlab.operators import (
        get_mask,
        prunable_modules,
        prune_unstructured,
        regrow_connections,
    )

    model = _mlp().to(device)
    x, y = (t.to(device) for t in _data((16, 12), 4))
    prune_unstructured(model, 0.5, method="random", generator=torch.Generator().manual_seed(0))
    pruned = [get_mask(m) for m in prunable_modules(model)]
    regrow_connections(model, 0.25, method="random", generator=torch.Generator().manual_seed(1))
    return to_cpu({"pruned": pruned, "regrown": [get_mask(m) for m in prunable_modules(model)],
                   "step": step_results(model, x, y)})


@case
def units_add_remove(device: torch.device) -> dict[str, Any]:
    """Neuron creation (default fan-in from a seeded generator, zero fan-out) and removal, with
    the optimizer's momentum carried through both."""
    from structlab.operators import add_units, remove_units

    out: dict[str, Any] = {}
    for name, build, shape, classes in (("mlp", _mlp, (16, 12), 4),
                                        ("vgg", _vgg, (6, 2, 8, 8), 3)):
        model = build().to(device)
        x, y = (t.to(device) for t in _data(shape, classes))
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        out[f"{name} first"] = step_results(model, x, y, opt)
        g = torch.Generator().manual_seed(2)
        for slot in model.layer_slots():
            add_units(model, slot, 2, optimizer=opt, generator=g)
        out[f"{name} grown"] = step_results(model, x, y, opt)
        remove_units(model, 0, [0, 3], optimizer=opt)
        out[f"{name} removed"] = step_results(model, x, y, opt)
        out[f"{name} widths"] = [s.width for s in model.layer_slots()]
    return to_cpu(out)


@case
def unit_saliencies(device: torch.device) -> dict[str, Any]:
    """Every unit saliency of the chapter, then structured pruning by the first-order Taylor one."""
    from structlab.operators import UNIT_SALIENCIES, prune_units, unit_saliency

    model = _vgg().to(device)
    x, y = (t.to(device) for t in _data((8, 2, 8, 8), 3))
    out: dict[str, Any] = {}
    for method in UNIT_SALIENCIES:
        out[method] = unit_saliency(model, 0, method, data=[(x, y)], device=device,
                                    generator=torch.Generator().manual_seed(3))
    out["removed"] = prune_units(model, 0, 2, "taylor", data=[(x, y)], device=device)
    out["step"] = step_results(model, x, y)
    return to_cpu(out)


# ------------------------------------------------------------------------------ DARTS
@case
def darts_primitives(device: torch.device) -> dict[str, Any]:
    """Every DARTS primitive at stride 1 and 2 (affine and not), and one mixed edge."""
    from structlab.darts.operations import PRIMITIVES, make_op
    from structlab.darts.supernet import MixedOp

    out: dict[str, Any] = {}
    x = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(4))
    for name in PRIMITIVES:
        for stride in (1, 2):
            for affine in (True, False):
                torch.manual_seed(5)
                op = make_op(name, 4, stride, affine, pool_bn=not affine).to(device)
                xd = x.to(device).requires_grad_(True)
                y = op(xd)
                (y * y).sum().backward() if y.requires_grad else None
                out[f"{name} s{stride} affine={affine}"] = to_cpu({
                    "out": y, "input grad": xd.grad if xd.grad is not None else torch.zeros(()),
                    **{f"grad {n}": p.grad for n, p in op.named_parameters()
                       if p.grad is not None}})
    torch.manual_seed(6)
    edge = MixedOp(4, 2, PRIMITIVES).to(device)
    w = torch.softmax(torch.randn(len(PRIMITIVES), generator=torch.Generator().manual_seed(7)),
                      0).to(device).requires_grad_(True)
    y = edge(x.to(device), w)
    (y * y).sum().backward()
    out["mixed edge"] = to_cpu({"out": y, "weight grad": w.grad})
    return out


@case
def darts_supernet_step(device: torch.device) -> dict[str, Any]:
    """A softmax and a CRB supernet: forward, backward, a w-step and an alpha step."""
    from structlab.darts.supernet import Supernet

    out: dict[str, Any] = {}
    x, y = _data((4, 1, 12, 12), 10, seed=8)
    for activation in ("softmax", "crb"):
        torch.manual_seed(9)
        net = Supernet(4, 10, 3, in_channels=1, activation=activation).to(device)
        xd, yd = x.to(device), y.to(device)
        w_opt = torch.optim.SGD(net.weight_parameters(), lr=0.05, momentum=0.9)
        a_opt = torch.optim.Adam(net.arch_parameters(), lr=3e-4)
        out[f"{activation} w-step"] = step_results(net, xd, yd, w_opt)
        net.zero_grad(set_to_none=True)
        F.cross_entropy(net(xd), yd).backward()
        a_opt.step()
        out[f"{activation} alphas"] = to_cpu(net.arch_parameters())
        out[f"{activation} after"] = to_cpu(net(xd))
    return out


# ------------------------------------------------------------------------------ equivariance
@case
def group_convolutions(device: torch.device) -> dict[str, Any]:
    """A lifting and a group convolution over every group: training pass and cached eval pass."""
    from structlab.equivariance import GROUP_NAMES, GroupConv2d

    out: dict[str, Any] = {}
    x = torch.randn(2, 2, 9, 9, generator=torch.Generator().manual_seed(10))
    for name in GROUP_NAMES:
        torch.manual_seed(11)
        net = nn.Sequential(GroupConv2d(2, 3, 3, name, lifting=True), nn.ReLU(),
                            GroupConv2d(3, 2, 3, name)).to(device)
        xd = x.to(device)
        y = net(xd)
        (y ** 2).mean().backward()
        found = {"out": y, **{f"grad {n}": p.grad for n, p in net.named_parameters()}}
        net.eval()
        with torch.no_grad():
            found["eval"] = net(xd)
            found["eval cached"] = net(xd)
        out[name] = to_cpu(found)
    return out


@case
def mixed_group_convolutions(device: torch.device) -> dict[str, Any]:
    """[G]-mixed layers (eq. 11-12) over all six groups: output, weight and alpha gradients, a
    joint optimizer step."""
    from structlab.equivariance import MixedGroupConv

    torch.manual_seed(12)
    net = nn.Sequential(MixedGroupConv(1, 2, 3, lifting=True), nn.ReLU(),
                        MixedGroupConv(2, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.LazyLinear(3))
    x, y = _data((3, 1, 8, 8), 3, seed=13)
    net(x)  # materialise the lazy head on the CPU, before the copy
    net = net.to(device)
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-2)
    return step_results(net, x.to(device), y.to(device), opt)


# ------------------------------------------------------------------------------ neurogenesis
def _toy(n: int = 256, d: int = 16, classes: int = 3, seed: int = 0):
    from structlab.data.base import LabelledTensors

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = (x[:, :classes] * torch.arange(1, classes + 1)).argmax(1)
    return LabelledTensors(x, y, name="toy")


@case
def neurogenesis_triggers(device: torch.device) -> dict[str, Any]:
    """The three triggers: activations (eq. 28), weights (eq. 30-31), gradients (eq. 32)."""
    from structlab.models import MLP
    from structlab.neurogenesis import (
        ActivationTrigger,
        GradientTrigger,
        ModifiedReLU,
        auxiliary_gradients,
    )
    from structlab.neurogenesis.triggers import WeightTrigger

    torch.manual_seed(14)
    model = MLP(16, [6, 5], 3, activation=ModifiedReLU).to(device)
    data = _toy()
    x, y = data.inputs.to(device), data.targets.to(device)
    slots = model.layer_slots()
    out: dict[str, Any] = {}
    acts = torch.relu(model.layers[0](x)).detach()
    for metric in ("ed", "og"):
        trig = ActivationTrigger(0.97, metric=metric)
        trig("h", acts)  # sets the baseline
        out[f"act {metric}"] = (trig("h", acts * torch.linspace(0.2, 1.0, 6, device=device)),
                                trig.last["h"])
    wt = WeightTrigger(0.99)
    out["weight"] = [wt(s.name, s.producers[0]) for s in slots]
    aux = auxiliary_gradients(model, slots, x[:64], y[:64])
    gt = GradientTrigger(0.5)
    out["gradient"] = [(gt(s.name, aux[s.name]), gt.last[s.name]) for s in slots]
    out["aux G"] = [aux[s.name].G for s in slots]
    return to_cpu(out)


@case
def neurogenesis_growth(device: torch.device) -> dict[str, Any]:
    """One growth step of each kind of initialization (Algorithm 4), then a training step.
    GradMax's fan-outs are singular vectors, determined up to sign: its parameters are compared
    in absolute value, its outputs (function preserving) exactly."""
    from structlab.models import MLP
    from structlab.neurogenesis import ModifiedReLU, Neurogenesis, auxiliary_gradients
    from structlab.training import History, TrainState

    out: dict[str, Any] = {}
    data = _toy()
    for strategy in ("north-select", "north-random", "north-weight", "gradmax", "firefly"):
        torch.manual_seed(15)
        model = MLP(16, [6, 5], 3, activation=ModifiedReLU).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        state = TrainState(model=model, optimizer=opt, device=device, history=History(),
                           total_steps=100)
        x, y = data.inputs.to(device), data.targets.to(device)
        state.inputs, state.targets = x[:64], y[:64]
        cb = Neurogenesis(strategy, max_width=64, buffer_size=128, candidates=30, seed=1)
        cb.on_train_begin(state)
        if cb.buffers is not None:
            cb.buffers.observe(x)
            cb.buffers.update()
        groups = cb._groups(model)
        aux = None
        if cb.needs_gradients:
            aux = auxiliary_gradients(model, [g[0] for g in groups], state.inputs, state.targets)
        before = model(x).detach()
        cb.grow(state, groups[0], 3, aux)
        found: dict[str, Any] = {"widths": model.widths(), "before": before,
                                 "after growth": model(x).detach()}
        params = {n: p.detach() for n, p in model.named_parameters()}
        found["params"] = {n: p.abs() for n, p in params.items()} if strategy == "gradmax" \
            else params
        if strategy != "gradmax":
            found["step"] = step_results(model, x[:64], y[:64], opt)
        out[strategy] = to_cpu(found)
    return out


# ------------------------------------------------------------------------------ DYNO
@case
def dyno_grow_and_prune(device: torch.device) -> dict[str, Any]:
    """One DYNO evaluation (Algorithm 5): a forced prune of conv1 and growth of dense0 with the
    Adam state carried along, then a training step."""
    from structlab.growprune import DYNO, TransferVGG
    from structlab.training import History, TrainState

    torch.manual_seed(16)
    model = TransferVGG(cfg=[4, "M", 6, "M"], dense=[8], in_channels=1, num_classes=3,
                        input_size=8, pool_to=None, dropout=0.0, mean=None, std=None)
    x = torch.rand(200, 1, 8, 8, generator=torch.Generator().manual_seed(17))
    y = torch.randint(0, 3, (200,), generator=torch.Generator().manual_seed(18))
    model = model.to(device)
    x, y = x.to(device), y.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    first = step_results(model, x[:64], y[:64], opt)
    state = TrainState(model=model, optimizer=opt, device=device, history=History(), step=0)
    dyno = DYNO(every=10, min_samples=16)
    dyno.on_train_begin(state)
    for start in range(0, 200, 50):
        state.inputs = x[start:start + 50]
        state.step += 1
        dyno.on_step_end(state)
    dyno.buffers.refill()
    phis = {s.name: dyno._phi(s) for s in model.layer_slots()}
    for s in model.layer_slots():
        dyno.trigger.reset(s.name, phis[s.name])
    dyno.trigger.reset("conv1", 1.0 / 0.9)
    dyno.trigger.reset("dense0", 0.0)
    state.step = 10
    dyno.grow_and_prune(state)
    model.eval()
    with torch.no_grad():
        after = model(x[:20])
    model.train()
    events = [{k: v for k, v in e.items() if not isinstance(v, float)} for e in dyno.events]
    return to_cpu({"first": first, "phi": phis, "events": events,
                   "widths": [s.width for s in model.layer_slots()], "after": after,
                   "step": step_results(model, x[:64], y[:64], opt)})


# ------------------------------------------------------------------------------ HRN
@case
def hrn_morphisms(device: torch.device) -> dict[str, Any]:
    """HRN's morphisms on a dense and a conv network: add a residual layer (zero output), add
    neurons (zero fan-out) with the optimizer's state, then the importance scores and a step."""
    from structlab.data.base import LabelledTensors
    from structlab.heuristics import HRN, add_neurons, add_residual
    from structlab.heuristics.search import importance_scores

    out: dict[str, Any] = {}
    for kind in ("dense", "conv"):
        torch.manual_seed(19)
        if kind == "dense":
            model = HRN.dense(5, 3, hidden=6)
            x, y = _data((8, 5), 3, seed=20)
        else:
            model = HRN.conv(2, 3, channels=(4, 6), hidden=3)
            x, y = _data((4, 2, 8, 8), 3, seed=21)
        model = model.to(device)
        x, y = x.to(device), y.to(device)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        found: dict[str, Any] = {"first": step_results(model, x, y, opt)}
        before = model(x).detach()
        g = torch.Generator().manual_seed(22)
        target = "body.0.residual.f1" if kind == "dense" else "body.1.residual.f2"
        add_residual(model, target, 3, generator=g, optimizer=opt)
        found["after residual"] = model(x).detach()
        found["before"] = before
        add_neurons(model, "body.0", 2, generator=g, optimizer=opt)
        found["after neurons"] = model(x).detach()
        found["widths"] = [s.width for s in model.layer_slots()]
        found["step"] = step_results(model, x, y, opt)
        scores = importance_scores(model, LabelledTensors(x.cpu(), y.cpu(), name="t"),
                                   device=device, batch_size=4)
        found["scores"] = scores
        out[kind] = to_cpu(found)
    return out


# ------------------------------------------------------------------------------ the tests
@pytest.mark.parametrize("device", _device_params())
@pytest.mark.parametrize("name", list(CASES))
def test_method_on_device_matches_cpu(name: str, device: torch.device) -> None:
    reference = CASES[name](torch.device("cpu"))
    assert_same(reference, CASES[name](device), where=name)


def test_compare_accepts_equal_and_rounding_and_rejects_perturbations():
    """The comparison itself: it must fail on what a device fault looks like."""
    g = torch.Generator().manual_seed(0)
    a = {"out": torch.randn(4, 5, generator=g), "mask": torch.ones(3), "widths": [6, 5],
         "count": 2, "phi": 0.5}
    assert compare(a, copy.deepcopy(a)) == []
    rounded = copy.deepcopy(a)
    rounded["out"] = a["out"] * (1 + 1e-6)  # float32 rounding of another summation order
    assert compare(a, rounded) == []
    for key, value in (("out", a["out"] + 1e-3 * a["out"].abs().max()),  # 1e-3: beyond RTOL
                       ("out", a["out"].double()),
                       ("out", a["out"][:3]),
                       ("mask", torch.tensor([1.0, 0.0, 1.0])),
                       ("widths", [6, 6]),
                       ("count", 3),
                       ("phi", 0.5 + 1e-3)):
        bad = copy.deepcopy(a)
        bad[key] = value
        diffs = compare(a, bad)
        assert len(diffs) == 1 and key in diffs[0], (key, diffs)
    assert compare(a, {k: v for k, v in a.items() if k != "phi"})  # a missing result
    nan = torch.tensor([1.0, float("nan")])
    assert compare(nan, nan.clone()) == [] and compare(nan, torch.tensor([1.0, 2.0]))
    with pytest.raises(AssertionError, match="difference"):
        assert_same(a, {**a, "count": 5})


def test_a_perturbed_device_result_fails_the_case():
    """A case's own results, one output moved by 1e-3 relative, no longer match."""
    reference = CASES["darts_supernet_step"](torch.device("cpu"))
    assert_same(reference, CASES["darts_supernet_step"](torch.device("cpu")))
    bad = copy.deepcopy(reference)
    bad["softmax after"] = bad["softmax after"] * (1 + 1e-3)
    with pytest.raises(AssertionError, match="softmax after"):
        assert_same(reference, bad)


def test_without_accelerators_the_device_tests_say_why(monkeypatch):
    monkeypatch.delenv(SELF_ENV, raising=False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    (param,) = _device_params()
    assert param.id == "no-device" and "make gpu-check" in param.marks[0].kwargs["reason"]
    monkeypatch.setenv(SELF_ENV, "1")
    assert accelerators() == [torch.device("cpu")]
