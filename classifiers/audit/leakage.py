"""What near-duplicate groups change downstream: the splits of a dataset the project splits
itself, and which evaluation images a head may have seen a copy of."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from features.data.manifest import ManifestRow

__all__ = ["leaked_hashes", "regroup"]


def regroup(
    rows: Sequence[ManifestRow], groups: Sequence[Sequence[str]]
) -> tuple[list[ManifestRow], int]:
    """``rows`` with each group's members in one split: that of the member with the smallest
    content hash, so the choice depends on the group alone. Returns the rows and how many
    moved; an image in no group never moves."""
    split_of = {row.sha256: row.split for row in rows}
    target: dict[str, str] = {}
    for group in groups:
        present = sorted(sha for sha in group if sha in split_of)
        if present:
            target.update(dict.fromkeys(present, split_of[present[0]]))
    moved = sum(target.get(row.sha256, row.split) != row.split for row in rows)
    return [replace(row, split=target.get(row.sha256, row.split)) for row in rows], moved


def leaked_hashes(
    rows: Sequence[ManifestRow], groups: Sequence[Sequence[str]], evaluated: str
) -> set[str]:
    """Images of the ``evaluated`` split whose group has a member in another split."""
    split_of = {row.sha256: row.split for row in rows}
    leaked: set[str] = set()
    for group in groups:
        splits = {split_of[sha] for sha in group if sha in split_of}
        if evaluated in splits and len(splits) > 1:
            leaked.update(sha for sha in group if split_of.get(sha) == evaluated)
    return leaked
