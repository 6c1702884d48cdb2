"""Shuffled passes: every row once, whole HDF5 chunks per read, classes mixed within a
chunk, a pass fixed by its seed, and the same chunks from the store and its dask.array."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from classifiers.epochs import PIECE_ROWS, iter_split
from features.data.manifest import ManifestRow
from features.store import FeatureStore, StoreWriter
from features.store.fingerprint import Fingerprint

FINGERPRINT = Fingerprint("vgg16", "classifier.1", 8, "random:0", "{}", "fp32", "float16", "2", "0")
ROWS = 1000


@pytest.fixture(scope="module")
def sorted_store(tmp_path_factory) -> tuple[list[ManifestRow], Path]:
    """1,000 rows in class order (100 per class, as a manifest sorted by folder stores
    them), committed 300 at a time; every 10th image is val, the rest train."""
    root = tmp_path_factory.mktemp("epochs") / "store"
    hashes = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(ROWS)]
    codes = np.arange(ROWS, dtype=np.float16)[:, None].repeat(8, axis=1)  # row i holds i
    with StoreWriter(root, FINGERPRINT, log=lambda _: None) as writer:
        for start in range(0, ROWS, 300):
            writer.commit(hashes[start : start + 300], codes[start : start + 300])
    rows = [
        ManifestRow(f"{i // 100}/{i}.jpg", sha, f"c{i // 100}", "val" if i % 10 == 0 else "train")
        for i, sha in enumerate(hashes)
    ]
    return rows, root


def _pass(rows, root, chunk_rows, seed, codes=None):
    with FeatureStore(root) as store:
        return list(iter_split(rows, "train", store, chunk_rows, seed, codes))


def test_a_pass_reads_every_train_row_once_in_chunks_that_mix_the_classes(sorted_store):
    rows, root = sorted_store
    chunks = _pass(rows, root, chunk_rows=256, seed=3)
    seen = np.concatenate([X[:, 0] for X, _ in chunks]).astype(int)
    assert sorted(seen) == [i for i in range(ROWS) if i % 10]  # train only, each once
    assert all(len(y) <= 256 for _, y in chunks)
    for X, y in chunks:
        assert (y == np.array([f"c{int(v) // 100}" for v in X[:, 0]])).all()  # labels follow
    assert np.mean([len(set(y)) for _, y in chunks]) >= 3  # store order would give 1-2


def test_each_read_is_whole_hdf5_chunks(sorted_store, monkeypatch):
    rows, root = sorted_store
    asked: list[np.ndarray] = []
    read_rows = FeatureStore.read_rows

    def counted(self, positions):
        asked.append(np.asarray(positions))
        return read_rows(self, positions)

    monkeypatch.setattr(FeatureStore, "read_rows", counted)
    _pass(rows, root, chunk_rows=256, seed=0)
    assert sum(len(block) for block in asked) == 900
    for block in asked:
        assert len(set(block // PIECE_ROWS)) <= 256 // PIECE_ROWS  # whole pieces, not rows
        assert list(block) == sorted(block)  # asked for in store order


def _order(rows, root, seed: int) -> np.ndarray:
    return np.concatenate([X[:, 0] for X, _ in _pass(rows, root, 128, seed)])


def test_a_pass_is_fixed_by_its_seed_and_any_int_seed_works(sorted_store):
    rows, root = sorted_store
    orders = {seed: _order(rows, root, seed) for seed in (-2, -1, 0, 1, 7)}
    np.testing.assert_array_equal(orders[-1], _order(rows, root, -1))
    assert len({order.tobytes() for order in orders.values()}) == len(orders)


def test_chunks_smaller_than_a_piece_stay_within_chunk_rows(sorted_store):
    rows, root = sorted_store
    chunks = _pass(rows, root, chunk_rows=5, seed=0)
    assert max(len(y) for _, y in chunks) <= 5 and sum(len(y) for _, y in chunks) == 900


def test_the_dask_array_gives_the_stores_chunks(sorted_store):
    rows, root = sorted_store
    with FeatureStore(root) as store:
        codes = store.to_dask(chunk_rows=PIECE_ROWS)
        lazy = list(iter_split(rows, "train", store, 128, 5, codes))
    for (X, y), (X_lazy, y_lazy) in zip(_pass(rows, root, 128, 5), lazy, strict=True):
        np.testing.assert_array_equal(X, X_lazy)
        np.testing.assert_array_equal(y, y_lazy)
