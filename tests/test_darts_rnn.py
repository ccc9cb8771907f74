"""The DARTS recurrent search space (structlab.darts.rnn): projection, supernet, task, training."""

from __future__ import annotations

import math

import pytest
import torch

from structlab.darts import rnn
from structlab.darts.rnn import (
    DARTS_V1,
    DARTS_V2,
    RNN_EDGES,
    RNN_PRIMITIVES,
    LanguageTask,
    RNNEval,
    RNNSupernet,
    evaluate_perplexity,
    genotype_from_binary,
    genotype_to_binary,
    project_rnn,
    rnn_edge,
    train_language_model,
)
from structlab.data.text import Corpus, batchify

NONE = RNN_PRIMITIVES.index("none")


def _darts_parse(probs: torch.Tensor) -> list[tuple[str, int]]:
    """DARTS's ``RNNModelSearch.genotype()._parse``, transcribed."""
    gene, start = [], 0
    for i in range(8):
        end = start + i + 1
        W = probs[start:end].tolist()
        j = sorted(range(i + 1), key=lambda x: -max(W[x][k] for k in range(len(W[x]))
                                                    if k != NONE))[0]
        k_best = None
        for k in range(len(W[j])):
            if k != NONE and (k_best is None or W[j][k] > W[j][k_best]):
                k_best = k
        gene.append((RNN_PRIMITIVES[k_best], j))
        start = end
    return gene


def test_edges_are_numbered_node_by_node():
    assert [rnn_edge(1, 0), rnn_edge(2, 0), rnn_edge(2, 1), rnn_edge(8, 7)] == [0, 1, 2, 35]
    with pytest.raises(ValueError):
        rnn_edge(3, 3)


@pytest.mark.parametrize("seed", range(5))
def test_project_rnn_on_random_alphas(seed):
    g = torch.Generator().manual_seed(seed)
    weights = torch.softmax(torch.randn(RNN_EDGES, len(RNN_PRIMITIVES), generator=g), -1)
    binary = project_rnn(weights)
    assert binary.shape == weights.shape and not binary.requires_grad
    assert set(binary.unique().tolist()) <= {0.0, 1.0}
    assert binary[:, NONE].sum() == 0
    for node in range(1, 9):
        block = binary[rnn_edge(node, 0):rnn_edge(node, 0) + node]
        assert block.sum() == 1  # one operation from one earlier node
    assert torch.equal(project_rnn(binary), binary)  # idempotent
    genotype = genotype_from_binary(binary)
    assert genotype.recurrent == _darts_parse(weights)
    assert torch.equal(genotype_to_binary(genotype), binary)


def test_projection_ignores_a_dominant_none():
    weights = torch.full((RNN_EDGES, 5), 0.1)
    weights[:, NONE] = 0.9
    weights[rnn_edge(3, 1), RNN_PRIMITIVES.index("sigmoid")] = 0.2
    genotype = genotype_from_binary(project_rnn(weights))
    assert genotype.recurrent[2] == ("sigmoid", 1)
    assert genotype.recurrent[0] == ("tanh", 0)  # ties: first predecessor, first operation


@pytest.mark.parametrize("genotype", [DARTS_V1, DARTS_V2])
def test_published_genotypes_round_trip(genotype):
    binary = genotype_to_binary(genotype)
    assert torch.equal(project_rnn(binary), binary)
    assert genotype_from_binary(binary) == genotype
    assert genotype.concat == tuple(range(1, 9))


def test_supernet_protocol():
    torch.manual_seed(0)
    model = RNNSupernet(30, 8, 8)
    assert model.activation == "softmax" and model.primitives == RNN_PRIMITIVES
    (alpha,) = model.arch_parameters()
    assert alpha.shape == (36, 5)
    weights = model.weight_parameters()
    assert all(w is not alpha for w in weights)
    assert len(weights) + 1 == len(list(model.parameters()))
    (activated,) = model.activated_weights()
    assert torch.allclose(activated.sum(-1), torch.ones(36)) and activated.requires_grad
    (projected,) = model.project(model.activated_weights())
    assert projected.shape == (36, 5) and projected.sum() == 8
    assert len(model.genotype().recurrent) == 8
    assert model.prune_nonpositive() == []
    assert model.decoder.weight is model.encoder.weight  # tied


def test_supernet_refuses_crb_and_untied_sizes():
    with pytest.raises(ValueError, match="not defined for the RNN search space") as info:
        RNNSupernet(30, 8, 8, activation="crb")
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="tied"):
        RNNSupernet(30, 8, 16)


def _one_hot_alpha(model: RNNSupernet, genotype) -> None:
    """Alphas whose softmax is exactly the genotype (``none`` on the edges it does not use)."""
    binary = genotype_to_binary(genotype)
    binary[binary.sum(1) == 0, NONE] = 1
    with torch.no_grad():
        model.alpha.copy_((binary - 1) * 1e4)


@pytest.mark.parametrize("training", [False, True])
def test_supernet_with_one_hot_alphas_is_the_genotype_model(training):
    torch.manual_seed(0)
    drop = {"dropout": 0.3, "dropouth": 0.2, "dropoutx": 0.3, "dropouti": 0.1, "dropoute": 0.1}
    supernet = RNNSupernet(40, 12, 12, batchnorm=False, **drop)
    _one_hot_alpha(supernet, DARTS_V2)
    assert torch.equal(supernet.activated_weights()[0][:, 1:],
                       genotype_to_binary(DARTS_V2)[:, 1:])
    model = RNNEval(DARTS_V2, 40, 12, 12, **drop).load_from_supernet(supernet)
    supernet.train(training)
    model.train(training)
    tokens = torch.randint(0, 40, (9, 3))
    hidden = 0.1 * torch.randn(3, 12)
    torch.manual_seed(1)  # the same dropout masks, drawn in the same order
    a, ha = supernet(tokens, hidden)
    torch.manual_seed(1)
    b, hb = model(tokens, hidden)
    assert torch.allclose(a, b, atol=1e-6) and torch.allclose(ha, hb, atol=1e-6)
    # the projected weights given explicitly compute the same (eval mode)
    supernet.eval()
    model.eval()
    binary = supernet.project(supernet.activated_weights())
    c, _ = supernet(tokens, hidden, weights=binary)
    d, _ = model(tokens, hidden)
    assert torch.allclose(c, d, atol=1e-6)


@pytest.mark.parametrize("make", [
    lambda: RNNSupernet(25, 10, 10),
    lambda: RNNEval(DARTS_V1, 25, 10, 10),
])
def test_shapes_and_hidden_carried(make):
    torch.manual_seed(0)
    model = make().eval()
    tokens = torch.randint(0, 25, (8, 4))
    log_probs, hidden = model(tokens)
    assert log_probs.shape == (8, 4, 25) and hidden.shape == (4, 10)
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(8, 4), atol=1e-5)
    first, h = model(tokens[:5])
    second, h2 = model(tokens[5:], h)  # carrying the state = one long sequence
    assert torch.allclose(torch.cat([first, second]), log_probs, atol=1e-6)
    assert torch.allclose(h2, hidden, atol=1e-6)
    model.train()
    out = model(tokens, return_h=True)
    assert len(out) == 4 and out[2].shape == (8, 4, 10)


def test_language_task_keeps_one_hidden_state_per_stream():
    torch.manual_seed(0)
    model = RNNSupernet(20, 8, 8).eval()
    task = LanguageTask(batch_size=3, bptt=5)
    data = batchify(torch.randint(0, 20, (200,)), 3)
    train_batch = (data[0:5], data[1:6])
    val_batch = (data[10:15], data[11:16])
    task.loss(model, train_batch, "train")
    task.loss(model, val_batch, "val")
    assert set(task.hidden) == {"train", "val"}
    assert not torch.allclose(task.hidden["train"], task.hidden["val"])
    assert not task.hidden["train"].requires_grad
    # the next train loss starts from the train stream's state, not from the val one
    state = task.hidden["train"].clone()
    nxt = (data[5:10], data[6:11])
    expected = torch.nn.functional.nll_loss(model(nxt[0], state)[0].reshape(-1, 20),
                                            nxt[1].reshape(-1))
    assert torch.allclose(task.loss(model, nxt, "train"), expected)
    # a new batch size starts the stream again from zeros
    small = (data[0:5, :2], data[1:6, :2])
    expected = torch.nn.functional.nll_loss(model(small[0])[0].reshape(-1, 20),
                                            small[1].reshape(-1))
    assert torch.allclose(task.loss(model, small, "val"), expected)
    assert task.hidden["val"].shape == (2, 8)
    batches = list(task.batches(torch.arange(100)))
    assert [b[0].shape for b in batches] == [(5, 3)] * 6 + [(2, 3)]


def _tiny_corpus(n: int = 60, seed: int = 0) -> Corpus:
    """Sentences of a small grammar: 19 words, about 7.5 tokens a sentence."""
    g = torch.Generator().manual_seed(seed)
    parts = [["the cat", "a dog", "the old man", "my sister"], ["sat on", "looked at", "ran to"],
             ["the mat", "a tree", "the red house"]]

    def sentence() -> list[str]:
        return " ".join(p[int(torch.randint(len(p), (1,), generator=g))] for p in parts).split()

    return Corpus.from_sentences([sentence() for _ in range(n)], [sentence() for _ in range(20)],
                                 [sentence() for _ in range(20)], name="tiny")


def test_search_steps_lower_the_training_loss():
    torch.manual_seed(0)
    corpus = _tiny_corpus()
    model = RNNSupernet(corpus.ntoken, 16, 16, dropout=0, dropouth=0, dropoutx=0, dropouti=0)
    task = LanguageTask(batch_size=16, bptt=8)
    train_batch = next(task.batches(corpus.train))
    val_batch = next(task.batches(corpus.valid))
    w_opt = torch.optim.SGD(model.weight_parameters(), lr=1.0)
    a_opt = torch.optim.Adam(model.arch_parameters(), lr=3e-3)
    losses = []
    for _ in range(6):
        task.reset()  # the same batch from the same (zero) state: plain gradient descent
        a_opt.zero_grad()
        task.loss(model, val_batch, "val").backward()
        a_opt.step()
        w_opt.zero_grad()
        loss = task.loss(model, train_batch, "train")
        loss.backward()
        w_opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.1
    assert not torch.equal(model.alpha, torch.zeros_like(model.alpha))


def test_train_language_model_lowers_the_loss():
    torch.manual_seed(0)
    corpus = _tiny_corpus()
    model = RNNEval(DARTS_V2, corpus.ntoken, 16, 16, dropout=0.1, dropouth=0.1, dropoutx=0.1,
                    dropouti=0.1, dropoute=0.0)
    start = evaluate_perplexity(model, corpus.valid, batch_size=4, bptt=12)
    history = train_language_model(model, corpus, 4, lr=5.0, batch_size=8, bptt=12,
                                   eval_batch_size=4, test_batch_size=4)
    assert len(history["train_loss"]) == len(history["valid_perplexity"]) == 4
    assert history["train_loss"][-1] < history["train_loss"][0]
    assert history["best_valid_perplexity"] < start
    assert history["best_valid_perplexity"] == pytest.approx(min(history["valid_perplexity"]))
    assert math.isfinite(history["test_perplexity"])
    assert history["parameters"] == sum(p.numel() for p in model.parameters())


def test_train_language_model_switches_to_asgd(monkeypatch):
    torch.manual_seed(0)
    corpus = _tiny_corpus()
    model = RNNEval(DARTS_V1, corpus.ntoken, 8, 8)
    worse = iter([10.0, 11.0, 12.0, 13.0, 14.0])  # validation never improves
    monkeypatch.setattr(rnn, "evaluate_perplexity", lambda *args, **kwargs: next(worse))
    history = train_language_model(model, corpus, 4, batch_size=4, bptt=5, nonmono=1,
                                   max_batches=2)
    assert history["asgd_epoch"] == 3  # worse than the best of all but the last epoch
    assert history["best_valid_perplexity"] == pytest.approx(10.0)
    assert history["test_perplexity"] == 14.0
