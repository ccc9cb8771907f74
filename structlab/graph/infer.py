"""Slot inference from the traced graph of a model, and the resizable wrapper built on it.

:func:`infer_slots` traces a model with ``torch.fx`` and propagates the shapes of example
inputs through the graph. Every tensor of the graph gets a *unit dimension* (dim 1, channels or
features); a union-find over these dimensions follows them through the operations that keep
them:

* a producer (``nn.Linear``, ``nn.Conv2d`` with ``groups=1``) reads one dimension (it is a
  consumer of it) and starts a new one (it is its producer);
* ``BatchNorm1d/2d`` keep the dimension and are its norms; activations, dropout, max/average
  pooling, means over the spatial axes keep it;
* a flatten of ``(N, C, H, W)`` into ``(N, C*H*W)`` keeps it with a spatial factor ``H*W``
  (the ``spatial`` of a dense consumer);
* an elementwise addition, subtraction or multiplication of two tensors merges their
  dimensions: a residual stream becomes one group of units with several producers.

A dimension that reaches the network's input or output, or a parameter tensor used directly
(``get_attr``), is not resizable. Every other dimension with at least one producer and one
consumer is a :class:`~structlab.models.LayerSlot`. Anything else that touches a resizable
dimension is refused in one line naming the node (:class:`UnsupportedModelError`): concatenation,
grouped or depthwise convolutions, LayerNorm and GroupNorm, reshapes and permutations other than
a flatten, indexing, modules and functions the inference does not know, a parametrised module
called twice, and tracing failures (data-dependent control flow).

**Taps.** :class:`GraphModel` rewrites the traced graph so that every slot's consumers read its
units through a dedicated :class:`Tap` module: the chain of activation functions and pooling
operations between the slot's last norm (or its producer, or the residual addition) and its
consumers is moved into the tap, whose forward runs that chain. The slot's ``activation`` is that
tap, so a forward hook on it sees exactly what the consumers read (after pooling; before a
flatten or a dropout, which stay in the graph), even when the model calls one in-place
``nn.ReLU`` module twice (torchvision's ``BasicBlock``) or uses ``F.relu``; and
``slot.activation(z)`` computes the post-activation of candidate units as the chapters' growth
initializations expect. A tap whose chain starts with a ReLU is an ``nn.ReLU`` (subclass), so
the dormant-unit rules of SELECT_PRUNE apply.
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata

from structlab.models.slots import Consumer, LayerSlot, ResizableModel

__all__ = [
    "GraphModel",
    "InferredSlots",
    "Tap",
    "UnsupportedModelError",
    "infer_slots",
    "resizable",
]


class UnsupportedModelError(ValueError):
    """The inference cannot handle a node of the model's graph; the message names it."""


# ----------------------------------------------------------------------------- op tables
_NORM_MODULES = (nn.BatchNorm1d, nn.BatchNorm2d)
_ACT_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid,
    nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Mish, nn.Softplus, nn.PReLU,
)
_POOL_MODULES = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
_PASS_MODULES = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout)
_REFUSED_MODULES: dict[type, str] = {
    nn.LayerNorm: "LayerNorm normalises across the unit dimension",
    nn.GroupNorm: "GroupNorm normalises groups of units together",
    nn.LocalResponseNorm: "LocalResponseNorm mixes neighbouring units",
    nn.MultiheadAttention: "attention (MultiheadAttention) is not supported",
    nn.Softmax: "Softmax mixes the units",
}
_ACT_FUNCTIONS = {
    F.relu, torch.relu, F.relu6, F.leaky_relu, F.elu, F.gelu, F.silu, torch.tanh, torch.sigmoid,
    F.hardswish, F.hardsigmoid, F.hardtanh, F.mish, F.softplus, torch.nn.functional.relu_,
}
_POOL_FUNCTIONS = {
    F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d,
}
_PASS_FUNCTIONS = {F.dropout, F.dropout2d, torch.clone}
try:  # torchvision's per-sample residual dropout (an identity in evaluation mode)
    from torchvision.ops import stochastic_depth as _stochastic_depth

    _PASS_FUNCTIONS.add(_stochastic_depth)
except ImportError:  # pragma: no cover - torchvision is optional
    pass
_ACT_METHODS = {"relu", "relu_", "sigmoid", "tanh", "sigmoid_", "tanh_"}
_PASS_METHODS = {"contiguous", "clone"}
_MERGE_FUNCTIONS = {operator.add, operator.iadd, operator.sub, operator.isub, operator.mul,
                    operator.imul, torch.add, torch.sub, torch.mul}
_MERGE_METHODS = {"add", "add_", "sub", "sub_", "mul", "mul_"}
_SCALE_FUNCTIONS = {operator.truediv, operator.itruediv, torch.div}
_REDUCE_FUNCTIONS = {torch.mean, torch.sum, torch.amax}
_REDUCE_METHODS = {"mean", "sum", "amax"}
_FLATTEN_FUNCTIONS = {torch.flatten}
_FLATTEN_METHODS = {"flatten", "view", "reshape"}
_CONCAT = {torch.cat, torch.stack, torch.concat, torch.hstack, torch.vstack}
_RELU_LIKE = (nn.ReLU, nn.ReLU6)


def _where(node: fx.Node) -> str:
    """``node <name> in <innermost module path> (<target>)`` for a refusal line."""
    stack = node.meta.get("nn_module_stack") or {}
    inside = ""
    if stack:
        path = list(stack.values())[-1][0]
        if path and path != node.target:
            inside = f" in {path}"
    return f"node {node.name}{inside} ({_target_name(node)})"


def _target_name(node: fx.Node) -> str:
    t = node.target
    if isinstance(t, str):
        return t
    return getattr(t, "__name__", repr(t))


def _meta(node: Any) -> TensorMetadata | None:
    if not isinstance(node, fx.Node):
        return None
    m = node.meta.get("tensor_meta")
    return m if isinstance(m, TensorMetadata) else None


def _tensor_args(node: fx.Node) -> list[fx.Node]:
    out: list[fx.Node] = []
    fx.node.map_arg((node.args, node.kwargs), lambda n: out.append(n) if _meta(n) else None)
    return out


# ----------------------------------------------------------------------------- results
@dataclass
class _Dim:
    """One unit dimension (a union-find class) while the graph is analysed."""

    producers: list[tuple[fx.Node, nn.Module]] = field(default_factory=list)
    norms: list[tuple[fx.Node, nn.Module]] = field(default_factory=list)
    consumers: list[tuple[fx.Node, nn.Module, int]] = field(default_factory=list)
    frozen: str | None = None


@dataclass
class InferredSlots:
    """What :func:`infer_slots` found: the traced graph module and one entry per slot.

    ``slots`` are :class:`~structlab.models.LayerSlot` without an activation (the taps of
    :class:`GraphModel` supply it); ``consumer_inputs[name]`` lists the graph nodes its
    consumers read; ``frozen`` names the unit dimensions left fixed and why.
    """

    graph_module: fx.GraphModule
    slots: list[LayerSlot]
    consumer_inputs: dict[str, list[fx.Node]]
    frozen: list[str]


class _Analysis:
    def __init__(self, gm: fx.GraphModule) -> None:
        self.gm = gm
        self.modules = dict(gm.named_modules())
        self.parent: dict[int, int] = {}
        self.dims: dict[int, _Dim] = {}
        self.info: dict[fx.Node, tuple[int, int]] = {}  # node -> (dim id, spatial factor)
        self.called: dict[int, fx.Node] = {}

    # union-find
    def new(self, frozen: str | None = None) -> int:
        i = len(self.parent)
        self.parent[i] = i
        self.dims[i] = _Dim(frozen=frozen)
        return i

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> int:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        if rb < ra:
            ra, rb = rb, ra
        self.parent[rb] = ra
        da, db = self.dims[ra], self.dims.pop(rb)
        da.producers += db.producers
        da.norms += db.norms
        da.consumers += db.consumers
        da.frozen = da.frozen or db.frozen
        return ra

    def dim(self, node: fx.Node) -> _Dim:
        return self.dims[self.find(self.info[node][0])]

    def frozen_input(self, node: fx.Node) -> bool:
        """Whether every tensor input of ``node`` carries a fixed (non-resizable) dimension."""
        args = [a for a in _tensor_args(node) if a in self.info]
        return all(self.dim(a).frozen for a in args)

    def refuse(self, node: fx.Node, reason: str) -> None:
        """Refuse, unless every input of the node is fixed anyway (the output is then fixed)."""
        if self.frozen_input(node):
            self.info[node] = (self.new(frozen=f"{node.name}: {reason}"), 1)
            return
        raise UnsupportedModelError(f"{_where(node)}: {reason}")

    # the walk
    def run(self) -> None:
        for node in self.gm.graph.nodes:
            meta = _meta(node)
            if node.op == "placeholder":
                if meta is not None:
                    self.info[node] = (self.new(frozen="network input"), 1)
                continue
            if node.op == "get_attr":
                if meta is not None:
                    self.info[node] = (self.new(frozen=f"parameter {node.target}"), 1)
                continue
            if node.op == "output":
                for a in _tensor_args(node):
                    if a in self.info:
                        self.dim(a).frozen = self.dim(a).frozen or "network output"
                continue
            if meta is None:  # shapes, sizes, asserts: no tensor travels on
                if node.op in ("call_function", "call_method") and _target_name(node) in (
                    "getitem",
                ) and _meta(node.args[0]) is not None:
                    self.refuse(node, "indexing a tensor")
                continue
            if node.op == "call_module":
                self.module(node, self.modules[node.target])
            else:
                self.function(node)

    def passthrough(self, node: fx.Node, src: fx.Node) -> None:
        if src not in self.info:
            self.info[node] = (self.new(frozen=f"{node.name}: untracked input"), 1)
        else:
            self.info[node] = self.info[src]

    def module(self, node: fx.Node, m: nn.Module) -> None:
        x = node.args[0] if node.args else None
        if any(True for _ in m.parameters(recurse=False)):
            if id(m) in self.called:
                self.refuse(node, f"module {node.target} is called twice (shared weights)")
                return
            self.called[id(m)] = node
        if isinstance(m, nn.Conv2d):
            if m.groups != 1:
                kind = "depthwise" if m.groups == m.in_channels else "grouped"
                self.refuse(node, f"{kind} convolution (groups={m.groups})")
                return
            self.consume(node, x, m)
            d = self.new()
            self.dims[d].producers.append((node, m))
            self.info[node] = (d, 1)
        elif isinstance(m, nn.Linear):
            if len(_meta(x).shape) != 2:
                self.refuse(node, f"Linear on a {len(_meta(x).shape)}-d tensor (tokens)")
                return
            self.consume(node, x, m)
            d = self.new()
            self.dims[d].producers.append((node, m))
            self.info[node] = (d, 1)
        elif isinstance(m, _NORM_MODULES):
            self.passthrough(node, x)
            if x in self.info:
                self.dim(node).norms.append((node, m))
        elif isinstance(m, _ACT_MODULES + _POOL_MODULES + _PASS_MODULES):
            if isinstance(m, nn.PReLU) and m.num_parameters != 1:
                self.refuse(node, "PReLU with one slope per unit")
                return
            self.passthrough(node, x)
        elif isinstance(m, nn.Flatten):
            self.flatten(node, x)
        else:
            for cls, reason in _REFUSED_MODULES.items():
                if isinstance(m, cls):
                    self.refuse(node, reason)
                    return
            self.refuse(node, f"unsupported module {type(m).__name__}")

    def consume(self, node: fx.Node, x: fx.Node, m: nn.Module) -> None:
        if x not in self.info:
            return
        d, spatial = self.info[x]
        if isinstance(m, nn.Conv2d) and spatial != 1:
            self.refuse(node, "convolution of a flattened tensor")
            return
        self.dims[self.find(d)].consumers.append((node, m, spatial))

    def flatten(self, node: fx.Node, x: fx.Node) -> None:
        a, b = _meta(x), _meta(node)
        if x not in self.info:
            self.info[node] = (self.new(frozen=f"{node.name}: untracked input"), 1)
            return
        ashape, bshape = tuple(a.shape), tuple(b.shape)
        if ashape == bshape:
            self.passthrough(node, x)
            return
        if len(ashape) >= 2 and len(bshape) == 2 and bshape[0] == ashape[0]:
            positions = 1
            for s in ashape[2:]:
                positions *= int(s)
            if bshape[1] == ashape[1] * positions:
                d, spatial = self.info[x]
                self.info[node] = (d, spatial * positions)
                return
        self.refuse(node, f"reshape {list(ashape)} -> {list(bshape)} moves the unit dimension")

    def function(self, node: fx.Node) -> None:
        t = node.target
        name = _target_name(node)
        method = node.op == "call_method"
        x = node.args[0] if node.args else None
        tensors = [a for a in _tensor_args(node) if a in self.info]
        if (not method and t in _CONCAT) or (method and name in ("cat",)):
            self.refuse(node, "concatenation joins unit dimensions")
        elif (not method and t in _ACT_FUNCTIONS | _POOL_FUNCTIONS | _PASS_FUNCTIONS) or (
            method and name in _ACT_METHODS | _PASS_METHODS
        ):
            self.passthrough(node, x)
        elif (not method and t in _FLATTEN_FUNCTIONS) or (method and name in _FLATTEN_METHODS):
            self.flatten(node, x)
        elif (not method and t in _REDUCE_FUNCTIONS) or (method and name in _REDUCE_METHODS):
            a, b = _meta(x), _meta(node)
            if len(b.shape) >= 2 and b.shape[1] == a.shape[1] and len(a.shape) > 2:
                self.passthrough(node, x)
            else:
                self.refuse(node, "reduction over the unit dimension")
        elif (not method and t in _MERGE_FUNCTIONS | _SCALE_FUNCTIONS) or (
            method and name in _MERGE_METHODS
        ):
            out = _meta(node)
            units = [a for a in tensors if len(_meta(a).shape) >= 2 and _meta(a).shape[1] > 1]
            if not units:
                self.info[node] = (self.new(frozen=f"{node.name}: no unit dimension"), 1)
                return
            if (not method and t in _SCALE_FUNCTIONS) and len(units) > 1:
                self.refuse(node, "division of two unit dimensions")
                return
            for a in units:
                if _meta(a).shape[1] != out.shape[1]:
                    self.refuse(node, "broadcast over the unit dimension")
                    return
            spatial = {self.info[a][1] for a in units}
            if len(spatial) > 1:
                self.refuse(node, "merge of flattened and unflattened units")
                return
            d = self.info[units[0]][0]
            for a in units[1:]:
                d = self.union(d, self.info[a][0])
            self.info[node] = (d, spatial.pop())
        elif method and name in ("size", "dim"):
            return
        elif (not method and t in (torch.transpose, torch.permute, torch.reshape)) or (
            method and name in ("transpose", "permute", "unsqueeze", "squeeze", "expand")
        ):
            self.refuse(node, f"{name} moves the unit dimension")
        elif tensors:
            self.refuse(node, f"unsupported function {name}")
        else:
            self.info[node] = (self.new(frozen=f"{node.name}: no tensor input"), 1)


def _trace(model: nn.Module) -> fx.GraphModule:
    try:
        return fx.symbolic_trace(model)
    except Exception as exc:  # noqa: BLE001 - any tracing failure is a refusal
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UnsupportedModelError(
            f"torch.fx cannot trace {type(model).__name__} (data-dependent control flow?): "
            f"{type(exc).__name__}: {first[:160]}"
        ) from exc


def infer_slots(model: nn.Module, example_inputs: torch.Tensor | Sequence[torch.Tensor]
                ) -> InferredSlots:
    """Trace ``model`` and infer its resizable unit groups (see the module docstring).

    Args:
        model: any ``nn.Module`` that ``torch.fx.symbolic_trace`` can trace.
        example_inputs: one input tensor (or a tuple) of the shapes the model will see; a small
            batch is enough. The shapes are propagated in evaluation mode (BatchNorm running
            statistics are left unchanged).

    Returns:
        An :class:`InferredSlots`; its slots share their modules with ``model``.

    Raises:
        UnsupportedModelError: one line naming the node the inference cannot handle.
    """
    gm = _trace(model)
    inputs = (example_inputs,) if torch.is_tensor(example_inputs) else tuple(example_inputs)
    was_training = model.training
    gm.eval()
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(*inputs)
    finally:
        gm.train(was_training)
    analysis = _Analysis(gm)
    analysis.run()
    slots, inputs_of, frozen = [], {}, []
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    roots = sorted(analysis.dims, key=lambda r: min(
        [order[n] for n, _ in analysis.dims[r].producers] or [len(order)]))
    names: set[str] = set()
    for r in roots:
        d = analysis.dims[r]
        if d.frozen:
            if d.producers:
                frozen.append(f"{d.producers[0][0].target}: {d.frozen}")
            continue
        if not d.producers or not d.consumers:
            continue
        kinds = {type(m) for _, m in d.producers}
        if len(kinds) > 1:
            node = d.producers[0][0]
            raise UnsupportedModelError(
                f"node {node.name} ({node.target}): dense and convolutional producers write "
                "into the same units")
        name = str(d.producers[0][0].target)
        while name in names:
            name += "_"
        names.add(name)
        producers = sorted(d.producers, key=lambda p: order[p[0]])
        norms = sorted(d.norms, key=lambda p: order[p[0]])
        consumers = sorted(d.consumers, key=lambda p: order[p[0]])
        slot = LayerSlot(
            name=name,
            producers=[m for _, m in producers],
            norms=[m for _, m in norms],
            consumers=[Consumer(m, spatial) for _, m, spatial in consumers],
            activation=None,
            kind="conv" if isinstance(producers[0][1], nn.Conv2d) else "dense",
        )
        slot.check()
        slots.append(slot)
        inputs_of[name] = [n.args[0] for n, _, _ in consumers]
    return InferredSlots(gm, slots, inputs_of, frozen)


# ----------------------------------------------------------------------------- taps
class Tap(nn.Module):
    """The activation of a slot as its consumers read it: a chain of channel-wise operations
    (activation functions, pooling) moved out of the traced graph. Its forward runs the chain
    (the identity when it is empty); forward hooks on it see the consumed activation."""

    def __init__(self, ops: Sequence[tuple[str, Any, tuple, dict]] = ()) -> None:
        super().__init__()
        self.mods = nn.ModuleList()
        self._ops: list[tuple[str, Any, tuple, dict]] = []
        for kind, target, args, kwargs in ops:
            if kind == "module":
                self.mods.append(target)
                target = len(self.mods) - 1
            self._ops.append((kind, target, tuple(args), dict(kwargs)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for kind, target, args, kwargs in self._ops:
            if kind == "module":
                x = self.mods[target](x)
            elif kind == "function":
                x = target(x, *args, **kwargs)
            else:
                x = getattr(x, target)(*args, **kwargs)
        return x

    def extra_repr(self) -> str:
        parts = []
        for kind, target, _, _ in self._ops:
            if kind == "module":
                parts.append(type(self.mods[target]).__name__)
            else:
                parts.append(getattr(target, "__name__", str(target)))
        return " -> ".join(parts) or "identity"


class ReLUTap(Tap, nn.ReLU):
    """A :class:`Tap` whose chain starts with a ReLU (an ``nn.ReLU`` for ``isinstance``)."""

    def __init__(self, ops: Sequence[tuple[str, Any, tuple, dict]] = ()) -> None:
        Tap.__init__(self, ops)
        self.inplace = False

    forward = Tap.forward
    extra_repr = Tap.extra_repr


def _chain_op(gm: fx.GraphModule, node: fx.Node) -> tuple[str, Any, tuple, dict] | None:
    """``node`` as a tap operation, if it is a channel-wise activation or pooling of its first
    argument with constant other arguments."""
    if node.op not in ("call_module", "call_function", "call_method") or not node.args:
        return None
    rest = tuple(node.args[1:])
    has_nodes = []
    fx.node.map_arg((rest, node.kwargs), lambda n: has_nodes.append(n))
    if has_nodes or not isinstance(node.args[0], fx.Node):
        return None
    if node.op == "call_module":
        m = gm.get_submodule(node.target)
        if isinstance(m, _ACT_MODULES + _POOL_MODULES) and not any(
            True for _ in m.parameters()
        ):
            return ("module", copy.deepcopy(m), (), {})
        return None
    if node.op == "call_function" and node.target in _ACT_FUNCTIONS | _POOL_FUNCTIONS:
        return ("function", node.target, rest, dict(node.kwargs))
    if node.op == "call_method" and node.target in _ACT_METHODS:
        return ("method", node.target, rest, dict(node.kwargs))
    return None


def _is_relu(op: tuple[str, Any, tuple, dict]) -> bool:
    kind, target, _, _ = op
    if kind == "module":
        return isinstance(target, _RELU_LIKE)
    if kind == "function":
        return target in (F.relu, torch.relu, F.relu6, torch.nn.functional.relu_)
    return target in ("relu", "relu_")


def _skip_back(node: fx.Node, gm: fx.GraphModule) -> fx.Node:
    """From a consumer's input back over flatten, dropout and identity (they stay after the
    tap)."""
    while isinstance(node, fx.Node) and node.args and isinstance(node.args[0], fx.Node):
        if node.op == "call_module":
            m = gm.get_submodule(node.target)
            if not isinstance(m, (nn.Flatten, *_PASS_MODULES)):
                break
        elif node.op == "call_function":
            if node.target not in _FLATTEN_FUNCTIONS | _PASS_FUNCTIONS:
                break
        elif node.op == "call_method":
            if node.target not in _FLATTEN_METHODS | _PASS_METHODS:
                break
        else:
            break
        node = node.args[0]
    return node


def _insert_taps(inferred: InferredSlots) -> dict[str, Tap]:
    """Rewrite the graph with one tap per consumed node; return the first tap of each slot."""
    gm = inferred.graph_module
    graph = gm.graph
    taps: dict[fx.Node, Tap] = {}
    first: dict[str, Tap] = {}
    count = 0
    for slot in inferred.slots:
        for c_in in inferred.consumer_inputs[slot.name]:
            end = _skip_back(c_in, gm)
            if end not in taps:
                chain: list[fx.Node] = []
                cur = end
                op = _chain_op(gm, cur)
                while op is not None and (not chain or len(cur.users) == 1):
                    chain.insert(0, cur)
                    cur = cur.args[0]
                    op = _chain_op(gm, cur)
                ops = [_chain_op(gm, n) for n in chain]
                tap = (ReLUTap if ops and _is_relu(ops[0]) else Tap)(ops)
                target = f"structlab_taps.tap{count}"
                count += 1
                gm.add_submodule(target, tap)
                source = chain[0].args[0] if chain else end
                with graph.inserting_after(end):
                    new = graph.call_module(target, (source,))
                end.replace_all_uses_with(new, delete_user_cb=lambda u, new=new: u is not new)
                for n in reversed(chain):
                    graph.erase_node(n)
                taps[end] = tap
                # consumer-input nodes of later slots that were erased map to the tap output
                for name, nodes in inferred.consumer_inputs.items():
                    inferred.consumer_inputs[name] = [new if n is end else n for n in nodes]
                taps[new] = tap
            first.setdefault(slot.name, taps[end])
    graph.lint()
    gm.recompile()
    return first


# ----------------------------------------------------------------------------- the model
class GraphModel(ResizableModel):
    """A traced copy of the call graph of ``model`` with inferred slots and activation taps.

    It shares its modules with ``model`` (the operators resize them in place, so ``model``
    follows, but ``model``'s own forward has no taps). ``layer_slots()`` returns the slots
    inferred by :func:`infer_slots` unless ``slots`` overrides them: a callable taking the
    wrapped model (e.g. ``lambda m: hand_written.layer_slots()``) for hand-written
    declarations.

    Args:
        model: the network.
        example_inputs: input(s) of representative shapes (one small batch).
        slots: optional override of the inferred slots.
    """

    def __init__(
        self,
        model: nn.Module,
        example_inputs: torch.Tensor | Sequence[torch.Tensor],
        slots: Callable[[nn.Module], list[LayerSlot]] | None = None,
    ) -> None:
        super().__init__()
        inferred = infer_slots(model, example_inputs)
        taps = _insert_taps(inferred)
        for s in inferred.slots:
            s.activation = taps.get(s.name)
        self.graph_module = inferred.graph_module
        self.frozen = inferred.frozen
        self._slots = inferred.slots
        self._override = slots
        self.source_type = type(model).__name__

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.graph_module(*args, **kwargs)

    def layer_slots(self) -> list[LayerSlot]:
        """The slots in forward order (by their first producer)."""
        if self._override is not None:
            return self._override(self)
        return list(self._slots)

    def single_slots(self) -> list[LayerSlot]:
        """The slots with one producer (not a residual stream): what the growth
        initializations (which read one producer's inputs) and DYNO's INIT_GROW can grow."""
        return [s for s in self.layer_slots() if len(s.producers) == 1]

    def gradient_slots(self) -> list[LayerSlot]:
        """The slots with one producer and one consumer: what the gradient triggers and GradMax
        measure."""
        return [s for s in self.single_slots() if len(s.consumers) == 1]


def resizable(
    model: nn.Module, example_inputs: torch.Tensor | Sequence[torch.Tensor]
) -> GraphModel:
    """``GraphModel(model, example_inputs)``: ``model`` with inferred slots, ready for every
    structural operator of structlab (see :class:`GraphModel`)."""
    return GraphModel(model, example_inputs)
