"""The DARTS search space (thesis §5.1-5.2): operations, the projection Pi_S (eqs. 13-16) and
genotypes, the softmax/CRB supernet with progressive pruning, the evaluation network and its
parameter counts, the cell drawing. Tiny networks on CPU only."""

from __future__ import annotations

import copy
import random

import matplotlib
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from structlab.darts.evalnet import Cutout, EvalNetwork, count_parameters
from structlab.darts.genotypes import (
    CRB_PRIMITIVES,
    DARTS_V1,
    DARTS_V2,
    PRIMITIVES,
    Genotype,
    canonical_genotype,
    cell_edges,
    cell_genes,
    count_skip_connects,
    genes_to_weights,
    genotype_from_projection,
    genotype_to_weights,
    is_discrete_cell,
    num_edges,
    project_cell,
)
from structlab.darts.operations import FactorizedReduce, Zero, make_op
from structlab.darts.supernet import Supernet, reduction_positions

matplotlib.use("Agg")


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """Run this module's many tiny convolutions on one thread: on a busy 2-core machine the
    second OpenMP thread of the portable numerics makes them up to 100x slower. No result here
    is compared with stored bits; the thread count is restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ----------------------------------------------------------------------------- helpers
def darts_parse(weights: torch.Tensor, primitives, steps: int) -> list[tuple[str, int]]:
    """DARTS's own derivation (model_search.Network.genotype._parse), re-stated."""
    W = weights.tolist()
    genes, start = [], 0
    allowed = [k for k, p in enumerate(primitives) if p != "none"]
    for i in range(steps):
        rows = W[start : start + i + 2]
        edges = sorted(range(i + 2), key=lambda j: -max(rows[j][k] for k in allowed))[:2]
        for j in edges:
            k_best = max(allowed, key=lambda k, r=rows[j]: r[k])
            genes.append((primitives[k_best], j))
        start += i + 2
    return genes


def random_genes(rng: random.Random, primitives, steps: int = 4) -> list[tuple[str, int]]:
    ops = [p for p in primitives if p != "none"]
    genes = []
    for i in range(steps):
        for j in rng.sample(range(i + 2), 2):
            genes.append((rng.choice(ops), j))
    return genes


def naive_forward(model: Supernet, x: torch.Tensor, weights) -> torch.Tensor:
    """The supernet's forward pass written out: every existing operation of every edge is
    evaluated (``none`` included, as zeros), nothing is skipped."""
    s0 = s1 = model.stem(x)
    for cell in model.cells:
        w = weights[1 if cell.reduction else 0]
        states = [cell.preprocess0(s0), cell.preprocess1(s1)]
        offset = 0
        for i in range(cell.steps):
            terms = []
            for j, h in enumerate(states):
                mixed = cell.edges[offset + j]
                for p, name in enumerate(model.primitives):
                    if name == "none":
                        terms.append(w[offset + j, p] * Zero(mixed.stride)(h))
                    elif mixed.ops[p] is not None:
                        terms.append(w[offset + j, p] * mixed.ops[p](h))
            node = sum(terms)
            if cell.node_bns is not None:
                node = cell.node_bns[i](node)
            offset += len(states)
            states.append(node)
        s0, s1 = s1, torch.cat(states[-cell.multiplier :], dim=1)
    return model.classifier(model.global_pooling(s1).flatten(1))


def op_params(name: str, C: int, stride: int) -> int:
    """Parameters of one primitive with affine BatchNorms (operations.py docstring)."""
    k = {"3x3": 3, "5x5": 5}.get(name[-3:], 0)
    if name.startswith("sep_conv"):
        return 2 * (C * k * k + C * C) + 4 * C
    if name.startswith("dil_conv"):
        return C * k * k + C * C + 2 * C
    if name == "skip_connect":
        return 0 if stride == 1 else C * C + 2 * C
    return 0  # pools, none


def analytic_eval_count(genotype, C, num_classes, layers, in_channels=3, auxiliary=False):
    """DARTS evaluation-network parameters from the per-operation formulas."""
    total = in_channels * 3 * C * 9 + 2 * 3 * C  # stem conv + BN
    C_pp, C_p, C_c = 3 * C, 3 * C, C
    reductions = {layers // 3, 2 * layers // 3}
    C_aux = None
    for i in range(layers):
        red = i in reductions
        C_c *= 2 if red else 1
        genes = genotype.reduce if red else genotype.normal
        concat = genotype.reduce_concat if red else genotype.normal_concat
        total += (C_pp * C_c + 2 * C_c) + (C_p * C_c + 2 * C_c)  # preprocess0 (RCB or FR), 1
        total += sum(op_params(op, C_c, 2 if red and j < 2 else 1) for op, j in genes)
        C_pp, C_p = C_p, len(concat) * C_c
        if i == 2 * layers // 3:
            C_aux = C_p
    total += C_p * num_classes + num_classes
    if auxiliary:
        total += C_aux * 128 + 2 * 128 + 128 * 768 * 4 + 2 * 768 + 768 * num_classes + num_classes
    return total


# ----------------------------------------------------------------------------- operations
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", [8, 7])
def test_every_primitive_maps_to_the_edge_shape(stride, size):
    x = torch.randn(2, 4, size, size)
    out_size = -(-size // stride)
    for name in PRIMITIVES:
        for pool_bn in (False, True):
            op = make_op(name, 4, stride, affine=False, pool_bn=pool_bn)
            assert op(x).shape == (2, 4, out_size, out_size), name
    assert isinstance(make_op("skip_connect", 4, 2, True), FactorizedReduce)
    assert isinstance(make_op("max_pool_3x3", 4, 1, False, pool_bn=True), nn.Sequential)
    fr = FactorizedReduce(3, 6)
    assert fr(torch.randn(1, 3, 9, 9)).shape == (1, 6, 5, 5)


def test_primitive_parameter_counts():
    for name in PRIMITIVES:
        for stride in (1, 2):
            op = make_op(name, 6, stride, affine=True)
            assert sum(p.numel() for p in op.parameters()) == op_params(name, 6, stride), name


# ----------------------------------------------------------------------------- projection
def test_cell_edges_follow_the_contract_order():
    edges = cell_edges(4)
    assert len(edges) == num_edges(4) == 14
    for e, (i, j) in enumerate(edges):
        assert e == sum(k + 2 for k in range(i)) + j
    assert edges[:5] == [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2)]


def _assert_valid(binary, weights, primitives, steps):
    assert binary.shape == weights.shape and binary.dtype == weights.dtype
    assert set(binary.unique().tolist()) <= {0.0, 1.0}
    if "none" in primitives:
        assert binary[:, primitives.index("none")].sum() == 0
    assert (binary.sum(dim=1) <= 1).all()
    offset = 0
    for i in range(steps):
        rows = binary[offset : offset + i + 2]
        sources = rows.sum(dim=1).nonzero().flatten().tolist()
        assert len(sources) == 2 and rows.sum() == 2  # two distinct sources
        offset += i + 2
    assert is_discrete_cell(binary, primitives, steps)


@pytest.mark.parametrize("primitives", [PRIMITIVES, CRB_PRIMITIVES])
@pytest.mark.parametrize("steps", [2, 4, 5])
def test_projection_gives_valid_cells_and_agrees_with_darts(primitives, steps):
    for seed in range(60):
        g = torch.Generator().manual_seed(seed)
        weights = torch.randn(num_edges(steps), len(primitives), generator=g)
        if seed % 3 == 0:
            weights = F.softmax(weights, dim=-1)
        if seed % 3 == 1 and "none" in primitives:  # 'none' dominant everywhere: still excluded
            weights[:, primitives.index("none")] += 10.0
        binary = project_cell(weights, primitives, steps)
        _assert_valid(binary, weights, primitives, steps)
        assert canonical_genotype(
            Genotype(cell_genes(binary, primitives, steps), [], [], [])
        ) == canonical_genotype(Genotype(darts_parse(weights, primitives, steps), [], [], []))
        torch.testing.assert_close(project_cell(binary, primitives, steps), binary)


@pytest.mark.parametrize("primitives", [PRIMITIVES, CRB_PRIMITIVES])
def test_projection_is_identity_on_discrete_cells(primitives):
    rng = random.Random(0)
    for _ in range(50):
        onehot = genes_to_weights(random_genes(rng, primitives), primitives)
        assert is_discrete_cell(onehot, primitives)
        assert torch.equal(project_cell(onehot, primitives), onehot)


def test_projection_ties_and_gradients():
    uniform = torch.full((14, 8), 0.125, requires_grad=True)
    binary = project_cell(uniform)
    assert not binary.requires_grad
    # ties: edges from sources 0 and 1, operation max_pool_3x3 (the first one after 'none')
    assert cell_genes(binary) == [("max_pool_3x3", j) for _ in range(4) for j in (0, 1)]
    with pytest.raises(ValueError):
        project_cell(torch.zeros(13, 8))
    with pytest.raises(ValueError):
        project_cell(torch.full((14, 8), float("nan")))


# ----------------------------------------------------------------------------- genotypes
@pytest.mark.parametrize("genotype", [DARTS_V1, DARTS_V2])
def test_published_genotypes_round_trip(genotype):
    normal, reduce = genotype_to_weights(genotype, PRIMITIVES)
    assert is_discrete_cell(normal) and is_discrete_cell(reduce)
    back = genotype_from_projection(normal, reduce, PRIMITIVES)
    assert back == canonical_genotype(genotype)
    assert all(torch.equal(a, b) for a, b in zip(genotype_to_weights(back), (normal, reduce)))
    assert torch.equal(project_cell(normal), normal)


def test_random_genotypes_round_trip():
    rng = random.Random(1)
    for primitives in (PRIMITIVES, CRB_PRIMITIVES):
        for _ in range(30):
            g = Genotype(
                random_genes(rng, primitives), [2, 3, 4, 5], random_genes(rng, primitives),
                [2, 3, 4, 5],
            )
            weights = genotype_to_weights(g, primitives, dtype=torch.float64)
            assert weights[0].dtype == torch.float64
            assert genotype_from_projection(*weights, primitives) == canonical_genotype(g)
    with pytest.raises(ValueError):  # a node reading twice from one source
        genes_to_weights([("sep_conv_3x3", 0), ("skip_connect", 0)] * 4)


def test_count_skip_connects():
    assert count_skip_connects(DARTS_V2) == 2
    assert count_skip_connects(DARTS_V2, "reduce") == 3
    assert count_skip_connects(DARTS_V1, "both") == 6


# ----------------------------------------------------------------------------- supernet
def test_reduction_positions():
    assert reduction_positions(8) == [2, 5]
    assert reduction_positions(5) == [1, 3]
    assert reduction_positions(3) == [1, 2]
    assert reduction_positions(2) == [0, 1]
    assert reduction_positions(1) == [0]


@pytest.mark.parametrize("activation", ["softmax", "crb"])
def test_supernet_protocol(activation):
    torch.manual_seed(0)
    model = Supernet(2, 10, 3, activation=activation)
    assert [c.reduction for c in model.cells] == [False, True, True]
    P = 8 if activation == "softmax" else 7
    assert model.primitives == (PRIMITIVES if activation == "softmax" else CRB_PRIMITIVES)
    assert [tuple(a.shape) for a in model.arch_parameters()] == [(14, P), (14, P)]
    arch = {id(p) for p in model.arch_parameters()}
    weights = {id(p) for p in model.weight_parameters()}
    assert not arch & weights and arch | weights == {id(p) for p in model.parameters()}

    act = model.activated_weights()
    if activation == "softmax":
        torch.testing.assert_close(act[0].sum(-1), torch.ones(14))
        assert model.arch_parameters()[0].abs().max() < 0.01
    else:
        assert all(((a > 0) & (a <= 1)).all() for a in act)
        assert all((a - 1 / 7).abs().max() < 1e-2 for a in model.arch_parameters())
        assert len(model.cells[0].node_bns) == 4

    x = torch.randn(2, 3, 8, 8)
    logits = model(x)
    assert logits.shape == (2, 10)
    F.cross_entropy(logits, torch.tensor([1, 2])).backward()
    assert all(a.grad is not None and a.grad.abs().sum() > 0 for a in model.arch_parameters())

    binary = model.project(act)
    assert all(is_discrete_cell(b, model.primitives) for b in binary)
    genotype = model.genotype()
    assert genotype.normal_concat == genotype.reduce_concat == [2, 3, 4, 5]
    assert genotype == genotype_from_projection(*binary, model.primitives)
    with torch.no_grad():  # the discrete architecture inside the supernet
        assert model(x, weights=binary).shape == (2, 10)
    if activation == "softmax":
        assert model.prune_nonpositive() == []


@pytest.mark.parametrize("activation", ["softmax", "crb"])
@pytest.mark.parametrize("in_channels,size", [(1, 28), (3, 32)])
def test_supernet_shapes(activation, in_channels, size):
    model = Supernet(2, 10, 3, in_channels=in_channels, activation=activation).eval()
    with torch.no_grad():
        assert model(torch.randn(2, in_channels, size, size)).shape == (2, 10)


def test_small_supernets_and_normal_cells():
    x = torch.randn(2, 1, 12, 12)
    for layers, kinds in [(2, [True, True]), (5, [False, True, False, True, False])]:
        model = Supernet(2, 3, layers, in_channels=1, steps=2, multiplier=2)
        assert [c.reduction for c in model.cells] == kinds
        with torch.no_grad():
            assert model(x).shape == (2, 3)
        assert len(model.genotype().normal) == 4


def test_softmax_supernet_equals_the_explicit_mixture():
    torch.manual_seed(1)
    model = Supernet(2, 5, 3, steps=3, multiplier=3)
    x = torch.randn(3, 3, 8, 8)
    weights = [F.softmax(a, dim=-1) for a in model.arch_parameters()]
    for train in (True, False):
        model.train(train)
        out = model(x)  # grad mode on: every operation but 'none' is evaluated
        with torch.no_grad():
            torch.testing.assert_close(out, naive_forward(model, x, weights))
            torch.testing.assert_close(model(x, weights=weights), out)
            # binary weights: zero-weight operations skipped, result unchanged
            binary = model.project(weights)
            torch.testing.assert_close(model(x, weights=binary), naive_forward(model, x, binary))


def test_crb_skipping_is_exact_for_gradients():
    torch.manual_seed(2)
    model = Supernet(2, 5, 3, steps=2, multiplier=2, activation="crb")
    with torch.no_grad():
        model.alphas_normal[3, :4] = -0.05  # clamped to 0, zero derivative: skipped
        model.alphas_reduce[0, 2] = 0.0  # exactly 0: computed (clamp's derivative there varies)
        model.alphas_reduce[4, 1] = 1.5  # above 1: weight 1
    x, y = torch.randn(3, 3, 8, 8), torch.tensor([0, 1, 2])
    ref = copy.deepcopy(model)
    F.cross_entropy(model(x), y).backward()
    F.cross_entropy(naive_forward(ref, x, ref.activated_weights()), y).backward()
    for a, b in zip(model.arch_parameters(), ref.arch_parameters()):
        torch.testing.assert_close(a.grad, b.grad)
    skipped = 0
    for (name, p), q in zip(model.named_parameters(), ref.parameters()):
        if p.grad is None:  # a skipped operation: the full computation gives it zero gradient
            assert ".edges.3." in name and q.grad.abs().max() == 0, name
            skipped += 1
        else:
            torch.testing.assert_close(p.grad, q.grad)
    assert skipped > 0


PRUNED_4 = [(0, 0, 4), (0, 7, 0), (0, 7, 6), (0, 13, 2), (1, 1, 3), (1, 9, 5)]
PRUNED_2 = [(0, 0, 4), (0, 2, 0), (0, 4, 6), (1, 1, 3), (1, 3, 5)]


def _crb_with_nonpositive_alphas(seed, steps, pruned):
    torch.manual_seed(seed)
    model = Supernet(2, 5, 3, steps=steps, multiplier=steps, activation="crb")
    with torch.no_grad():
        for a, e, p in pruned:  # exactly 0 for op 0, negative otherwise: both pruned
            model.arch_parameters()[a][e, p] = -0.01 if p != 0 else 0.0
    return model


def test_crb_prune_nonpositive_removes_exactly_those_ops():
    model = _crb_with_nonpositive_alphas(3, 4, PRUNED_4)
    n_before = sum(p.numel() for p in model.weight_parameters())
    reference = copy.deepcopy(model)
    assert model.prune_nonpositive() == PRUNED_4
    assert model.prune_nonpositive() == []  # idempotent
    for cell in model.cells:
        a = 1 if cell.reduction else 0
        for e, mixed in enumerate(cell.edges):
            for p, op in enumerate(mixed.ops):
                assert (op is None) == ((a, e, p) in PRUNED_4)
    assert sum(p.numel() for p in model.weight_parameters()) < n_before
    for act, mask in zip(model.activated_weights(), model.masks()):
        assert (act[mask == 0] == 0).all() and (mask == 0).sum() > 0

    model.eval()
    reference.eval()
    x = torch.randn(3, 3, 8, 8)
    zeroed = [w.detach() * m for w, m in zip(reference.activated_weights(), model.masks())]
    with torch.no_grad():
        out = model(x)
        torch.testing.assert_close(out, naive_forward(reference, x, zeroed))
        torch.testing.assert_close(out, reference(x, weights=zeroed))


def test_crb_pruned_ops_stay_zero_under_optimisation():
    model = _crb_with_nonpositive_alphas(4, 2, PRUNED_2)
    assert model.prune_nonpositive() == PRUNED_2
    arch_opt = torch.optim.Adam(model.arch_parameters(), lr=0.05)
    w_opt = torch.optim.SGD(model.weight_parameters(), lr=0.01, momentum=0.9, weight_decay=3e-4)
    x, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    for _ in range(2):
        arch_opt.zero_grad()
        w_opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        # pushes every raw alpha up, the pruned ones included
        loss = loss - sum(a.sum() for a in model.arch_parameters())
        loss.backward()
        arch_opt.step()
        w_opt.step()
    raw = model.arch_parameters()
    assert all(raw[a][e, p] > 0 for a, e, p in PRUNED_2)  # the raw alphas did move
    act = model.activated_weights()
    assert all(act[a][e, p] == 0 for a, e, p in PRUNED_2)
    assert model.prune_nonpositive() == []


def test_crb_arch_state_restores_a_pruned_supernet():
    model = _crb_with_nonpositive_alphas(5, 2, PRUNED_2)
    model.prune_nonpositive()
    clone = Supernet(2, 5, 3, steps=2, multiplier=2, activation="crb")
    clone.load_arch_state(model.arch_state())
    clone.load_state_dict(model.state_dict())
    for cell in clone.cells:
        a = 1 if cell.reduction else 0
        assert all(cell.edges[e].ops[p] is None for b, e, p in PRUNED_2 if b == a)
    model.eval()
    clone.eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(clone(x), model(x))
    with pytest.raises(ValueError):
        clone.load_arch_state(
            Supernet(2, 5, 3, steps=2, multiplier=2, activation="crb").arch_state()
        )


# ----------------------------------------------------------------------------- evaluation net
def test_darts_v2_has_the_published_parameter_count():
    model = EvalNetwork(36, 10, 20, DARTS_V2, auxiliary=True)
    # "3.3M" in Liu et al. 2019; quark0/darts's train.py logs 3.349342 MB (aux head excluded)
    assert count_parameters(model) == 3_349_342 == analytic_eval_count(DARTS_V2, 36, 10, 20)
    assert count_parameters(model, exclude_auxiliary=False) == analytic_eval_count(
        DARTS_V2, 36, 10, 20, auxiliary=True
    )
    assert count_parameters(EvalNetwork(36, 10, 20, DARTS_V1)) == 3_169_414


@pytest.mark.parametrize("in_channels,size,genotype", [(1, 28, DARTS_V1), (3, 32, DARTS_V2)])
def test_tiny_eval_network(in_channels, size, genotype):
    torch.manual_seed(6)
    model = EvalNetwork(4, 10, 5, genotype, auxiliary=True, in_channels=in_channels)
    expected = analytic_eval_count(genotype, 4, 10, 5, in_channels, auxiliary=True)
    assert count_parameters(model, exclude_auxiliary=False) == expected
    assert count_parameters(model) == analytic_eval_count(genotype, 4, 10, 5, in_channels)
    x = torch.randn(3, in_channels, size, size)
    model.drop_path_prob = 0.3
    logits, aux = model.train()(x)
    assert logits.shape == aux.shape == (3, 10)
    model.eval()
    with torch.no_grad():
        out = model(x)
        assert out.shape == (3, 10)
        torch.testing.assert_close(model(x), out)  # no drop-path in evaluation
    plain = EvalNetwork(4, 10, 5, genotype, in_channels=in_channels).train()
    assert plain(x).shape == (3, 10)


def test_cutout():
    g = torch.Generator().manual_seed(0)
    cut = Cutout(16, generator=g)
    img = torch.ones(3, 32, 32)
    out = cut(img)
    assert out.shape == img.shape and img.min() == 1  # not in place
    zeros = out[0] == 0
    assert (out == 0).sum() == 3 * zeros.sum() and 0 < zeros.sum() <= 256
    rows, cols = zeros.any(1).sum(), zeros.any(0).sum()
    assert zeros.sum() == rows * cols  # a rectangle
    batch = cut(torch.ones(64, 1, 32, 32))
    holes = (batch == 0).flatten(1).sum(1)
    assert (holes > 0).all() and (holes <= 256).all() and (holes == 256).any()
    assert len({tuple(b.nonzero()[0].tolist()) for b in (batch == 0)}) > 1


# ----------------------------------------------------------------------------- drawing
def test_draw_genotype_one_arrow_per_gene():
    import matplotlib.pyplot as plt

    from structlab.darts.drawing import draw_genotype

    for kind in ("normal", "reduce"):
        fig, ax = plt.subplots()
        assert draw_genotype(DARTS_V2, kind, ax=ax) is ax
        gids = [p.get_gid() for p in ax.patches]
        genes = DARTS_V2.normal if kind == "normal" else DARTS_V2.reduce
        edges = sorted(g for g in gids if g and g.startswith("edge:"))
        assert edges == sorted(f"edge:{n // 2}:{j}" for n, (_, j) in enumerate(genes))
        assert sum(bool(g and g.startswith("concat:")) for g in gids) == 4
        labels = [t.get_text() for t in ax.texts]
        assert sorted(op for op, _ in genes) == sorted(t for t in labels if t in PRIMITIVES)
        plt.close(fig)
    ax = draw_genotype(DARTS_V1)
    assert sum(bool(p.get_gid() and p.get_gid().startswith("edge:")) for p in ax.patches) == 8
    plt.close(ax.figure)
