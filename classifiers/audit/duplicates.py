"""Near-duplicate groups from close pairs, and the leakage they cause across splits.

A group is a connected component of the near-duplicate graph: copies of copies belong
together even when the first and the last differ by more than the radius. A group whose
members sit in more than one split leaks: a head is tested on what it was trained on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

__all__ = ["DuplicateGroup", "group_pairs", "leaking_pairs"]


@dataclass(frozen=True)
class DuplicateGroup:
    """Row numbers of one group's members and whether it spans splits."""

    members: tuple[int, ...]
    leaks: bool


def group_pairs(pairs: np.ndarray, n: int, splits: Sequence[str]) -> list[DuplicateGroup]:
    """Groups of two or more rows joined by ``pairs`` (an (m, 2+) array of row numbers),
    leaking groups first, then larger groups first; members in row order."""
    if not len(pairs):
        return []
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    sizes = np.bincount(component)
    groups = []
    for label in np.flatnonzero(sizes > 1):
        members = tuple(int(row) for row in np.flatnonzero(component == label))
        groups.append(DuplicateGroup(members, len({splits[row] for row in members}) > 1))
    return sorted(groups, key=lambda g: (not g.leaks, -len(g.members), g.members))


def leaking_pairs(groups: Sequence[DuplicateGroup], splits: Sequence[str]) -> int:
    """How many pairs of images, one of each in a different split, the groups hold."""
    total = 0
    for group in groups:
        counts = np.unique([splits[row] for row in group.members], return_counts=True)[1]
        total += (int(counts.sum()) ** 2 - int((counts**2).sum())) // 2
    return total
