"""What near-duplicate groups change downstream: the splits of a dataset the project splits
itself, and which evaluation images a head may have seen a copy of."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from classifiers.audit.outputs import read_groups
from classifiers.data import SplitData, has_split_folders
from classifiers.evaluate import score
from features.data.manifest import ManifestRow, read_manifest

__all__ = ["apply_groups", "leaked_hashes", "read_rows", "regroup", "score_without_leaked"]


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


def apply_groups(
    rows: Sequence[ManifestRow], groups: Sequence[Sequence[str]], enabled: bool
) -> tuple[list[ManifestRow], int]:
    """:func:`regroup` for a dataset the project split itself (``audit.regroup``); a
    dataset with its own train/ and test/ folders keeps them as they are."""
    if not enabled or not groups or has_split_folders(rows):
        return list(rows), 0
    return regroup(rows, groups)


def score_without_leaked(
    held_out: SplitData, predicted: np.ndarray, classes: list[str], leaked: set[str]
) -> dict[str, Any]:
    """The evaluation's headline figures again, without the images in ``leaked``."""
    keep = np.array([sha not in leaked for sha in held_out.hashes], dtype=bool)
    figures = score(held_out.y[keep], predicted[keep], classes) if keep.any() else {}
    return {
        "excluded": int((~keep).sum()),
        "n": int(keep.sum()),
        **{
            key: figures.get(key)
            for key in ("accuracy", "accuracy_ci", "balanced_accuracy", "macro_f1")
        },
    }


def read_rows(
    manifest: Path, groups_file: Path | None, regroup_enabled: bool
) -> tuple[list[ManifestRow], list[list[str]], int]:
    """The manifest's rows with the audit's groups applied (:func:`apply_groups`), the
    groups, and how many images moved; without a groups file, the manifest as it is."""
    groups = read_groups(groups_file) if groups_file else []
    rows, moved = apply_groups(read_manifest(manifest), groups, regroup_enabled)
    return rows, groups, moved
