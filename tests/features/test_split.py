"""Content-hash splits: adding images never moves an existing image between splits."""

from __future__ import annotations

from features.data.manifest import assign_split, build_manifest
from features.data.scan import scan_dataset
from features.data.synthetic import make_dataset
from tests.conftest import LIMITS


def _splits(root):
    outcomes, predefined = scan_dataset(root, LIMITS, n_jobs=1)
    rows, _, _ = build_manifest(outcomes, root, predefined, "salt-a", 0.25)
    return {row.sha256: row.split for row in rows}


def test_adding_images_keeps_every_existing_assignment(tmp_path):
    root = tmp_path / "images"
    make_dataset(root, per_class=10)
    before = _splits(root)
    make_dataset(root, per_class=15, start=10)
    after = _splits(root)
    assert len(after) == len(before) + 60
    assert all(after[sha] == split for sha, split in before.items())
    assert {"train", "test"} <= set(after.values())


def test_split_depends_on_salt_and_fraction_only():
    hashes = [f"{i:064x}" for i in range(4000)]
    splits = [assign_split(sha, "s", 0.2, 0.1) for sha in hashes]
    assert abs(splits.count("test") / 4000 - 0.2) < 0.03
    assert abs(splits.count("val") / 4000 - 0.1) < 0.03
    assert splits == [assign_split(sha, "s", 0.2, 0.1) for sha in hashes]
    assert splits != [assign_split(sha, "other", 0.2, 0.1) for sha in hashes]
