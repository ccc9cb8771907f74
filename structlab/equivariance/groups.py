"""The symmetry groups of the square pixel grid: C1, C2, C4, D1, D2, D4 (thesis §4.2.1).

An element is a pair ``(r, m)``: ``m`` reflections (0 or 1) across the vertical axis (a left-right
mirror of the image) followed by ``r`` counter-clockwise quarter turns, so that

    (r, m) . x = rot90^r(flip^m(x)).

Because ``flip . rot^r = rot^-r . flip``, the product is
``(r1, m1)(r2, m2) = (r1 + (-1)^m1 r2 mod 4, m1 xor m2)``.

The groups and their inclusions (every one a subgroup of D4):

    C1 = {e}                         C2 = {e, rot^2}
    C4 = {rot^r}                     D1 = {e, flip}
    D2 = {e, rot^2, flip, rot^2 flip}   (D1 and C2 are subgroups of D2)
    D4 = all eight elements
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch

__all__ = ["Element", "Group", "get_group", "GROUP_NAMES"]

Element = tuple[int, int]

_ELEMENTS: dict[str, tuple[Element, ...]] = {
    "C1": ((0, 0),),
    "C2": ((0, 0), (2, 0)),
    "C4": ((0, 0), (1, 0), (2, 0), (3, 0)),
    "D1": ((0, 0), (0, 1)),
    "D2": ((0, 0), (2, 0), (0, 1), (2, 1)),
    "D4": ((0, 0), (1, 0), (2, 0), (3, 0), (0, 1), (1, 1), (2, 1), (3, 1)),
}
GROUP_NAMES: tuple[str, ...] = tuple(_ELEMENTS)


def _product(a: Element, b: Element) -> Element:
    (r1, m1), (r2, m2) = a, b
    return ((r1 + (-1) ** m1 * r2) % 4, m1 ^ m2)


def _inverse(a: Element) -> Element:
    r, m = a
    return (r, 1) if m else ((-r) % 4, 0)


@dataclass(frozen=True)
class Group:
    """A finite group of pixel-grid symmetries, with its elements in a fixed order.

    The order of :attr:`elements` is the order of the group axis of feature maps: channel
    ``c * |G| + i`` of a group feature map belongs to element ``elements[i]``.
    """

    name: str
    elements: tuple[Element, ...]

    @property
    def order(self) -> int:
        return len(self.elements)

    @property
    def identity(self) -> Element:
        return (0, 0)

    def index(self, g: Element) -> int:
        """Position of ``g`` on the group axis."""
        try:
            return self.elements.index(tuple(g))
        except ValueError:
            raise ValueError(f"{g} is not an element of {self.name}") from None

    def product(self, a: Element, b: Element) -> Element:
        """``a b``: apply ``b`` first, then ``a``."""
        return _product(a, b)

    def inverse(self, g: Element) -> Element:
        return _inverse(g)

    def __contains__(self, g: object) -> bool:
        return g in self.elements

    def is_subgroup_of(self, other: Group | str) -> bool:
        """Whether every element of this group belongs to ``other``."""
        other = get_group(other) if isinstance(other, str) else other
        return set(self.elements) <= set(other.elements)

    @staticmethod
    def act_on_image(x: torch.Tensor, g: Element) -> torch.Tensor:
        """``g . x`` for a tensor whose last two dimensions are (H, W) of a square grid."""
        r, m = g
        if m:
            x = torch.flip(x, dims=(-1,))
        return torch.rot90(x, r, dims=(-2, -1)) if r % 4 else x

    act_on_kernel = act_on_image

    @cached_property
    def cayley_table(self) -> torch.Tensor:
        """(|G|, |G|) int64: ``table[i, j]`` is the index of ``elements[i] elements[j]``."""
        return torch.tensor(
            [[self.index(_product(a, b)) for b in self.elements] for a in self.elements]
        )

    def permutation(self, g: Element) -> torch.Tensor:
        """(|G|,) int64: index ``i`` goes to the index of ``g elements[i]`` (left action)."""
        return self.cayley_table[self.index(g)].clone()

    def act_on_group_axis(self, x: torch.Tensor, g: Element, dim: int = 2) -> torch.Tensor:
        """Permute the group axis ``dim`` of a feature map by the left action of ``g``.

        If ``y[..., h, ...]`` is the response at group element ``h``, the transformed map is
        ``y'[..., g h, ...] = y[..., h, ...]``.
        """
        # position perm[i] receives entry i, so position j reads entry argsort(perm)[j]
        return x.index_select(dim, torch.argsort(self.permutation(g)).to(x.device))

    def coset_representatives(self, subgroup: Group | str) -> list[Element]:
        """The system R of representatives of the right cosets ``G' r`` (thesis eq. 4-5).

        ``R`` contains the identity and every ``g`` in this group is ``g' r`` for exactly one
        ``g'`` in the subgroup ``G'`` and ``r`` in ``R`` (see :meth:`decompose`). The
        representative of each coset is its first element in the order of :attr:`elements`.
        """
        H = get_group(subgroup) if isinstance(subgroup, str) else subgroup
        if not H.is_subgroup_of(self):
            raise ValueError(
                f"{H.name} is not a subgroup of {self.name}; subgroups of {self.name}: "
                + ", ".join(g.name for g in self.subgroups())
            )
        seen: set[Element] = set()
        reps = []
        for g in self.elements:
            if g in seen:
                continue
            seen.update(_product(h, g) for h in H.elements)
            reps.append(g)
        return reps

    def decompose(self, g: Element, subgroup: Group | str) -> tuple[Element, Element]:
        """Write ``g = g' r`` with ``g'`` in ``subgroup`` and ``r`` in its coset representatives."""
        H = get_group(subgroup) if isinstance(subgroup, str) else subgroup
        for r in self.coset_representatives(H):
            g_prime = _product(tuple(g), _inverse(r))
            if g_prime in H.elements:
                return g_prime, r
        raise ValueError(f"{g} is not an element of {self.name}")

    def subgroups(self) -> list[Group]:
        """The groups of :data:`GROUP_NAMES` that are subgroups of this one (itself included)."""
        return [get_group(n) for n in GROUP_NAMES if get_group(n).is_subgroup_of(self)]

    def __repr__(self) -> str:
        return f"Group({self.name}, order={self.order})"


def get_group(name: str | Group) -> Group:
    """The group called ``name`` (case-insensitive): one of C1, C2, C4, D1, D2, D4."""
    if isinstance(name, Group):
        return name
    key = str(name).upper()
    if key not in _ELEMENTS:
        raise ValueError(f"unknown group {name!r}; known groups: {', '.join(GROUP_NAMES)}")
    if key not in _CACHE:
        _CACHE[key] = Group(key, _ELEMENTS[key])
    return _CACHE[key]


_CACHE: dict[str, Group] = {}
