"""Groups, group convolutions, the relaxation morphism and mixed layers (thesis §4.2-4.3)."""

import itertools

import pytest
import torch

from structlab.equivariance import (
    GROUP_NAMES,
    GroupBatchNorm2d,
    GroupConv2d,
    GroupPool,
    MixedGroupConv,
    ResidualPathwayConv,
    get_group,
    relax,
)

D4 = get_group("D4")
PAIRS = [
    (g, h) for g in GROUP_NAMES for h in GROUP_NAMES if get_group(h).is_subgroup_of(g) and g != h
]


def act_field(y: torch.Tensor, g, channels: int) -> torch.Tensor:
    """The action of g on a canonical feature map: spatial action and (c, u) -> (c, g u)."""
    B, _, H, W = y.shape
    y = D4.act_on_image(y, g).reshape(B, channels, D4.order, H, W)
    return D4.act_on_group_axis(y, g, dim=2).reshape(B, -1, H, W)


@pytest.fixture(autouse=True)
def _double():
    torch.manual_seed(0)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


@pytest.mark.parametrize("name", GROUP_NAMES)
def test_group_axioms(name):
    G = get_group(name)
    els = G.elements
    assert els[0] == G.identity
    for a, b in itertools.product(els, els):
        assert G.product(a, b) in els
        for c in els:
            assert G.product(G.product(a, b), c) == G.product(a, G.product(b, c))
    for a in els:
        assert G.product(a, G.inverse(a)) == G.identity
    # the action on images is a homomorphism
    x = torch.randn(5, 5)
    for a, b in itertools.product(els, els):
        lhs = G.act_on_image(G.act_on_image(x, b), a)
        assert torch.equal(lhs, G.act_on_image(x, G.product(a, b)))


@pytest.mark.parametrize("big,small", PAIRS)
def test_coset_representatives_decompose_uniquely(big, small):
    G, H = get_group(big), get_group(small)
    R = G.coset_representatives(H)
    assert G.identity in R and len(R) == G.order // H.order
    pairs = {G.product(h, r) for h in H.elements for r in R}
    assert pairs == set(G.elements)
    for g in G.elements:
        h, r = G.decompose(g, H)
        assert h in H.elements and r in R and G.product(h, r) == g


def test_bad_groups_are_clear_errors():
    with pytest.raises(ValueError, match="unknown group 'C3'"):
        get_group("C3")
    with pytest.raises(ValueError, match="not a subgroup of C4"):
        get_group("C4").coset_representatives("D1")
    with pytest.raises(ValueError, match="cannot relax a C4 layer to D2"):
        relax(GroupConv2d(1, 1, 3, "C4", lifting=True), "D2")
    with pytest.raises(ValueError, match="in_channels must be a positive"):
        GroupConv2d(0, 1, 3, "C4")
    with pytest.raises(ValueError, match="odd"):
        GroupConv2d(1, 1, 2, "C4")


@pytest.mark.parametrize("name", GROUP_NAMES)
def test_lifting_and_group_layers_are_equivariant(name):
    G = get_group(name)
    lift = GroupConv2d(2, 3, 3, name, lifting=True)
    layer = GroupConv2d(3, 2, 5, name)
    x = torch.randn(2, 2, 11, 11)
    y = lift(x)
    z = layer(y)
    assert y.shape == (2, 3 * 8, 11, 11) and z.shape == (2, 2 * 8, 11, 11)
    for g in G.elements:
        assert torch.allclose(lift(D4.act_on_image(x, g)), act_field(y, g, 3), atol=1e-12)
        assert torch.allclose(layer(act_field(y, g, 3)), act_field(z, g, 2), atol=1e-12)


def test_c1_layer_is_not_rotation_equivariant():
    # the test above must be able to fail
    lift = GroupConv2d(1, 2, 3, "C1", lifting=True)
    x = torch.randn(1, 1, 9, 9)
    g = (1, 0)
    assert not torch.allclose(lift(D4.act_on_image(x, g)), act_field(lift(x), g, 2), atol=1e-6)


@pytest.mark.parametrize("big,small", PAIRS)
def test_relaxation_morphism_preserves_outputs(big, small):
    lift = GroupConv2d(2, 3, 3, big, lifting=True)
    layer = GroupConv2d(3, 2, 3, big)
    with torch.no_grad():
        lift.bias.normal_()
        layer.bias.normal_()
    x = torch.randn(2, 2, 8, 8)
    y = lift(x)
    r_lift, r_layer = relax(lift, small), relax(layer, small)
    assert torch.equal(r_lift(x), y)
    assert torch.equal(r_layer(y), layer(y))
    ratio = get_group(big).order // get_group(small).order
    assert r_layer.weight.numel() == ratio * layer.weight.numel()
    assert r_lift.weight.numel() == ratio * lift.weight.numel()


@pytest.mark.parametrize("name", GROUP_NAMES)
def test_parameter_counts_follow_coset_ratios(name):
    layer = GroupConv2d(4, 4, 3, name)
    d4 = GroupConv2d(4, 4, 3, "D4")
    assert layer.weight.numel() == d4.weight.numel() * len(D4.coset_representatives(name))
    assert layer.expanded_weight().shape == d4.expanded_weight().shape == (32, 32, 3, 3)


@pytest.mark.parametrize("name", ["C4", "D2", "D4"])
def test_batch_norm_and_pool_respect_the_group(name):
    G = get_group(name)
    norm = GroupBatchNorm2d(3, name)
    pool = GroupPool(3, name)
    y = torch.randn(4, 24, 6, 6)
    out = norm(y)  # training mode: batch statistics
    for g in G.elements:
        assert torch.allclose(norm(act_field(y, g, 3)), act_field(out, g, 3), atol=1e-10)
        assert torch.allclose(pool(act_field(y, g, 3)), pool(y), atol=1e-12)
    assert pool(y).shape == (4, 3 * len(D4.coset_representatives(name)))


def test_mixed_layer_is_the_weighted_sum_and_collapses():
    mixed = MixedGroupConv(2, 3, 3, ("C1", "C4", "D4"), lifting=True)
    with torch.no_grad():
        mixed.alpha.copy_(torch.tensor([0.3, -1.0, 0.8]))
    x = torch.randn(2, 2, 8, 8)
    z = mixed.z
    assert torch.isclose(z.sum(), torch.tensor(1.0))
    expected = sum(w * y for w, y in zip(z, mixed.forward_branches(x)))
    assert torch.allclose(mixed(x), expected, atol=1e-12)
    assert torch.allclose(mixed.collapse("C1")(x), mixed(x), atol=1e-12)
    assert torch.allclose(mixed.collapse("C1").to_conv2d()(x), mixed(x), atol=1e-12)
    with pytest.raises(ValueError, match="C4 is not a subgroup of C1"):
        mixed.collapse("C4")


def test_mixed_layer_weight_norm_is_frozen():
    mixed = MixedGroupConv(4, 2, 3, ("C1", "D4"))
    norms = [b.parametrizations.weight.original0.detach().clone() for b in mixed.branches]
    opt = torch.optim.SGD([p for p in mixed.parameters() if p.requires_grad], lr=0.5)
    mixed(torch.randn(2, 32, 6, 6)).square().mean().backward()
    opt.step()
    for b, n in zip(mixed.branches, norms):
        assert torch.equal(b.parametrizations.weight.original0, n)
        w = b.weight.reshape(b.weight.shape[0], -1)
        assert torch.allclose(w.norm(dim=1), n.reshape(-1), atol=1e-10)
    assert mixed.alpha.grad is not None


def test_residual_pathway_prior_layer():
    rpp = ResidualPathwayConv(2, 2, 3, lifting=True, l2=1e-6)
    x = torch.randn(1, 2, 8, 8)
    expected = rpp.equivariant(x) + rpp.residual(x)
    assert torch.allclose(rpp(x), expected, atol=1e-12)
    assert torch.allclose(rpp.collapse()(x), rpp(x), atol=1e-12)
    groups = rpp.param_groups()
    assert groups[1]["weight_decay"] == 1e-6 and "weight_decay" not in groups[0]


@pytest.mark.parametrize("lifting", [True, False])
@pytest.mark.parametrize("name", GROUP_NAMES)
def test_single_gather_is_the_expansion_of_eq_2(name, lifting):
    """The precomputed gather copies exactly the entries the written-out expansion (per-element
    channel gathers, spatial actions, stack, row permutation) produces, and its gradient is the
    same sum over the copies."""
    layer = GroupConv2d(2, 3, 3, name, lifting=lifting)
    reference = layer._expand_by_actions(layer.weight)
    assert torch.equal(layer.expanded_weight(), reference)
    assert (layer._gather is None) == (name == "C1")
    bias = layer.bias.repeat_interleave(layer.group.order)[layer._row_order]
    assert torch.equal(layer.expanded_bias(), bias)
    upstream = torch.randn(reference.shape)
    (grad_fast,) = torch.autograd.grad((layer.expanded_weight() * upstream).sum(), layer.weight)
    (grad_ref,) = torch.autograd.grad(
        (layer._expand_by_actions(layer.weight) * upstream).sum(), layer.weight
    )
    torch.testing.assert_close(grad_fast, grad_ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("make", [
    lambda: GroupConv2d(2, 2, 3, "C4"),
    lambda: MixedGroupConv(2, 2, 3, ("C1", "C4", "D4")),
    lambda: ResidualPathwayConv(2, 2, 3),
])
def test_expansion_cache_without_autograd_follows_the_weights(make):
    layer = make()
    x = torch.randn(2, 16, 6, 6)
    with torch.no_grad():
        first = layer(x)
        cached = layer.__dict__["_expansion_cache"]
        assert torch.equal(layer(x), first) and layer.__dict__["_expansion_cache"] is cached
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    layer(x).square().sum().backward()  # with autograd: no cache, gradients reach psi
    assert "_expansion_cache" not in layer.__dict__
    optimizer.step()
    with torch.no_grad():
        after = layer(x)
        fresh = torch.nn.functional.conv2d(
            x, layer.expanded_weight(), layer.expanded_bias(), padding=1
        )
    assert not torch.equal(after, first)
    assert torch.equal(after, fresh)
