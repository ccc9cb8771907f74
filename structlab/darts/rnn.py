"""The DARTS recurrent search space (Liu et al. 2019, §2.1 and appendix A.1.2; code ``rnn/``).

DARTS searches the *cell* of a one-layer recurrent language model. The cell at time ``t`` reads
the word embedding ``x_t`` and the previous hidden state ``h_{t-1}`` and builds ``1 + 8`` states:

* node 0, ``s_0 = h_{t-1} + c_0 * (tanh(h_0) - h_{t-1})`` with ``[c_0, h_0] = [x_t, h_{t-1}] W_0``
  and ``c_0 = sigmoid(.)``: a highway-style gate, fixed (not searched);
* node ``i = 1..8`` receives an edge from every earlier node ``j < i``: the edge maps ``s_j`` by
  the node's matrix, ``[c, h] = s_j W_i``, and mixes the primitives ``f`` of
  :data:`RNN_PRIMITIVES` (``none, tanh, relu, sigmoid, identity``) through the same gate,
  ``s_j + c * (f(h) - s_j)``, each weighted by the activated alpha of (edge, f); ``none`` adds
  nothing. ``s_i`` is the sum over its ``i`` incoming edges;
* the cell's output, which is also ``h_t``, is the mean of nodes 1..8.

Edges are numbered node by node: node ``i`` and predecessor ``j`` is edge ``i (i - 1) / 2 + j``
(:func:`rnn_edge`), 36 edges in all, so the architecture is one ``alpha`` of shape ``[36, 5]``.
The derived cell (:func:`project_rnn`, the projection Pi_S of this space) keeps, for every node,
the single strongest non-``none`` (operation, predecessor) pair, as DARTS's ``genotype()`` does;
a discrete cell is a :class:`RNNGenotype` such as DARTS's published :data:`DARTS_V1` (first
order) and :data:`DARTS_V2` (second order, the cell of DARTS's Table 2).

The model around the cell (:class:`RNNSupernet` for the search, :class:`RNNEval` for a genotype)
is DARTS's: an embedding whose matrix is tied to the decoder, embedding dropout (whole words),
locked (variational) dropout on the embeddings, on the inputs and hidden states of the cell and
on its outputs, a log-softmax over the vocabulary. :class:`LanguageTask` is the search task of
:mod:`structlab.darts` (one hidden state per stream) and :func:`train_language_model` the
evaluation phase (SGD switching to averaged SGD, gradient clipping 0.25, variable BPTT).

Shapes: tokens ``[T, B]`` (time-major), hidden ``[B, nhid]``, log-probabilities ``[T, B, V]``.

Deviations from DARTS's code: the cell's inner loop is vectorised (same function; the input
part of ``W_0`` is applied to the whole sequence at once); the hidden state is ``[B, nhid]``
instead of a list of ``[1, B, nhid]``; alpha is an ``nn.Parameter`` (DARTS keeps it outside
``parameters()``: use :meth:`RNNSupernet.weight_parameters` for the weight optimiser);
:class:`RNNSupernet` can drop its parameter-free batch norm (``batchnorm=False``, used by the
tests to compare it with :class:`RNNEval`); the evaluation keeps the best weights in memory rather
than on disk and raises on a non-finite loss instead of rolling back to the last checkpoint.

>>> import torch
>>> model = RNNSupernet(ntoken=50, ninp=16, nhid=16)
>>> log_probs, hidden = model(torch.randint(0, 50, (7, 3)))
>>> tuple(log_probs.shape), tuple(hidden.shape), tuple(model.arch_parameters()[0].shape)
((7, 3, 50), (3, 16), (36, 5))
>>> len(model.genotype().recurrent)
8
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from structlab.data.text import Corpus, batchify, get_batch

__all__ = [
    "DARTS_V1",
    "DARTS_V2",
    "RNN_EDGES",
    "RNN_PRIMITIVES",
    "RNN_STEPS",
    "LanguageTask",
    "RNNEval",
    "RNNGenotype",
    "RNNSupernet",
    "evaluate_perplexity",
    "genotype_from_binary",
    "genotype_to_binary",
    "project_rnn",
    "rnn_edge",
    "train_language_model",
]

RNN_PRIMITIVES = ["none", "tanh", "relu", "sigmoid", "identity"]
RNN_STEPS = 8
RNN_EDGES = RNN_STEPS * (RNN_STEPS + 1) // 2  # 36
INITRANGE = 0.04  # DARTS's uniform initialisation of every weight


class RNNGenotype(NamedTuple):
    """A discrete recurrent cell: ``recurrent[i - 1] = (operation, predecessor)`` of node ``i``
    and the nodes whose mean is the output (``concat``, nodes 1..8 in DARTS)."""

    recurrent: list[tuple[str, int]]
    concat: tuple[int, ...]


#: Liu et al. 2019, first-order search (``genotypes.py`` of quark0/darts ``rnn/``).
DARTS_V1 = RNNGenotype(
    recurrent=[("relu", 0), ("relu", 1), ("tanh", 2), ("relu", 3), ("relu", 4),
               ("identity", 1), ("relu", 5), ("relu", 1)],
    concat=tuple(range(1, 9)))
#: Liu et al. 2019, second-order search: the cell of their Table 2 (test perplexity 55.7).
DARTS_V2 = RNNGenotype(
    recurrent=[("sigmoid", 0), ("relu", 1), ("relu", 1), ("identity", 1), ("tanh", 2),
               ("sigmoid", 5), ("tanh", 3), ("relu", 5)],
    concat=tuple(range(1, 9)))

_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "tanh": torch.tanh,
    "relu": torch.relu,
    "sigmoid": torch.sigmoid,
    "identity": lambda x: x,
}


def rnn_edge(node: int, prev: int) -> int:
    """Row of alpha for the edge from state ``prev`` to node ``node`` (``0 <= prev < node``)."""
    if not 1 <= node <= RNN_STEPS or not 0 <= prev < node:
        raise ValueError(f"no edge from {prev} to node {node} (nodes 1..{RNN_STEPS})")
    return node * (node - 1) // 2 + prev


# ---------------------------------------------------------------------------------------------
# Projection and genotypes
# ---------------------------------------------------------------------------------------------

def project_rnn(weights: torch.Tensor,
                primitives: Sequence[str] = tuple(RNN_PRIMITIVES)) -> torch.Tensor:
    """Pi_S of the recurrent space: binary ``[36, P]`` with one 1 per node.

    For node ``i`` the rows of its ``i`` incoming edges are searched for the largest weight of
    a non-``none`` operation; that (edge, operation) is 1, every other entry 0. Ties go to the
    earliest predecessor, then the earliest operation, as DARTS's ``genotype()`` breaks them.
    The result is a fixed point: ``project_rnn(project_rnn(w)) == project_rnn(w)``.
    """
    if weights.shape != (RNN_EDGES, len(primitives)):
        raise ValueError(f"RNN weights must be [{RNN_EDGES}, {len(primitives)}], got "
                         f"{tuple(weights.shape)}")
    with torch.no_grad():
        keep = [k for k, name in enumerate(primitives) if name != "none"]
        out = torch.zeros_like(weights)
        for node in range(1, RNN_STEPS + 1):
            start = rnn_edge(node, 0)
            block = weights[start:start + node][:, keep]  # [node, P - 1]
            flat = int(torch.argmax(block.reshape(-1)))  # first maximum: lowest j, then k
            out[start + flat // len(keep), keep[flat % len(keep)]] = 1
    return out


def genotype_from_binary(binary: torch.Tensor,
                         primitives: Sequence[str] = tuple(RNN_PRIMITIVES)) -> RNNGenotype:
    """The :class:`RNNGenotype` of a projected ``[36, P]`` (one non-``none`` 1 per node)."""
    recurrent = []
    for node in range(1, RNN_STEPS + 1):
        start = rnn_edge(node, 0)
        hits = torch.nonzero(binary[start:start + node] > 0.5).tolist()
        hits = [(j, k) for j, k in hits if primitives[k] != "none"]
        if len(hits) != 1:
            raise ValueError(f"node {node} has {len(hits)} active operations; project first")
        j, k = hits[0]
        recurrent.append((primitives[k], j))
    return RNNGenotype(recurrent=recurrent, concat=tuple(range(1, RNN_STEPS + 1)))


def genotype_to_binary(genotype: RNNGenotype,
                       primitives: Sequence[str] = tuple(RNN_PRIMITIVES)) -> torch.Tensor:
    """The binary ``[36, P]`` encoding of an 8-node genotype (the inverse of
    :func:`genotype_from_binary`)."""
    if len(genotype.recurrent) != RNN_STEPS:
        raise ValueError(f"the search space has {RNN_STEPS} nodes, the genotype "
                         f"{len(genotype.recurrent)}")
    out = torch.zeros(RNN_EDGES, len(primitives))
    for node, (name, prev) in enumerate(genotype.recurrent, start=1):
        out[rnn_edge(node, prev), list(primitives).index(name)] = 1
    return out


# ---------------------------------------------------------------------------------------------
# Dropout helpers (AWD-LSTM, as DARTS uses them)
# ---------------------------------------------------------------------------------------------

def _mask(shape: Sequence[int], p: float, like: torch.Tensor) -> torch.Tensor:
    """A {0, 1/(1-p)} mask: inverted dropout with keep probability ``1 - p``."""
    return like.new_empty(shape).bernoulli_(1 - p).div_(1 - p)


def _locked_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """One dropout mask per sequence, shared over time: ``x [T, B, D]``."""
    if not training or p <= 0:
        return x
    return x * _mask((1, x.size(1), x.size(2)), p, x)


def _embedded_dropout(weight: torch.Tensor, tokens: torch.Tensor, p: float,
                      training: bool) -> torch.Tensor:
    """Embedding lookup with whole words dropped (rows of the matrix zeroed) with prob. ``p``."""
    if training and p > 0:
        weight = weight * _mask((weight.size(0), 1), p, weight)
    return F.embedding(tokens, weight)


# ---------------------------------------------------------------------------------------------
# Cells
# ---------------------------------------------------------------------------------------------

class _Cell(nn.Module):
    """Node 0 and the per-node matrices shared by the search and the evaluation cells.

    ``W0`` ``[ninp + nhid, 2 nhid]`` maps ``[x_t, h_{t-1}]`` to ``[c_0, h_0]``; ``Ws[i - 1]``
    ``[nhid, 2 nhid]`` maps a predecessor of node ``i`` to its ``[c, h]``.
    """

    def __init__(self, ninp: int, nhid: int, steps: int, dropouth: float, dropoutx: float):
        super().__init__()
        self.ninp, self.nhid, self.steps = ninp, nhid, steps
        self.dropouth, self.dropoutx = dropouth, dropoutx
        self.W0 = nn.Parameter(torch.empty(ninp + nhid, 2 * nhid).uniform_(-INITRANGE,
                                                                           INITRANGE))
        self.Ws = nn.ParameterList([
            nn.Parameter(torch.empty(nhid, 2 * nhid).uniform_(-INITRANGE, INITRANGE))
            for _ in range(steps)])

    def forward(self, inputs: torch.Tensor, hidden: torch.Tensor,
                weights: torch.Tensor | None = None) -> torch.Tensor:
        """``inputs [T, B, ninp]``, ``hidden [B, nhid]`` -> outputs ``[T, B, nhid]`` (the last
        row is the new hidden state)."""
        T, B = inputs.shape[:2]
        if self.training and self.dropoutx > 0:
            inputs = inputs * _mask((1, B, self.ninp), self.dropoutx, inputs)
        h_mask = (_mask((B, self.nhid), self.dropouth, hidden)
                  if self.training and self.dropouth > 0 else None)
        x_part = inputs @ self.W0[:self.ninp]  # [T, B, 2 nhid], all time steps at once
        w_h = self.W0[self.ninp:]
        outputs = []
        for t in range(T):
            h_in = hidden if h_mask is None else hidden * h_mask
            c0, h0 = (x_part[t] + h_in @ w_h).split(self.nhid, dim=-1)
            s0 = torch.lerp(hidden, torch.tanh(h0), torch.sigmoid(c0))
            hidden = self.step(s0, h_mask, weights)
            outputs.append(hidden)
        return torch.stack(outputs)

    def step(self, s0: torch.Tensor, h_mask: torch.Tensor | None,
             weights: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError


class _GenotypeCell(_Cell):
    """The cell of a genotype: node ``i`` reads one predecessor through one activation."""

    def __init__(self, genotype: RNNGenotype, ninp: int, nhid: int, dropouth: float,
                 dropoutx: float):
        super().__init__(ninp, nhid, len(genotype.recurrent), dropouth, dropoutx)
        for node, (name, prev) in enumerate(genotype.recurrent, start=1):
            if name not in _ACTIVATIONS or not 0 <= prev < node:
                raise ValueError(f"node {node} of the genotype: ({name!r}, {prev}) is not an "
                                 f"activation of {list(_ACTIVATIONS)} from an earlier node")
        if not genotype.concat or not all(0 <= i <= len(genotype.recurrent)
                                          for i in genotype.concat):
            raise ValueError(f"concat {genotype.concat} names nodes that do not exist")
        self.genotype = RNNGenotype([tuple(g) for g in genotype.recurrent],
                                    tuple(genotype.concat))

    def step(self, s0, h_mask, weights):
        states = [s0]
        for i, (name, prev) in enumerate(self.genotype.recurrent):
            s_prev = states[prev]
            ch = (s_prev if h_mask is None else s_prev * h_mask) @ self.Ws[i]
            c, h = ch.split(self.nhid, dim=-1)
            states.append(torch.lerp(s_prev, _ACTIVATIONS[name](h), torch.sigmoid(c)))
        return torch.stack([states[i] for i in self.genotype.concat]).mean(0)


class _SearchCell(_Cell):
    """The mixed cell: every node sums its edges, every edge mixes the primitives.

    For node ``i`` with predecessors ``s_j`` (``[c_j, h_j] = s_j W_i``) and weights ``p_jk``:
    ``s_i = sum_j sum_{k != none} p_jk (s_j + c_j (f_k(h_j) - s_j))``, computed as
    ``sum_j (P_j s_j + c_j (F_j - P_j s_j))`` with ``P_j = sum_k p_jk``,
    ``F_j = sum_k p_jk f_k(h_j)``. DARTS normalises ``s_0`` and each ``s_i`` with one
    parameter-free batch norm (``batchnorm=True``).
    """

    def __init__(self, ninp: int, nhid: int, dropouth: float, dropoutx: float,
                 primitives: Sequence[str], batchnorm: bool):
        super().__init__(ninp, nhid, RNN_STEPS, dropouth, dropoutx)
        self.primitives = list(primitives)
        self.op_index = [k for k, n in enumerate(self.primitives) if n != "none"]
        self.op_fns = [_ACTIVATIONS[self.primitives[k]] for k in self.op_index]
        self.bn = nn.BatchNorm1d(nhid, affine=False) if batchnorm else None

    def step(self, s0, h_mask, weights):
        assert weights is not None
        probs = weights[:, self.op_index]  # [36, K], K = P - 1
        totals = probs.sum(1)  # [36]: P_j of every edge
        if self.bn is not None:
            s0 = self.bn(s0)
        states = s0.unsqueeze(0)  # [1, B, nhid], grows to [9, B, nhid]
        for i in range(RNN_STEPS):
            start = i * (i + 1) // 2
            masked = states if h_mask is None else states * h_mask
            c, h = (masked @ self.Ws[i]).split(self.nhid, dim=-1)  # [i + 1, B, nhid] each
            acts = torch.stack([fn(h) for fn in self.op_fns], dim=1)  # [i + 1, K, B, nhid]
            p = probs[start:start + i + 1].unsqueeze(1)  # [i + 1, 1, K]
            mix = torch.bmm(p, acts.flatten(2)).view_as(h)  # F_j = sum_k p_jk f_k(h_j)
            total = totals[start:start + i + 1].view(-1, 1, 1)
            # sum_k p_jk (s_j + c_j (f_k(h_j) - s_j)) = lerp(P_j s_j, F_j, c_j)
            s = torch.lerp(total * states, mix, torch.sigmoid(c)).sum(0)
            if self.bn is not None:
                s = self.bn(s)
            states = torch.cat([states, s.unsqueeze(0)])
        return states[1:].mean(0)


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------

class _LanguageModel(nn.Module):
    """Embedding (tied to the decoder), a recurrent cell, log-softmax: DARTS's ``RNNModel``."""

    cell: _Cell

    def __init__(self, ntoken: int, ninp: int, nhid: int, *, dropout: float, dropouth: float,
                 dropoutx: float, dropouti: float, dropoute: float):
        super().__init__()
        if ninp != nhid:
            raise ValueError(f"the decoder is tied to the embedding: ninp ({ninp}) must equal "
                             f"nhid ({nhid})")
        for name, p in [("dropout", dropout), ("dropouth", dropouth), ("dropoutx", dropoutx),
                        ("dropouti", dropouti), ("dropoute", dropoute)]:
            if not 0 <= p < 1:
                raise ValueError(f"{name} must be in [0, 1), got {p}")
        self.ntoken, self.ninp, self.nhid = ntoken, ninp, nhid
        self.dropout, self.dropouti, self.dropoute = dropout, dropouti, dropoute
        self.encoder = nn.Embedding(ntoken, ninp)
        self.decoder = nn.Linear(ninp, ntoken)
        self.decoder.weight = self.encoder.weight
        with torch.no_grad():
            self.encoder.weight.uniform_(-INITRANGE, INITRANGE)
            self.decoder.bias.zero_()

    def init_hidden(self, batch_size: int) -> torch.Tensor:
        """Zeros ``[batch_size, nhid]`` on the model's device."""
        w = self.encoder.weight
        return w.new_zeros(batch_size, self.nhid)

    def _cell_weights(self, weights: list[torch.Tensor] | None) -> torch.Tensor | None:
        return None

    def forward(self, tokens: torch.Tensor, hidden: torch.Tensor | None = None, *,
                return_h: bool = False, weights: list[torch.Tensor] | None = None) -> Any:
        """``tokens [T, B]`` and ``hidden [B, nhid]`` (zeros when None) ->
        ``(log_probs [T, B, ntoken], hidden [B, nhid])``; with ``return_h`` also the cell's
        outputs ``[T, B, nhid]`` before and after the output dropout (for DARTS's activation
        regularisers)."""
        if tokens.ndim != 2:
            raise ValueError(f"tokens must be [T, B], got {tuple(tokens.shape)}")
        if hidden is None:
            hidden = self.init_hidden(tokens.size(1))
        emb = _embedded_dropout(self.encoder.weight, tokens, self.dropoute, self.training)
        emb = _locked_dropout(emb, self.dropouti, self.training)
        raw = self.cell(emb, hidden, self._cell_weights(weights))
        out = _locked_dropout(raw, self.dropout, self.training)
        log_probs = F.log_softmax(self.decoder(out), dim=-1)
        if return_h:
            return log_probs, raw[-1], raw, out
        return log_probs, raw[-1]


class RNNSupernet(_LanguageModel):
    """The DARTS recurrent supernet; implements the Supernet protocol of :mod:`structlab.darts`.

    Args:
        ntoken: vocabulary size.
        ninp, nhid: embedding and hidden sizes (equal: the decoder is tied to the embedding;
            DARTS searches with 300).
        dropout, dropouth, dropoutx, dropouti, dropoute: output, hidden, cell-input, embedding
            (locked) and word dropout; DARTS's search values are the defaults.
        activation: ``"softmax"`` only; the thesis defines CRB (§5.2.5) for CNN cells.
        batchnorm: DARTS's parameter-free batch norm of the search cell's states.
        primitives: the operation names, columns of alpha.
    """

    def __init__(self, ntoken: int, ninp: int = 300, nhid: int = 300, *, dropout: float = 0.75,
                 dropouth: float = 0.25, dropoutx: float = 0.75, dropouti: float = 0.2,
                 dropoute: float = 0.0, activation: str = "softmax", batchnorm: bool = True,
                 primitives: Sequence[str] = tuple(RNN_PRIMITIVES)):
        if activation != "softmax":
            raise ValueError(f"activation {activation!r} is not defined for the RNN search space "
                             "(the thesis defines CRB for CNN cells only): use 'softmax'")
        unknown = [p for p in primitives if p != "none" and p not in _ACTIVATIONS]
        if unknown:
            raise ValueError(f"unknown RNN primitives {unknown}; known: {RNN_PRIMITIVES}")
        super().__init__(ntoken, ninp, nhid, dropout=dropout, dropouth=dropouth,
                         dropoutx=dropoutx, dropouti=dropouti, dropoute=dropoute)
        self.activation = activation
        self.primitives = list(primitives)
        self.cell = _SearchCell(ninp, nhid, dropouth, dropoutx, self.primitives, batchnorm)
        self.alpha = nn.Parameter(1e-3 * torch.randn(RNN_EDGES, len(self.primitives)))

    def arch_parameters(self) -> list[nn.Parameter]:
        """``[alpha]``, raw, ``[36, P]``."""
        return [self.alpha]

    def weight_parameters(self) -> list[nn.Parameter]:
        """Every trainable parameter but alpha (the tied embedding once)."""
        return [p for p in self.parameters() if p is not self.alpha]

    def activated_weights(self) -> list[torch.Tensor]:
        """``[softmax(alpha, dim=-1)]``, differentiable."""
        return [F.softmax(self.alpha, dim=-1)]

    def project(self, weights: list[torch.Tensor]) -> list[torch.Tensor]:
        """Pi_S: :func:`project_rnn` of each tensor."""
        return [project_rnn(w, self.primitives) for w in weights]

    def genotype(self) -> RNNGenotype:
        """The derived cell, from ``project(activated_weights())``."""
        return genotype_from_binary(self.project(self.activated_weights())[0], self.primitives)

    def prune_nonpositive(self) -> list[tuple[int, int, int]]:
        """Nothing to prune under softmax: always ``[]``."""
        return []

    def _cell_weights(self, weights):
        return (weights if weights is not None else self.activated_weights())[0]


class RNNEval(_LanguageModel):
    """The language model of a genotype (DARTS's ``RNNModel`` with ``DARTSCell``).

    DARTS evaluates with ``ninp = nhid = 850``, dropouts 0.75 / 0.25 / 0.75 / 0.2 / 0.1 (the
    defaults). Its parameters are named as :class:`RNNSupernet`'s, so :meth:`load_from_supernet`
    copies a supernet's weights into it.
    """

    def __init__(self, genotype: RNNGenotype, ntoken: int, ninp: int = 850, nhid: int = 850, *,
                 dropout: float = 0.75, dropouth: float = 0.25, dropoutx: float = 0.75,
                 dropouti: float = 0.2, dropoute: float = 0.1):
        super().__init__(ntoken, ninp, nhid, dropout=dropout, dropouth=dropouth,
                         dropoutx=dropoutx, dropouti=dropouti, dropoute=dropoute)
        self.cell = _GenotypeCell(genotype, ninp, nhid, dropouth, dropoutx)
        self.genotype = self.cell.genotype

    @torch.no_grad()
    def load_from_supernet(self, supernet: RNNSupernet) -> RNNEval:
        """Copy the embedding, decoder bias, ``W0`` and the node matrices of ``supernet``."""
        theirs = {k: v for k, v in supernet.state_dict().items()
                  if k != "alpha" and not k.startswith("cell.bn.")}
        self.load_state_dict(theirs)
        return self


# ---------------------------------------------------------------------------------------------
# Search task and evaluation
# ---------------------------------------------------------------------------------------------

def _nll(log_probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.nll_loss(log_probs.reshape(-1, log_probs.size(-1)), target.reshape(-1))


class LanguageTask:
    """The search task of the recurrent space: next-word NLL with a carried hidden state.

    ``loss(model, (input [T, B], target [T, B]), stream)`` runs the model from the stream's last
    hidden state, detached (truncated backpropagation through time), and keeps the new one:
    ``"train"`` (the weight step) and ``"val"`` (the alpha step) have separate states, as
    DARTS's ``hidden`` and ``hidden_valid``. A stream's state starts at zeros and starts again
    when the batch size, device or model changes. ``slowness`` adds DARTS's temporal activation
    regulariser ``beta * mean((h_t - h_{t-1})^2)`` to the train stream (DARTS: 1e-3); by default
    the loss is the plain NLL per token.
    """

    def __init__(self, batch_size: int = 256, bptt: int = 35, *, slowness: float = 0.0):
        if batch_size < 1 or bptt < 1:
            raise ValueError(f"batch_size and bptt must be positive, got {batch_size}, {bptt}")
        self.batch_size, self.bptt, self.slowness = batch_size, bptt, slowness
        self.hidden: dict[str, torch.Tensor] = {}
        self._model_id: dict[str, int] = {}

    def reset(self, stream: str | None = None) -> None:
        """Forget the hidden state of ``stream`` (of all streams when None)."""
        for key in [stream] if stream is not None else list(self.hidden):
            self.hidden.pop(key, None)
            self._model_id.pop(key, None)

    def _state(self, model: _LanguageModel, stream: str, batch_size: int,
               like: torch.Tensor) -> torch.Tensor:
        h = self.hidden.get(stream)
        if (h is None or h.size(0) != batch_size or h.device != like.device
                or h.dtype != like.dtype or self._model_id.get(stream) != id(model)):
            h = model.init_hidden(batch_size)
        return h.detach()

    def loss(self, model: _LanguageModel, batch: tuple[torch.Tensor, torch.Tensor],
             stream: str = "train") -> torch.Tensor:
        """Mean NLL per target token (plus the slowness term on the train stream)."""
        inputs, target = batch
        hidden = self._state(model, stream, inputs.size(1), model.encoder.weight)
        regularise = stream == "train" and self.slowness > 0
        if regularise:
            log_probs, new_hidden, raw, _ = model(inputs, hidden, return_h=True)
        else:
            log_probs, new_hidden = model(inputs, hidden)
        self.hidden[stream] = new_hidden.detach()
        self._model_id[stream] = id(model)
        loss = _nll(log_probs, target)
        if regularise:
            loss = loss + self.slowness * (raw[1:] - raw[:-1]).pow(2).mean()
        return loss

    def batches(self, source: torch.Tensor, *,
                device: str | torch.device | None = None) -> Iterator[tuple[torch.Tensor,
                                                                            torch.Tensor]]:
        """The ``(input, target)`` pairs of one pass over ``source``: a stream ``[N]`` is first
        cut into ``batch_size`` columns (:func:`batchify`); a ``[T, B]`` source is used as is."""
        data = batchify(source, self.batch_size, device) if source.ndim == 1 else source
        if device is not None:
            data = data.to(device)
        for i in range(0, data.size(0) - 1, self.bptt):
            yield get_batch(data, i, self.bptt)

    def fingerprint(self) -> dict[str, Any]:
        return {"task": "language", "batch_size": self.batch_size, "bptt": self.bptt,
                "slowness": self.slowness}


@torch.no_grad()
def evaluate_perplexity(model: _LanguageModel, data: torch.Tensor, batch_size: int = 10,
                        bptt: int = 35) -> float:
    """``exp`` of the mean NLL per predicted token of ``data`` (a stream ``[N]``, cut into
    ``batch_size`` columns, or an already batchified ``[T, B]``), in eval mode (no dropout),
    the hidden state carried across chunks as DARTS's ``evaluate``."""
    was_training = model.training
    model.eval()
    device = model.encoder.weight.device
    source = batchify(data, batch_size) if data.ndim == 1 else data
    source = source.to(device)
    hidden = model.init_hidden(source.size(1))
    total, count = 0.0, 0
    try:
        for i in range(0, source.size(0) - 1, bptt):
            inputs, target = get_batch(source, i, bptt)
            log_probs, hidden = model(inputs, hidden)
            total += float(_nll(log_probs, target)) * target.numel()
            count += target.numel()
    finally:
        model.train(was_training)
    return math.exp(total / count)


def _swap_in_averages(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Put ASGD's averaged weights into ``model``; returns the current ones for restoring."""
    saved = {}
    for p in model.parameters():
        state = optimizer.state.get(p, {})
        if "ax" in state:
            saved[p] = p.detach().clone()
            p.data.copy_(state["ax"])
    return saved


def train_language_model(
    model: _LanguageModel,
    corpus: Corpus,
    epochs: int,
    *,
    lr: float = 20.0,
    clip: float = 0.25,
    batch_size: int = 64,
    bptt: int = 35,
    eval_batch_size: int = 10,
    test_batch_size: int = 1,
    wdecay: float = 8e-7,
    slowness: float = 1e-3,
    activation_l2: float = 0.0,
    nonmono: int = 5,
    asgd: bool = True,
    variable_length: bool = True,
    max_seq_len_delta: int = 20,
    max_batches: int | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """The evaluation phase of DARTS's ``rnn/train.py``: train ``model`` on ``corpus.train``.

    Each epoch runs SGD (``lr``, weight decay ``wdecay``) over BPTT windows whose length is drawn
    as DARTS does (``bptt``, or ``bptt / 2`` with probability 0.05, plus normal noise of s.d. 5,
    at least 5, at most ``bptt + max_seq_len_delta``; the learning rate scaled by
    ``length / bptt``), with gradient norm clipping at ``clip``, the loss being NLL plus the
    slowness (TAR, ``slowness``) and activation (AR, ``activation_l2``) regularisers. After an
    epoch whose validation loss is worse than the best of all but the last ``nonmono`` epochs
    it switches to averaged SGD (``asgd``, ``t0 = 0``, ``lambd = 0``), validating with the
    averaged weights from then on. The best validated weights are put back in ``model`` at the
    end and tested.

    Args:
        max_batches: stop each epoch after so many windows (quick runs); None runs whole epochs.
        device: where to train (default: where the model is).

    Returns:
        ``train_loss`` (mean NLL of each epoch), ``valid_perplexity`` (each epoch),
        ``best_valid_perplexity``, ``test_perplexity`` (best weights, ``test_batch_size``
        columns), ``asgd_epoch`` (1-based epoch after which ASGD started, or None),
        ``parameters`` (count).
    """
    if epochs < 1 or nonmono < 1:
        raise ValueError(f"epochs and nonmono must be positive, got {epochs}, {nonmono}")
    if device is not None:
        model.to(device)
    device = model.encoder.weight.device
    rng = np.random.default_rng(seed)
    train_data = batchify(corpus.train, batch_size, device)
    params = list(model.parameters())
    optimizer: torch.optim.Optimizer = torch.optim.SGD(params, lr=lr, weight_decay=wdecay)
    history: dict[str, Any] = {"train_loss": [], "valid_perplexity": [], "asgd_epoch": None,
                               "parameters": sum(p.numel() for p in params)}
    best_loss, best_state, val_losses = math.inf, copy.deepcopy(model.state_dict()), []
    for epoch in range(1, epochs + 1):
        model.train()
        hidden = model.init_hidden(batch_size)
        total, windows, i = 0.0, 0, 0
        while i < train_data.size(0) - 2 and (max_batches is None or windows < max_batches):
            seq_len = bptt
            if variable_length:
                base = bptt if rng.random() < 0.95 else bptt / 2
                seq_len = min(max(5, int(rng.normal(base, 5))), bptt + max_seq_len_delta)
            inputs, target = get_batch(train_data, i, bptt, seq_len)
            group_lr = optimizer.param_groups[0]["lr"]
            optimizer.param_groups[0]["lr"] = group_lr * inputs.size(0) / bptt
            optimizer.zero_grad()
            log_probs, hidden, raw, dropped = model(inputs, hidden.detach(), return_h=True)
            raw_loss = _nll(log_probs, target)
            loss = raw_loss
            if activation_l2 > 0:
                loss = loss + activation_l2 * dropped.pow(2).mean()
            if slowness > 0:
                loss = loss + slowness * (raw[1:] - raw[:-1]).pow(2).mean()
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite training loss at epoch {epoch}, window "
                                         f"{windows}: lower the learning rate ({lr})")
            loss.backward()
            nn.utils.clip_grad_norm_(params, clip)
            optimizer.step()
            optimizer.param_groups[0]["lr"] = group_lr
            total += raw_loss.item()
            windows += 1
            i += inputs.size(0)
        history["train_loss"].append(total / max(windows, 1))
        averaged = isinstance(optimizer, torch.optim.ASGD)
        saved = _swap_in_averages(model, optimizer) if averaged else {}
        val_ppl = evaluate_perplexity(model, corpus.valid, eval_batch_size, bptt)
        val_loss = math.log(val_ppl)
        if val_loss < best_loss:
            best_loss, best_state = val_loss, copy.deepcopy(model.state_dict())
        for p, value in saved.items():
            p.data.copy_(value)
        history["valid_perplexity"].append(val_ppl)
        if log is not None:
            log(f"epoch {epoch}: train loss {history['train_loss'][-1]:.3f}, valid ppl "
                f"{val_ppl:.2f}{' (averaged)' if averaged else ''}")
        if (asgd and not averaged and len(val_losses) > nonmono
                and val_loss > min(val_losses[:-nonmono])):
            optimizer = torch.optim.ASGD(params, lr=lr, t0=0, lambd=0.0, weight_decay=wdecay)
            history["asgd_epoch"] = epoch
        val_losses.append(val_loss)
    model.load_state_dict(best_state)
    history["best_valid_perplexity"] = math.exp(best_loss)
    history["test_perplexity"] = evaluate_perplexity(model, corpus.test, test_batch_size, bptt)
    return history
