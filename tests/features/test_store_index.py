"""The store's index: commit records on top of a checkpoint, and the lazy hash lookup."""

from __future__ import annotations

import hashlib
from pathlib import Path

import h5py
import numpy as np
import pytest

import features.store.index
import features.store.writer
from features.store import FeatureStore, StoreError, StoreWriter
from features.store.checkpoint import (
    FORMAT,
    INDEX_NAME,
    checkpoint_format,
    read_checkpoint,
    write_checkpoint,
)
from features.store.fingerprint import Fingerprint
from features.store.hashindex import HashIndex
from features.store.index import COMMIT_DIR, commit_files, read_index
from features.store.maintenance import repair, verify
from features.store.shards import SHARD_DIR, SkipRecord

DIM = 8
FINGERPRINT = Fingerprint(
    "vgg16", "classifier.1", DIM, "random:0", "{}", "fp32", "float16", "t", "t"
)


def _hashes(count: int, start: int = 0) -> list[str]:
    return [hashlib.sha256(str(i).encode()).hexdigest() for i in range(start, start + count)]


def _codes(count: int, start: int = 0) -> np.ndarray:
    return np.arange(start * DIM, (start + count) * DIM, dtype=np.float16).reshape(count, DIM)


def _quiet(message: str) -> None:
    del message


def _commit_blocks(writer: StoreWriter, blocks: int, rows: int = 4) -> None:
    """``blocks`` commits of ``rows`` codes, each with one skip record of its own."""
    for block in range(blocks):
        start = block * rows
        skip = SkipRecord(_hashes(1, start=10_000 + block)[0], "decode", "é" * 200)
        writer.commit(_hashes(rows, start), _codes(rows, start), [skip])


def _killed_writer(root: Path, blocks: int) -> None:
    """A writer that commits ``blocks`` times and dies before folding its records."""
    with pytest.raises(RuntimeError), StoreWriter(root, FINGERPRINT, log=_quiet) as writer:
        _commit_blocks(writer, blocks)
        raise RuntimeError("killed")


def test_a_commit_writes_its_record_and_leaves_the_checkpoint_alone(tmp_path):
    store = tmp_path / "store"
    with StoreWriter(store, FINGERPRINT, log=_quiet) as writer:
        checkpoint = (store / INDEX_NAME).read_bytes()
        for block in range(3):
            writer.commit(_hashes(4, block * 4), _codes(4, block * 4))
            assert (store / INDEX_NAME).read_bytes() == checkpoint
            assert sorted(commit_files(store)) == list(range(1, block + 2))
    assert not commit_files(store), "closing folds the records into the checkpoint"
    assert read_checkpoint(store).generation == 3


def test_index_after_n_commits_equals_the_folded_index(tmp_path):
    store = tmp_path / "store"
    _killed_writer(store, blocks=5)
    replayed = read_index(store)
    assert replayed.generation == 5 and replayed.rows == 20 and len(replayed.skipped) == 5
    assert read_checkpoint(store).generation == 0, "only the records hold the commits"
    with FeatureStore(store) as reader:
        assert reader.get(_hashes(20)).tobytes() == _codes(20).tobytes()
    assert verify(store).ok
    with StoreWriter(store, FINGERPRINT, log=_quiet):
        pass  # recovery folds the records of the killed writer
    assert not commit_files(store)
    assert read_checkpoint(store) == replayed == read_index(store)
    with h5py.File(store / INDEX_NAME, "r") as handle:  # the virtual view covers every row
        assert [value.decode() for value in handle["hashes"][:]] == _hashes(20)


def test_a_crash_between_data_write_and_record_append_recovers(tmp_path, monkeypatch):
    store = tmp_path / "store"
    _killed_writer(store, blocks=2)

    def killed(*args: object) -> None:
        raise KeyboardInterrupt  # the shard is in place, its record never written

    with StoreWriter(store, FINGERPRINT, log=_quiet) as writer:
        monkeypatch.setattr(features.store.writer, "append_commit", killed)
        with pytest.raises(KeyboardInterrupt):
            writer.commit(_hashes(4, 8), _codes(4, 8))
        monkeypatch.undo()
    assert read_index(store).rows == 8
    report = verify(store)
    assert report.ok and [notice.kind for notice in report.notices] == ["orphan"]
    logs: list[str] = []
    with StoreWriter(store, FINGERPRINT, log=logs.append) as writer:
        assert set(_hashes(12)) <= writer.known
    assert any("recovered 4 rows" in line for line in logs), logs
    with FeatureStore(store) as reader:
        assert reader.get(_hashes(12)).tobytes() == _codes(12).tobytes()
    assert verify(store).ok and not verify(store).notices


def test_a_missing_record_is_refused_by_readers_and_healed_by_the_next_writer(tmp_path):
    store = tmp_path / "store"
    _killed_writer(store, blocks=4)
    commit_files(store)[2].unlink()
    with pytest.raises(StoreError, match="lacks the record of generation 2"):
        FeatureStore(store)
    assert [problem.kind for problem in verify(store).problems] == ["index"]
    logs: list[str] = []
    assert repair(store, log=logs.append).ok  # its writer heals the index
    assert sum("a commit record after a missing one" in line for line in logs) == 2, logs
    assert sum("recovered 4 rows" in line for line in logs) == 3, "records 2-4's shards"
    with FeatureStore(store) as reader:
        assert sorted(reader.hashes) == sorted(_hashes(16))
        assert reader.get(_hashes(16)).tobytes() == _codes(16).tobytes()
    assert verify(store).ok


def test_a_reader_racing_a_fold_reads_the_new_checkpoint(tmp_path, monkeypatch):
    store = tmp_path / "store"
    _killed_writer(store, blocks=3)
    real = features.store.index.read_checkpoint

    def folded_meanwhile(root: Path):
        state = real(root)
        monkeypatch.setattr(features.store.index, "read_checkpoint", real)
        with StoreWriter(root, FINGERPRINT, log=_quiet):
            pass  # folds and deletes the records this reader was about to replay
        return state

    monkeypatch.setattr(features.store.index, "read_checkpoint", folded_meanwhile)
    with FeatureStore(store) as reader:
        assert len(reader) == 12 and reader.state.generation == 3


def test_a_format_1_store_opens_and_is_rewritten_before_the_first_commit(tmp_path):
    store = tmp_path / "store"
    with StoreWriter(store, FINGERPRINT, log=_quiet) as writer:
        _commit_blocks(writer, 2)
    with h5py.File(store / INDEX_NAME, "r+") as handle:  # the layout format 1 wrote
        handle.attrs["format"] = "vgg-feature-store/1"
    with FeatureStore(store) as reader:
        assert reader.get(_hashes(8)).tobytes() == _codes(8).tobytes()
    assert verify(store).ok
    with StoreWriter(store, FINGERPRINT, log=_quiet) as writer:
        assert checkpoint_format(store) == FORMAT, "old readers refuse it, never miss rows"
        writer.commit(_hashes(4, 8), _codes(4, 8))
    with FeatureStore(store) as reader:
        assert len(reader) == 12 and reader.state.generation == 3


def test_open_reads_the_index_only_and_streams_without_hashes(tmp_path):
    store = tmp_path / "store"
    with StoreWriter(store, FINGERPRINT, log=_quiet) as writer:
        _commit_blocks(writer, 3)
    with FeatureStore(store) as reader:
        assert len(reader) == 12 and reader._index is None
        assert reader.read_rows(np.arange(12)).tobytes() == _codes(12).tobytes()
        total = reader.to_dask(chunk_rows=5).sum(dtype="f8").compute()
        assert float(total) == float(_codes(12).astype("f8").sum())
        assert reader._index is None, "store-order reads never load the hashes"
        assert reader.positions(_hashes(3, 5)).tolist() == [5, 6, 7]
        assert reader.hashes == _hashes(12)


def test_hash_index_finds_what_a_dict_finds_ties_included():
    rng = np.random.default_rng(0)
    stored = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(2000)]
    # hashes sharing their first 8 bytes, in the order that stresses the tie-break
    stored += [f"{'a' * 8}{tail}" for tail in ("zz", "b", "a", "ba", "")]
    index = HashIndex(np.array(stored, dtype="S64"))
    where = {sha: row for row, sha in enumerate(stored)}
    asked = [*rng.choice(stored, 500), "aaaaaaaab0", "aaaaaaaa0", "aaaaaaab", "f" * 64, "0"]
    rows, found = index.find(asked)
    assert found.tolist() == [sha in where for sha in asked]
    assert [int(r) for r, ok in zip(rows, found, strict=True) if ok] == [
        where[sha] for sha in asked if sha in where
    ]
    assert not len(index.duplicates())
    twice = HashIndex(np.array([*stored, stored[7], stored[-1]], dtype="S64"))
    assert sorted(twice.duplicates().tolist()) == sorted([stored[7].encode(), b"aaaaaaaa"])


def test_empty_hash_index_finds_nothing():
    rows, found = HashIndex(np.empty(0, dtype="S64")).find(["a", "b"])
    assert not found.any() and len(rows) == 2


def test_a_damaged_shard_is_a_store_error_at_its_first_read(tmp_path):
    store = tmp_path / "store"
    with StoreWriter(store, FINGERPRINT, log=_quiet) as writer:
        _commit_blocks(writer, 2)
    damaged = store / SHARD_DIR / read_index(store).shards[1].name
    damaged.write_bytes(damaged.read_bytes()[:100])
    with FeatureStore(store) as reader:  # opening reads the index only
        assert reader.read_rows(np.arange(4)).tobytes() == _codes(4).tobytes()
        with pytest.raises(StoreError, match=r"pipeline\.store verify"):
            reader.read_rows(np.arange(4, 8))
        with pytest.raises(StoreError, match=r"pipeline\.store verify"):
            reader.get(_hashes(1))


def test_a_store_checked_out_without_its_empty_commit_folder_takes_commits(tmp_path):
    store = tmp_path / "store"
    with StoreWriter(store, FINGERPRINT, log=_quiet) as writer:
        _commit_blocks(writer, 1)
    (store / COMMIT_DIR).rmdir()  # as `dvc checkout` leaves it: DVC keeps no empty folder
    with StoreWriter(store, FINGERPRINT, log=_quiet) as writer:
        writer.commit(_hashes(4, 4), _codes(4, 4))
    with FeatureStore(store) as reader:
        assert reader.get(_hashes(8)).tobytes() == _codes(8).tobytes()


def test_records_a_fold_left_behind_are_ignored_then_deleted(tmp_path):
    store = tmp_path / "store"
    _killed_writer(store, blocks=3)
    state = read_index(store)
    write_checkpoint(store, state)  # a fold killed before it deleted the records it absorbed
    assert sorted(commit_files(store)) == [1, 2, 3]
    assert read_index(store) == state, "records up to the checkpoint's generation are skipped"
    assert verify(store).ok
    with StoreWriter(store, FINGERPRINT, log=_quiet) as writer:
        writer.commit(_hashes(4, 12), _codes(4, 12))
    assert not commit_files(store)
    with FeatureStore(store) as reader:
        assert len(reader) == 16 and reader.state.generation == 4
