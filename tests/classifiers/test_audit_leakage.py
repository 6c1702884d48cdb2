"""Near-duplicate groups downstream: one split per group, nothing else moved; leaked
evaluation images named."""

from __future__ import annotations

import numpy as np

from classifiers.audit.leakage import apply_groups, leaked_hashes, regroup, score_without_leaked
from classifiers.data import SplitData
from features.data.manifest import ManifestRow


def _row(sha: str, split: str, folder: bool = False) -> ManifestRow:
    path = f"{split}/a/{sha}.jpg" if folder else f"a/{sha}.jpg"
    return ManifestRow(path, sha, "a", split)


def test_regroup_keeps_a_group_together_and_moves_nothing_else():
    rows = [_row(sha, split) for sha, split in [("b1", "test"), ("a1", "train"), ("c1", "test")]]
    rows += [_row(f"z{i}", ["train", "test", "val"][i % 3]) for i in range(30)]
    regrouped, moved = regroup(rows, [["b1", "a1", "gone"]])
    split = {row.sha256: row.split for row in regrouped}
    assert split["a1"] == split["b1"] == "train"  # the smallest hash's split
    assert moved == 1
    assert [r for r in regrouped if r.sha256 not in {"a1", "b1"}] == [
        r for r in rows if r.sha256 not in {"a1", "b1"}
    ]


def test_a_dataset_with_its_own_split_folders_is_never_regrouped():
    rows = [_row("a1", "train", folder=True), _row("b1", "test", folder=True)]
    assert apply_groups(rows, [["a1", "b1"]], enabled=True) == (rows, 0)
    project = [_row("a1", "train"), _row("b1", "test")]
    assert apply_groups(project, [["a1", "b1"]], enabled=False) == (project, 0)
    assert apply_groups(project, [["a1", "b1"]], enabled=True)[1] == 1


def test_leaked_hashes_are_the_evaluated_members_of_cross_split_groups():
    rows = [_row("a", "train"), _row("b", "test"), _row("c", "test"), _row("d", "test")]
    groups = [["a", "b"], ["c", "d"]]  # c and d are copies of each other, both in test
    assert leaked_hashes(rows, groups, "test") == {"b"}
    assert leaked_hashes(rows, groups, "val") == set()


def test_score_without_leaked_drops_exactly_those_images():
    held_out = SplitData(np.zeros((4, 2)), np.array(["a", "a", "b", "b"]), ["w", "x", "y", "z"])
    predicted = np.array(["a", "b", "b", "b"])
    clean = score_without_leaked(held_out, predicted, ["a", "b"], {"x"})
    assert clean["excluded"] == 1 and clean["n"] == 3 and clean["accuracy"] == 1.0
