"""Equivariance-aware architectural optimization (thesis chapter 4)."""

from structlab.equivariance.groups import GROUP_NAMES, Group, get_group

__all__ = ["GROUP_NAMES", "Group", "get_group"]
