"""Hierarchical Residual Network (H-ResNet) of Noisy Heuristics NAS (eq. 1-2, Fig. 2).

Every linear connection ``f`` (a dense layer or a 3x3 convolution) may carry a residual branch:

* eq. 1: ``f(x) = W(x) + Re(x)``, ``Re(x) = W_2(sigma(W_1(x)))``;
* eq. 2: ``Re(x) = f_2(sigma(f_1(x)))``, where ``f_1`` and ``f_2`` are connections of the same
  kind, so they may carry branches of their own, recursively.

A branch's hidden width ``H`` is the number of neurons (channels) of ``sigma(f_1(x))``. The
structural operations are network morphisms:

* :func:`add_residual` adds a branch whose ``f_2`` is zero, so ``f`` computes exactly what it did
  (the paper's "adding a layer");
* :func:`remove_residual` removes a branch (exact when its output is zero);
* :func:`add_neurons` widens a branch with zero fan-out (exact), creating the branch when the
  connection has none; :func:`remove_neurons` narrows it (exact for units with zero fan-out).

The hidden units of a branch are one :class:`~structlab.models.LayerSlot` (:meth:`HRN.layer_slots`):
its producers are every module writing into ``f_1``'s output (the shortcut ``W`` of ``f_1`` and,
recursively, the ``f_2`` shortcuts of the branches nested in ``f_1``), its consumers every module
reading ``f_2``'s input. Width changes are therefore done by :func:`structlab.operators.add_units`
and :func:`~structlab.operators.remove_units`, which rebuild each parameter and carry the
optimizer's per-parameter state by index (:func:`structlab.operators.replace_parameter`: kept
units keep Adam's ``exp_avg`` / ``exp_avg_sq`` or SGD's ``momentum_buffer``, new units start at
zero). Adding or removing a whole branch adds its parameters to, or drops them (and their state)
from, the optimizer (:func:`add_to_optimizer`, :func:`remove_from_optimizer`).

Biases live where they are not redundant: in the shortcut of the root connections and of every
``f_1`` (the hidden neurons' biases); ``f_2`` connections have none, so a branch whose ``f_2``
weights are zero outputs exactly zero. With ``batchnorm=True`` every shortcut is followed by a
BatchNorm (the authors' convolutional networks, appendix C) and the convolutions have no bias;
a new branch is then still exactly zero (``BN(0) = beta = 0`` in both modes).

Choices where the paper is silent: a new branch's ``f_1`` gets PyTorch's default uniform
initialisation ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` and zero biases (the authors' code); in a
convolutional branch ``f_1`` carries the stride of its connection and ``f_2`` stride 1 (the
authors' code); a hidden layer may apply dropout before its activation (appendix C, ``p = 0.1``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from structlab.models.slots import Consumer, LayerSlot, ResizableModel
from structlab.operators.units import _uniform, add_units, remove_units

__all__ = [
    "ACTIVATIONS",
    "HiddenActivation",
    "HConnection",
    "Residual",
    "HRN",
    "add_residual",
    "remove_residual",
    "add_neurons",
    "remove_neurons",
    "add_to_optimizer",
    "remove_from_optimizer",
    "optimizer_state",
    "load_optimizer_state",
    "layer_threshold",
    "should_add_layer",
]

#: Activations of the hidden layers (and between the stages of a model), by name.
ACTIVATIONS: dict[str, Any] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "leaky_relu": lambda: nn.LeakyReLU(0.1),
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "identity": nn.Identity,
}


def _activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose from {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def layer_threshold(in_size: int, out_size: int) -> float:
    """``M = (I * O^2)^(1/3)``: the hidden width above which a residual layer's inner
    connections become hierarchical ("Where to add new layers?").

    ``I`` and ``O`` are the input and output sizes (features or channels) of the connection that
    owns the residual layer. (The authors' code uses the symmetric ``max(I, O) min(I, O)^2``;
    the paper's formula is used here.)
    """
    if in_size < 1 or out_size < 1:
        raise ValueError(f"sizes must be positive, got I={in_size}, O={out_size}")
    return float(in_size * out_size**2) ** (1.0 / 3.0)


def should_add_layer(hidden: int, in_size: int, out_size: int) -> bool:
    """Whether ``H > (I * O^2)^(1/3)``, decided in integers (``H^3 > I O^2``) so that the rule
    fires exactly above the threshold, also when ``M`` is an integer that floating point would
    round down (``(8 * 8^2)^(1/3) = 7.999...``)."""
    if in_size < 1 or out_size < 1:
        raise ValueError(f"sizes must be positive, got I={in_size}, O={out_size}")
    return int(hidden) ** 3 > int(in_size) * int(out_size) ** 2


class HiddenActivation(nn.Module):
    """``sigma(dropout(x))`` for the hidden units of a branch (dropout before the activation, as
    the authors' ``DropoutActivation``); a forward hook on it sees the activations ``sigma_i`` of
    the importance score."""

    def __init__(self, activation: str = "relu", dropout: float = 0.0, kind: str = "dense"):
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.name = activation
        self.p = float(dropout)
        self.dropout = (
            (nn.Dropout2d(dropout) if kind == "conv" else nn.Dropout(dropout))
            if dropout > 0
            else nn.Identity()
        )
        self.act = _activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.dropout(x))


class HConnection(nn.Module):
    """One connection ``f(x) = W(x) [+ Re(x)]`` of an H-ResNet (eq. 1).

    Args:
        in_size, out_size: features (``kind="dense"``) or channels (``kind="conv"``).
        kind: ``"dense"`` (``nn.Linear``) or ``"conv"`` (3x3 ``nn.Conv2d``, padding 1).
        stride: stride of the convolution (conv only).
        bias: give the shortcut a bias (ignored with ``batchnorm``: BatchNorm's shift is the bias).
        batchnorm: follow the shortcut by a BatchNorm.
        growable: whether the search may add neurons here (creating a branch when there is none).
        activation, dropout: of the hidden layers of branches created in this connection.

    ``residual`` is ``None`` (a plain linear connection) or a :class:`Residual`.
    """

    def __init__(
        self,
        in_size: int,
        out_size: int,
        *,
        kind: str = "dense",
        stride: int = 1,
        bias: bool = True,
        batchnorm: bool = False,
        growable: bool = True,
        activation: str = "relu",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if kind not in ("dense", "conv"):
            raise ValueError(f"kind must be 'dense' or 'conv', got {kind!r}")
        if in_size < 1 or out_size < 1:
            raise ValueError(f"sizes must be positive, got {in_size} -> {out_size}")
        if stride < 1 or (kind == "dense" and stride != 1):
            raise ValueError(f"stride must be 1 for dense and >= 1 for conv, got {stride}")
        _activation(activation)
        self.kind = kind
        self.stride = int(stride)
        self.growable = bool(growable)
        self.activation = activation
        self.dropout = float(dropout)
        use_bias = bias and not batchnorm
        if kind == "dense":
            self.shortcut: nn.Module = nn.Linear(in_size, out_size, bias=use_bias)
            self.norm = nn.BatchNorm1d(out_size) if batchnorm else None
        else:
            self.shortcut = nn.Conv2d(in_size, out_size, 3, stride=stride, padding=1, bias=use_bias)
            self.norm = nn.BatchNorm2d(out_size) if batchnorm else None
        self.register_module("residual", None)

    @property
    def in_size(self) -> int:
        return int(self.shortcut.weight.shape[1])

    @property
    def out_size(self) -> int:
        return int(self.shortcut.weight.shape[0])

    @property
    def width(self) -> int:
        """Hidden width of the residual branch (0 without one)."""
        return 0 if self.residual is None else self.residual.width

    @property
    def depth(self) -> int:
        """Layers on the longest path through the connection: 1, or ``depth(f1) + depth(f2)``."""
        if self.residual is None:
            return 1
        return max(1, self.residual.f1.depth + self.residual.f2.depth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.shortcut(x)
        if self.norm is not None:
            y = self.norm(y)
        if self.residual is not None:
            y = y + self.residual(x)
        return y

    def spec(self) -> dict[str, Any]:
        """The architecture of the connection as plain data (see :meth:`HRN.from_spec`)."""
        res = self.residual
        return {
            "kind": self.kind,
            "in": self.in_size,
            "out": self.out_size,
            "stride": self.stride,
            "bias": self.shortcut.bias is not None,
            "batchnorm": self.norm is not None,
            "growable": self.growable,
            "activation": self.activation,
            "dropout": self.dropout,
            "residual": None
            if res is None
            else {
                "activation": res.act.name,
                "dropout": res.act.p,
                "f1": res.f1.spec(),
                "f2": res.f2.spec(),
            },
        }

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> HConnection:
        conn = cls(
            spec["in"],
            spec["out"],
            kind=spec["kind"],
            stride=spec["stride"],
            bias=spec["bias"],
            batchnorm=spec["batchnorm"],
            growable=spec["growable"],
            activation=spec["activation"],
            dropout=spec["dropout"],
        )
        if spec["residual"] is not None:
            r = spec["residual"]
            conn.residual = Residual(
                HConnection.from_spec(r["f1"]),
                HiddenActivation(r["activation"], r["dropout"], spec["kind"]),
                HConnection.from_spec(r["f2"]),
            )
        return conn

    def extra_repr(self) -> str:
        return f"{self.kind}, {self.in_size} -> {self.out_size}, width={self.width}"


class Residual(nn.Module):
    """``Re(x) = f_2(sigma(f_1(x)))`` (eq. 2): the branch of a connection, with hidden width
    ``f_1.out_size``."""

    def __init__(self, f1: HConnection, act: HiddenActivation, f2: HConnection) -> None:
        super().__init__()
        if f1.out_size != f2.in_size:
            raise ValueError(f"f1 outputs {f1.out_size} units but f2 reads {f2.in_size}")
        self.f1, self.act, self.f2 = f1, act, f2

    @property
    def width(self) -> int:
        return self.f1.out_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.f2(self.act(self.f1(x)))


def _output_modules(conn: HConnection) -> list[tuple[nn.Module, nn.Module | None]]:
    """(module, norm) pairs whose output rows are ``conn``'s output units."""
    out = [(conn.shortcut, conn.norm)]
    if conn.residual is not None:
        out += _output_modules(conn.residual.f2)
    return out


def _input_modules(conn: HConnection) -> list[nn.Module]:
    """Modules whose input columns are ``conn``'s input units."""
    out = [conn.shortcut]
    if conn.residual is not None:
        out += _input_modules(conn.residual.f1)
    return out


def _branch_slot(name: str, res: Residual, kind: str) -> LayerSlot:
    producers = _output_modules(res.f1)
    return LayerSlot(
        name=name,
        producers=[m for m, _ in producers],
        norms=[n for _, n in producers if n is not None],
        consumers=[Consumer(m) for m in _input_modules(res.f2)],
        activation=res.act,
        kind=kind,
    )


class HRN(ResizableModel):
    """A Hierarchical Residual Network: a chain of :class:`HConnection` (``body``), with an
    optional activation ``between`` consecutive connections, and for convolutional networks a
    global average pooling and a dense ``head``.

    Build one with :meth:`dense` or :meth:`conv`. Connections and branches are named by their
    module paths (``"body.0"``, ``"body.0.residual"``, ``"body.0.residual.f1"``, ...).
    """

    def __init__(
        self,
        body: Sequence[HConnection],
        *,
        head: HConnection | None = None,
        between: str | None = None,
    ) -> None:
        super().__init__()
        body = list(body)
        if not body:
            raise ValueError("an HRN needs at least one connection")
        kinds = {c.kind for c in body}
        if len(kinds) != 1:
            raise ValueError("the body's connections must all be dense or all conv")
        self.kind = kinds.pop()
        if self.kind == "conv" and head is None:
            raise ValueError("a convolutional HRN needs a dense head after the pooling")
        if head is not None and head.kind != "dense":
            raise ValueError("the head must be a dense connection")
        for a, b in zip(body[:-1], body[1:]):
            if a.out_size != b.in_size:
                raise ValueError(f"connections do not chain: {a.out_size} -> {b.in_size}")
        if head is not None and head.in_size != body[-1].out_size:
            raise ValueError(f"head reads {head.in_size} but the body outputs {body[-1].out_size}")
        self.between_name = between
        self.body = nn.ModuleList(body)
        self.register_module("head", head)
        self.between = _activation(between) if between else nn.Identity()

    # ------------------------------------------------------------------ construction
    @classmethod
    def dense(
        cls,
        in_features: int,
        out_features: int,
        *,
        hidden: int | Sequence[int] = 0,
        activation: str = "relu",
        dropout: float = 0.0,
        batchnorm: bool = False,
        between: str | None = "relu",
    ) -> HRN:
        """A dense H-ResNet ``in_features -> out_features``; the input is flattened.

        ``hidden`` is the width of the root connection's branch (``0``: a linear model, the
        paper's smallest starting point), or a list of widths for a chain of connections
        ``in -> widths... -> out`` (an MLP whose every layer may grow a branch), with
        ``between`` as the activation between them.
        """
        if isinstance(hidden, int):
            sizes, widths = [in_features, out_features], [hidden]
        else:
            sizes, widths = [in_features, *hidden, out_features], [0] * (len(hidden) + 1)
        body = [
            HConnection(a, b, batchnorm=batchnorm, activation=activation, dropout=dropout)
            for a, b in zip(sizes[:-1], sizes[1:])
        ]
        model = cls(body, between=between if len(body) > 1 else None)
        for i, w in enumerate(widths):
            if w:
                add_residual(model, f"body.{i}", w, zero_output=False)
        return model

    @classmethod
    def conv(
        cls,
        in_channels: int,
        num_classes: int,
        *,
        channels: Sequence[int] = (16, 32, 64),
        strides: Sequence[int] | None = None,
        hidden: int = 0,
        activation: str = "relu",
        dropout: float = 0.0,
        batchnorm: bool = True,
        between: str | None = None,
        grow_stem: bool = False,
        grow_head: bool = True,
    ) -> HRN:
        """A convolutional H-ResNet of 3x3 convolutions (appendix D): a stem
        ``in_channels -> channels[0]``, stages ``channels[i] -> channels[i+1]`` with
        ``strides[i]`` (default 2 each), global average pooling and a dense head.

        Every stage (and the head when ``grow_head``) is growable and starts with a branch of
        ``hidden`` channels (``0``: none). ``between=None`` (the authors' backbone: no
        activation between stages, all non-linearity inside branches) or e.g. ``"relu"``.
        """
        channels = list(channels)
        if len(channels) < 1:
            raise ValueError("channels needs at least one entry")
        strides = [2] * (len(channels) - 1) if strides is None else list(strides)
        if len(strides) != len(channels) - 1:
            raise ValueError(f"need {len(channels) - 1} strides, got {len(strides)}")
        common = dict(kind="conv", batchnorm=batchnorm, activation=activation, dropout=dropout)
        body = [HConnection(in_channels, channels[0], growable=grow_stem, **common)]
        body += [
            HConnection(a, b, stride=s, **common)
            for a, b, s in zip(channels[:-1], channels[1:], strides)
        ]
        head = HConnection(
            channels[-1], num_classes, growable=grow_head, activation=activation, dropout=dropout
        )
        model = cls(body, head=head, between=between)
        if hidden:
            for path, conn in model.connections():
                if conn.growable:
                    add_residual(model, path, hidden, zero_output=False)
        return model

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "dense":
            x = x.flatten(1)
        for i, conn in enumerate(self.body):
            if i > 0:
                x = self.between(x)
            x = conn(x)
        if self.head is not None:
            x = self.between(x)
            x = x.mean(dim=(2, 3)) if self.kind == "conv" else x
            x = self.head(x)
        return x

    # ------------------------------------------------------------------ structure
    def connections(self) -> list[tuple[str, HConnection]]:
        """Every connection with its path, outer before inner (module order)."""
        return [(n, m) for n, m in self.named_modules() if isinstance(m, HConnection)]

    def branches(self) -> list[tuple[str, Residual]]:
        """Every residual branch with its path (``"<connection>.residual"``)."""
        return [(n, m) for n, m in self.named_modules() if isinstance(m, Residual)]

    def connection(self, path: str) -> HConnection:
        module = self.get_submodule(path)
        if not isinstance(module, HConnection):
            raise KeyError(f"{path!r} is a {type(module).__name__}, not a connection")
        return module

    def branch(self, path: str) -> Residual:
        module = self.get_submodule(path)
        if not isinstance(module, Residual):
            raise KeyError(f"{path!r} is a {type(module).__name__}, not a residual branch")
        return module

    def has(self, path: str) -> bool:
        """Whether a module with this path exists (a branch may have been removed)."""
        try:
            self.get_submodule(path)
        except AttributeError:
            return False
        return True

    def growth_targets(self) -> list[str]:
        """Paths of the growable connections, where the growth phase may add neurons."""
        return [n for n, c in self.connections() if c.growable]

    def layer_slots(self) -> list[LayerSlot]:
        """One slot per residual branch (its hidden units), named by the branch's path."""
        return [
            _branch_slot(n, r, self.kind if self._in_body(n) else "dense")
            for n, r in self.branches()
        ]

    def _in_body(self, path: str) -> bool:
        return path.startswith("body.")

    def hidden_neurons(self) -> int:
        """Total hidden units over all branches."""
        return sum(r.width for _, r in self.branches())

    @property
    def depth(self) -> int:
        """Layers on the longest input-output path (the paper counts depth this way, Fig. 7)."""
        return sum(c.depth for c in self.body) + (self.head.depth if self.head is not None else 0)

    def describe(self) -> list[dict[str, Any]]:
        """The architecture as rows, one per connection: ``path``, ``level`` (nesting; 0 for the
        body and head), ``role`` (``"body"``, ``"head"``, ``"f1"``, ``"f2"``), ``kind``,
        ``in``, ``out``, ``width`` (hidden units of its branch, 0 without), ``growable``."""
        rows = []
        for path, conn in self.connections():
            parts = path.split(".")
            role = parts[-1] if parts[-1] in ("f1", "f2") else parts[0]
            rows.append(
                {
                    "path": path,
                    "level": parts.count("residual"),
                    "role": role,
                    "kind": conn.kind,
                    "in": conn.in_size,
                    "out": conn.out_size,
                    "width": conn.width,
                    "growable": conn.growable,
                }
            )
        return rows

    def architecture_text(self) -> str:
        """A text drawing: one line per connection, nested branches indented, hidden widths in
        brackets (``[H]``)."""
        lines = []

        def walk(conn: HConnection, label: str, indent: str) -> None:
            size = f"{conn.in_size}->{conn.out_size}"
            stride = f" /{conn.stride}" if conn.stride > 1 else ""
            lines.append(
                f"{indent}{label} {conn.kind} {size}{stride}"
                + (f"  + residual [{conn.width}]" if conn.residual is not None else "")
            )
            if conn.residual is not None:
                walk(conn.residual.f1, "f1", indent + "  | ")
                walk(conn.residual.f2, "f2", indent + "  | ")

        for i, conn in enumerate(self.body):
            walk(conn, f"body.{i}", "")
        if self.head is not None:
            lines.append("global average pool" if self.kind == "conv" else "")
            walk(self.head, "head", "")
        return "\n".join(line for line in lines if line)

    # ------------------------------------------------------------------ snapshots
    def spec(self) -> dict[str, Any]:
        """The architecture as plain data: rebuild with :meth:`from_spec`."""
        return {
            "body": [c.spec() for c in self.body],
            "head": None if self.head is None else self.head.spec(),
            "between": self.between_name,
        }

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> HRN:
        head = None if spec["head"] is None else HConnection.from_spec(spec["head"])
        return cls(
            [HConnection.from_spec(s) for s in spec["body"]], head=head, between=spec["between"]
        )

    def snapshot(self) -> dict[str, Any]:
        """Architecture and weights, on the CPU and picklable: ``{"spec", "state"}``."""
        return {
            "spec": self.spec(),
            "state": {k: v.detach().cpu().clone() for k, v in self.state_dict().items()},
        }

    @classmethod
    def from_snapshot(cls, snapshot: dict[str, Any]) -> HRN:
        model = cls.from_spec(snapshot["spec"])
        model.load_state_dict(snapshot["state"])
        return model

    def load_snapshot(self, snapshot: dict[str, Any]) -> None:
        """Replace this model's architecture and weights by ``snapshot``'s, in place (on the
        device of the current parameters). Optimizers over the old parameters must be rebuilt."""
        device = next(self.parameters()).device
        other = HRN.from_snapshot(snapshot).to(device)
        other.train(self.training)
        self.body, self.head = other.body, other.head
        self.between_name, self.between = other.between_name, other.between
        self.kind = other.kind


# ---------------------------------------------------------------------- optimizer helpers
def add_to_optimizer(
    optimizer: torch.optim.Optimizer | None, params: Iterable[nn.Parameter], group: int = 0
) -> None:
    """Append new parameters to ``optimizer.param_groups[group]``; their state is created at zero
    on the next step (Adam's moments and step, SGD's momentum)."""
    if optimizer is None:
        return
    held = {id(p) for g in optimizer.param_groups for p in g["params"]}
    optimizer.param_groups[group]["params"].extend(p for p in params if id(p) not in held)


def remove_from_optimizer(
    optimizer: torch.optim.Optimizer | None, params: Iterable[nn.Parameter]
) -> None:
    """Drop parameters (and their state) from ``optimizer``."""
    if optimizer is None:
        return
    gone = {id(p) for p in params}
    for g in optimizer.param_groups:
        g["params"] = [p for p in g["params"] if id(p) not in gone]
    for p in list(optimizer.state):
        if id(p) in gone:
            del optimizer.state[p]


def optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer's per-parameter state keyed by parameter name (CPU copies), picklable and
    independent of the order of the parameter groups (which morphisms change)."""
    names = {id(p): n for n, p in model.named_parameters()}
    state = {}
    for p, s in optimizer.state.items():
        if id(p) in names:
            state[names[id(p)]] = {
                k: v.detach().cpu().clone() if torch.is_tensor(v) else v for k, v in s.items()
            }
    return state


def load_optimizer_state(
    model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]
) -> None:
    """Restore :func:`optimizer_state` into ``optimizer`` over ``model``'s parameters (tensors
    shaped like their parameter go to its device; scalars such as Adam's ``step`` stay on the
    CPU, as PyTorch keeps them)."""
    for name, p in model.named_parameters():
        if name in state:
            optimizer.state[p] = {
                k: v.to(p.device) if torch.is_tensor(v) and v.shape == p.shape else v
                for k, v in state[name].items()
            }


# ---------------------------------------------------------------------- morphisms
def _branch_of(model: HRN, path: str) -> tuple[HConnection, Residual]:
    conn = model.connection(path)
    if conn.residual is None:
        raise ValueError(f"connection {path!r} has no residual branch")
    return conn, conn.residual


@torch.no_grad()
def add_residual(
    model: HRN,
    path: str,
    width: int,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    generator: torch.Generator | None = None,
    zero_output: bool = True,
) -> Residual:
    """Give connection ``path`` a residual branch of ``width`` hidden units (eq. 1-2).

    ``f_1`` gets PyTorch's default uniform weights (drawn from ``generator``) and zero biases;
    with ``zero_output`` (default) ``f_2``'s weights are zero, so the network computes exactly
    what it did (a network morphism); ``zero_output=False`` initialises ``f_2`` like ``f_1``
    (to build starting architectures). The branch's parameters join ``optimizer``.
    """
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f"width must be a positive integer, got {width!r}")
    conn = model.connection(path)
    if conn.residual is not None:
        raise ValueError(f"connection {path!r} already has a residual branch")
    batchnorm = conn.norm is not None
    f1 = HConnection(
        conn.in_size,
        width,
        kind=conn.kind,
        stride=conn.stride,
        bias=True,
        batchnorm=batchnorm,
        growable=False,
        activation=conn.activation,
        dropout=conn.dropout,
    )
    f2 = HConnection(
        width,
        conn.out_size,
        kind=conn.kind,
        stride=1,
        bias=False,
        batchnorm=batchnorm,
        growable=False,
        activation=conn.activation,
        dropout=conn.dropout,
    )
    ref = conn.shortcut.weight
    for f, zero in ((f1, False), (f2, zero_output)):
        w = f.shortcut.weight
        fan = math.prod(w.shape[1:])
        f.shortcut.weight.copy_(
            torch.zeros_like(w) if zero else _uniform(w.shape, fan, w, generator)
        )
        if f.shortcut.bias is not None:
            f.shortcut.bias.zero_()
    branch = Residual(f1, HiddenActivation(conn.activation, conn.dropout, conn.kind), f2)
    branch.to(device=ref.device, dtype=ref.dtype)
    branch.train(conn.training)
    conn.residual = branch
    add_to_optimizer(optimizer, branch.parameters())
    return branch


def remove_residual(
    model: HRN, path: str, *, optimizer: torch.optim.Optimizer | None = None
) -> Residual:
    """Remove the residual branch of connection ``path`` (with everything nested in it) and its
    parameters from ``optimizer``; returns the removed branch. Exact when its output is zero."""
    conn, branch = _branch_of(model, path)
    remove_from_optimizer(optimizer, branch.parameters())
    conn.residual = None
    return branch


def add_neurons(
    model: HRN,
    path: str,
    k: int,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    generator: torch.Generator | None = None,
) -> str:
    """Add ``k`` hidden neurons to the branch of connection ``path``, creating the branch (of
    width ``k``, :func:`add_residual`) when there is none. New neurons get default uniform fan-in
    from ``f_1``'s shortcut (zero rows in the nested ``f_2`` producers), zero bias and zero
    fan-out, so the function is unchanged. Returns the branch's path."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ValueError(f"k must be a non-negative integer, got {k!r}")
    conn = model.connection(path)
    if k == 0:
        return f"{path}.residual"
    if conn.residual is None:
        add_residual(model, path, k, optimizer=optimizer, generator=generator)
        return f"{path}.residual"
    slot = _branch_slot(f"{path}.residual", conn.residual, conn.kind)
    fan_in = ["default"] + ["zeros"] * (len(slot.producers) - 1)
    add_units(
        model, slot, k, fan_in=fan_in, fan_out="zeros", optimizer=optimizer, generator=generator
    )
    return slot.name


def remove_neurons(
    model: HRN,
    branch_path: str,
    indices: torch.Tensor | Sequence[int],
    *,
    optimizer: torch.optim.Optimizer | None = None,
) -> bool:
    """Remove hidden neurons ``indices`` of the branch ``branch_path``; removing all of them
    removes the branch (:func:`remove_residual`). Returns whether the branch was removed."""
    if not branch_path.endswith(".residual"):
        raise ValueError(f"not a branch path: {branch_path!r} (expected '<connection>.residual')")
    conn_path = branch_path[: -len(".residual")]
    conn, branch = _branch_of(model, conn_path)
    idx = torch.as_tensor(indices, dtype=torch.long).reshape(-1).cpu()
    if idx.numel() == 0:
        return False
    if torch.unique(idx).numel() >= branch.width:
        remove_residual(model, conn_path, optimizer=optimizer)
        return True
    remove_units(model, _branch_slot(branch_path, branch, conn.kind), idx, optimizer=optimizer)
    return False
