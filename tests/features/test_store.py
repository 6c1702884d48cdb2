"""The store's contract: one logical array, snapshots, fingerprints, one writer, a full disk.

Round trips use generated codes (no network, no model); the concurrency tests run a real
extraction in a child process (:mod:`tests.killpoints`) and freeze it with SIGSTOP in the
middle of a commit, so what a reader or a second writer meets is exactly that moment.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import psutil
import pytest

import features.store.index
import features.store.reader
import features.store.shards
from features.compute.extract import extract_codes
from features.data.synthetic import make_dataset
from features.files import TMP_PREFIX, file_sha256
from features.store import FeatureStore, StoreError, StoreFullError, StoreWriter
from features.store.checkpoint import INDEX_NAME
from features.store.fingerprint import Fingerprint, FingerprintMismatch
from features.store.index import COMMIT_DIR, read_index
from features.store.lock import LockError
from features.store.maintenance import verify
from features.store.shards import SHARD_DIR, write_shard
from tests.conftest import LIMITS, SMALL_CONFIG, refs_for
from tests.killpoints import KillPoint, child_command, save_refs

ROOT = Path(__file__).resolve().parents[2]
DIM = 4096
FINGERPRINT = Fingerprint(
    backbone="vgg16",
    layer="classifier.1",
    dim=DIM,
    weights="random:0",
    preprocessing="{}",
    precision="fp32",
    dtype="float16",
    torch="test",
    torchvision="test",
)


def _hashes(count: int, start: int = 0) -> list[str]:
    return [hashlib.sha256(str(i).encode()).hexdigest() for i in range(start, start + count)]


def _codes(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((count, DIM), dtype=np.float32).astype(np.float16)


def _quiet(message: str) -> None:
    del message


def _store(root: Path, blocks: int = 3, rows: int = 8) -> tuple[list[str], np.ndarray]:
    """A store of ``blocks`` commits of ``rows`` generated codes; returns all of them."""
    hashes, codes = _hashes(blocks * rows), _codes(blocks * rows, seed=1)
    with StoreWriter(root, FINGERPRINT, log=_quiet) as writer:
        for start in range(0, len(hashes), rows):
            writer.commit(hashes[start : start + rows], codes[start : start + rows])
    return hashes, codes


def _files(root: Path) -> dict[str, bytes]:
    """Every file of a store but the lock, by relative path: the store's exact state."""
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.name != "LOCK"
    }


def test_codes_read_back_in_any_order_with_duplicates(tmp_path):
    hashes, codes = _store(tmp_path / "store")
    order = [5, 23, 0, 5, 17, 8, 8, 1]
    with FeatureStore(tmp_path / "store", expected=FINGERPRINT) as reader:
        assert len(reader) == 24 and reader.hashes == hashes
        assert np.array_equal(reader.get([hashes[i] for i in order]), codes[order])
        assert reader.contains([hashes[3], "0" * 64]).tolist() == [True, False]
        with pytest.raises(StoreError, match="1 of 2 images have no codes"):
            reader.get([hashes[0], "0" * 64])


def test_commit_stores_each_hash_once(tmp_path):
    hashes, codes = _hashes(6), _codes(6, seed=2)
    with StoreWriter(tmp_path / "store", FINGERPRINT, log=_quiet) as writer:
        writer.commit(hashes[:3], codes[:3])
        batch = [hashes[2], hashes[3], hashes[3], hashes[4]]  # one stored, one repeated
        record = writer.commit(batch, codes[[5, 3, 0, 4]])
        assert record is not None and record.rows == 2
        assert writer.commit(hashes[:2], codes[:2]) is None, "nothing new: no commit"
    with FeatureStore(tmp_path / "store") as reader:
        assert reader.hashes == hashes[:5]
        assert np.array_equal(reader.get(hashes[:5]), codes[:5]), "first write wins"


def test_iter_chunks_yields_bounded_blocks_in_order(tmp_path):
    hashes, codes = _store(tmp_path / "store")
    with FeatureStore(tmp_path / "store") as reader:
        blocks = list(reader.iter_chunks(hashes[::-1], chunk_rows=5))
    assert [len(block) for block, _ in blocks] == [5, 5, 5, 5, 4]
    assert all(len(values) <= 5 for _, values in blocks)
    assert [sha for block, _ in blocks for sha in block] == hashes[::-1]
    assert np.array_equal(np.concatenate([values for _, values in blocks]), codes[::-1])


def test_iter_chunks_reuse_reads_every_block_into_one_buffer(tmp_path):
    hashes, codes = _store(tmp_path / "store")
    order = hashes[::-1]
    with FeatureStore(tmp_path / "store") as reader:
        seen, copies = set(), []
        for _, values in reader.iter_chunks(order, chunk_rows=5, reuse=True):
            seen.add(values.__array_interface__["data"][0])
            copies.append(values.copy())  # each block is overwritten by the next
    assert len(seen) == 1, "every block is a view of the same buffer"
    assert np.array_equal(np.concatenate(copies), codes[::-1])


def test_a_reader_keeps_at_most_its_limit_of_shards_open(tmp_path, monkeypatch):
    hashes, codes = _store(tmp_path / "store", blocks=5, rows=4)
    monkeypatch.setattr(features.store.reader, "_OPEN_SHARDS", 2)
    order = list(range(len(hashes)))[::-1] * 2  # every shard, twice, in turn
    with FeatureStore(tmp_path / "store") as reader:
        for row in order:
            assert np.array_equal(reader.get([hashes[row]]), codes[row : row + 1])
            assert len(reader._handles) <= 2
    assert len(reader._handles) == 0, "close() closes them all"


def test_get_into_a_buffer_fills_its_head_and_refuses_a_wrong_one(tmp_path):
    hashes, codes = _store(tmp_path / "store")
    with FeatureStore(tmp_path / "store") as reader:
        buffer = np.full((10, DIM), np.nan, dtype=np.float16)
        head = reader.get(hashes[3:7], out=buffer)
        assert np.shares_memory(head, buffer) and np.array_equal(head, codes[3:7])
        assert np.isnan(buffer[4:]).all(), "rows past the head are left alone"
        for wrong in (np.empty((3, DIM), np.float16), np.empty((10, DIM), np.float32)):
            with pytest.raises(ValueError, match="out must hold"):
                reader.get(hashes[3:7], out=wrong)


def test_to_dask_is_the_whole_store_in_order(tmp_path):
    _, codes = _store(tmp_path / "store")
    with FeatureStore(tmp_path / "store") as reader:
        lazy = reader.to_dask(chunk_rows=5)
        assert lazy.shape == (24, DIM) and lazy.dtype == np.float16
        assert np.array_equal(lazy.compute(), codes)


def test_fingerprint_mismatch_is_refused_on_open_and_on_write(tmp_path):
    store = tmp_path / "store"
    _store(store)
    other = replace(FINGERPRINT, weights="random:1")
    expected = "weights: the store holds 'random:0', this run computes 'random:1'"
    with pytest.raises(FingerprintMismatch, match=expected):
        FeatureStore(store, expected=other)
    files = _files(store)
    with pytest.raises(FingerprintMismatch, match="random:1"):
        StoreWriter(store, other, log=_quiet).open()
    assert not (store / "LOCK").exists(), "a refused writer releases the lock"
    assert _files(store) == files
    with StoreWriter(store, FINGERPRINT, log=_quiet):
        pass


def test_reader_keeps_its_snapshot_while_a_writer_commits(tmp_path):
    store = tmp_path / "store"
    hashes, codes = _store(store, blocks=1)
    more, more_codes = _hashes(8, start=100), _codes(8, seed=3)
    with FeatureStore(store) as before:
        with StoreWriter(store, FINGERPRINT, log=_quiet) as writer:
            writer.commit(more, more_codes)
        assert len(before) == 8 and before.state.generation == 1
        assert np.array_equal(before.get(hashes), codes)
        assert not before.contains(more).any()
        with FeatureStore(store) as after:
            assert len(after) == 16 and np.array_equal(after.get(more), more_codes)


def test_any_hdf5_reader_sees_one_codes_array(tmp_path, monkeypatch):
    store = tmp_path / "store"
    hashes, codes = _store(store)
    monkeypatch.chdir(tmp_path / "store" / SHARD_DIR)  # shards resolve from the index's folder
    with h5py.File(store / INDEX_NAME, "r") as handle:
        assert handle["codes"].is_virtual and handle["codes"].shape == (24, DIM)
        assert np.array_equal(handle["codes"][:], codes)
        assert [value.decode() for value in handle["hashes"][:]] == hashes
        assert np.array_equal(handle["codes"][7:9], codes[7:9]), "across a shard boundary"


def test_missing_store_is_a_clear_error(tmp_path):
    with pytest.raises(StoreError, match="run the extract stage first"):
        FeatureStore(tmp_path / "nowhere")


# --- one writer, many readers -------------------------------------------------------------


@pytest.fixture(scope="module")
def refs_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 generated images as a child's ``--refs`` file."""
    root = tmp_path_factory.mktemp("concurrent")
    make_dataset(root / "images", per_class=6)
    return save_refs(refs_for(root / "images"), root / "refs.json")


def _wait_until_stopped(child: subprocess.Popen, timeout: float = 120.0) -> None:
    process = psutil.Process(child.pid)
    deadline = time.monotonic() + timeout
    while process.status() != psutil.STATUS_STOPPED:
        assert child.poll() is None, child.communicate()[0]
        assert time.monotonic() < deadline, "the child never reached its stop point"
        time.sleep(0.01)


@pytest.fixture
def frozen_writer(tmp_path: Path, refs_file: Path) -> Iterator[subprocess.Popen]:
    """An extraction frozen by SIGSTOP with commit 2 half done: shard 2 renamed into place,
    its commit record written to a temporary file but not yet renamed into ``commits/``."""
    point = KillPoint("features.store.index.publish", "before", 2, "index")
    command = child_command(
        "extract", tmp_path / "store", "--refs", str(refs_file), kill=point, signum="STOP"
    )
    child = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        _wait_until_stopped(child)
        yield child
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


@pytest.mark.slow
def test_second_writer_fails_fast_and_readers_see_the_last_commit(tmp_path, frozen_writer):
    store = tmp_path / "store"
    fingerprint = read_index(store).fingerprint
    started = time.monotonic()
    with pytest.raises(LockError, match=rf"being written by pid {frozen_writer.pid} on "):
        StoreWriter(store, fingerprint, log=_quiet).open()
    assert time.monotonic() - started < 1.0, "fails fast, never waits for the holder"
    cli = subprocess.run(
        [sys.executable, "-m", "pipeline.store", "repair", str(store)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert cli.returncode == 2 and f"pid {frozen_writer.pid}" in cli.stderr, cli.stderr

    left = sorted(p.name for p in (*store.glob(f"{COMMIT_DIR}/*"), *store.glob("shards/*")))
    assert len(left) == 4 and left[0].startswith(TMP_PREFIX), "half a commit is on disk"
    snapshot = FeatureStore(store)  # opens at once although the writer holds the lock
    assert len(snapshot) == 8 and snapshot.state.generation == 1
    first = snapshot.get(snapshot.hashes)
    midway = verify(store)
    assert midway.ok and {n.kind for n in midway.notices} == {"orphan", "temporary"}

    frozen_writer.send_signal(signal.SIGCONT)
    output, _ = frozen_writer.communicate(timeout=120)
    assert frozen_writer.returncode == 0, output
    assert "reused 0, computed 24" in output
    final = verify(store)
    assert final.ok and not final.notices and not (store / "LOCK").exists()
    with FeatureStore(store) as reader:
        assert len(reader) == 24 and np.array_equal(reader.get(snapshot.hashes), first)
    assert len(snapshot) == 8 and np.array_equal(snapshot.get(snapshot.hashes), first)
    snapshot.close()


@pytest.mark.slow
def test_readers_during_extraction_only_ever_see_whole_commits(tmp_path, refs_file):
    store = tmp_path / "store"
    command = child_command("extract", store, "--refs", str(refs_file), "--commit-rows", "4")
    child = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    snapshots: dict[int, tuple[list[str], np.ndarray]] = {}
    while child.poll() is None:
        try:
            with FeatureStore(store) as reader:
                snapshots[reader.state.generation] = (reader.hashes, reader.get(reader.hashes))
        except StoreError:
            pass  # the store's first index has not been renamed into place yet
        time.sleep(0.005)  # leave the two cores to the writer
    assert child.returncode == 0, child.communicate()[0]
    partial = [rows for rows, _ in snapshots.values() if 0 < len(rows) < 24]
    assert partial, f"no reader ran between commits: generations seen {sorted(snapshots)}"
    with FeatureStore(store) as final:
        for generation, (hashes, codes) in snapshots.items():
            assert len(hashes) == 4 * generation == len(set(hashes)), "whole commits only"
            assert hashes == final.hashes[: len(hashes)]
            assert codes.tobytes() == final.get(hashes).tobytes()


@pytest.mark.slow
def test_stale_lock_of_a_killed_writer_is_taken_over(tmp_path, refs_file):
    store = tmp_path / "store"
    point = KillPoint("features.store.committer.Committer._commit", "after")
    child = subprocess.run(
        child_command("extract", store, "--refs", str(refs_file), kill=point),
        cwd=ROOT,
        capture_output=True,
    )
    assert child.returncode == -signal.SIGKILL, child.stdout
    holder = (store / "LOCK").read_text()
    pid = int(re.search(r'"pid": (\d+)', holder).group(1))
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    logs: list[str] = []
    with StoreWriter(store, read_index(store).fingerprint, log=logs.append) as writer:
        assert len(writer.known) == 8
    assert any(
        f"took over a stale lock left by pid {pid} " in line and "no longer running" in line
        for line in logs
    ), logs
    assert not (store / "LOCK").exists()
    assert verify(store).ok


# --- NaN and inf --------------------------------------------------------------------------


def test_non_finite_codes_are_refused_before_anything_is_written(tmp_path):
    store = tmp_path / "store"
    _store(store, blocks=1)
    with StoreWriter(store, FINGERPRINT, log=_quiet) as writer:
        before = _files(store)
        for bad in (np.nan, np.inf, -np.inf):
            codes = _codes(4, seed=5)
            codes[2, 7] = bad
            with pytest.raises(ValueError, match=r"1 of 4 rows hold NaN or inf \(first at row 2\)"):
                writer.commit(_hashes(4, start=100), codes)
        assert _files(store) == before, "no shard, no index, no temporary file"


def test_a_worker_shard_holding_nan_is_refused_and_deleted(tmp_path):
    """The Dask coordinator re-checks shards it did not write (``write_shard`` refuses NaN)."""
    store = tmp_path / "store"
    _store(store, blocks=1)
    with StoreWriter(store, FINGERPRINT, log=_quiet) as writer:
        before = _files(store)
        record = write_shard(store / SHARD_DIR, _hashes(4, start=50), _codes(4, 6), FINGERPRINT)
        path = store / SHARD_DIR / record.name
        with h5py.File(path, "r+") as handle:
            handle["codes"][1, 0] = np.nan
        record = replace(record, sha256=file_sha256(path), bytes=path.stat().st_size)
        with pytest.raises(ValueError, match=rf"refused {record.name}: 1 of 4 rows"):
            writer.commit_shards([record])
        assert not path.exists(), "deleted, or the next writer would adopt it"
        assert _files(store) == before


def test_an_orphan_shard_holding_nan_is_removed_not_adopted(tmp_path):
    """Only a hand edit or an old version can leave one; recovery must not serve it."""
    store = tmp_path / "store"
    _store(store, blocks=1)
    before = _files(store)
    record = write_shard(store / SHARD_DIR, _hashes(4, start=50), _codes(4, 6), FINGERPRINT)
    path = store / SHARD_DIR / record.name
    with h5py.File(path, "r+") as handle:
        handle["codes"][2, 3] = np.inf
    said: list[str] = []
    with StoreWriter(store, FINGERPRINT, log=said.append):
        pass
    assert not path.exists() and any("hold NaN or inf" in line for line in said)
    assert _files(store) == before


# --- a full disk --------------------------------------------------------------------------


def _enospc() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_enospc_while_writing_a_shard_leaves_the_store_unchanged(tmp_path, monkeypatch):
    store = tmp_path / "store"
    hashes, codes = _store(store, blocks=1)
    real = features.store.shards._write_shard_file

    def half_written(path: Path, *args: object) -> None:
        real(path, *args)
        with open(path, "r+b") as stream:  # the disk filled up halfway through
            stream.truncate(path.stat().st_size // 2)
        raise _enospc()

    with StoreWriter(store, FINGERPRINT, log=_quiet) as writer:
        before = _files(store)
        monkeypatch.setattr(features.store.shards, "_write_shard_file", half_written)
        with pytest.raises(StoreFullError, match="previous 8 rows intact") as caught:
            writer.commit(_hashes(8, start=8), _codes(8, seed=4))
        assert caught.value.__cause__.errno == errno.ENOSPC
        assert _files(store) == before, "index and shards byte for byte, no temporaries"
        monkeypatch.undo()
        writer.commit(_hashes(8, start=8), _codes(8, seed=4))
    report = verify(store)
    assert report.ok and not report.notices
    with FeatureStore(store) as reader:
        assert len(reader) == 16 and np.array_equal(reader.get(hashes), codes)


def test_enospc_while_publishing_the_commit_record_keeps_the_old_commit(tmp_path, monkeypatch):
    store = tmp_path / "store"
    _store(store, blocks=1)
    real = features.store.index.publish

    def full_at_record(tmp: Path, final: Path) -> None:
        if final.parent.name == COMMIT_DIR:
            raise _enospc()
        real(tmp, final)

    new = _hashes(8, start=8)
    with StoreWriter(store, FINGERPRINT, log=_quiet) as writer:
        before = _files(store)
        monkeypatch.setattr(features.store.index, "publish", full_at_record)
        with pytest.raises(StoreFullError, match="disk full while committing 8 rows"):
            writer.commit(new, _codes(8, seed=5))
    monkeypatch.undo()
    after = _files(store)
    extra = set(after) - set(before)
    assert {name: after[name] for name in before} == before, "old index and shards untouched"
    assert len(extra) == 1 and extra.pop().startswith(f"{SHARD_DIR}/shard-"), after.keys()
    assert verify(store).ok, "the finished shard is an orphan: not served, not a problem"
    logs: list[str] = []
    with StoreWriter(store, FINGERPRINT, log=logs.append) as writer:
        assert set(new) <= writer.known, "the next writer adopts it: no work is lost"
    assert any("recovered 8 rows" in line for line in logs), logs


@pytest.mark.slow
def test_enospc_during_extraction_is_a_clear_error_and_resumes(tmp_path, monkeypatch):
    make_dataset(tmp_path / "images", per_class=4)
    refs = refs_for(tmp_path / "images")
    store = tmp_path / "store"
    real = features.store.shards._write_shard_file
    calls: list[dict[str, bytes]] = []

    def full_on_second_shard(path: Path, *args: object) -> None:
        calls.append(_files(store))
        if len(calls) == 2:
            raise _enospc()
        real(path, *args)

    monkeypatch.setattr(features.store.shards, "_write_shard_file", full_on_second_shard)
    with pytest.raises(StoreFullError, match=r"previous 8 rows intact\. Free space and rerun"):
        extract_codes(refs, store, SMALL_CONFIG, LIMITS, progress=False, log=_quiet)
    assert _files(store) == calls[1], "the store is exactly as before the failed commit"
    assert not (store / "LOCK").exists()
    monkeypatch.undo()
    rerun = extract_codes(refs, store, SMALL_CONFIG, LIMITS, progress=False, log=_quiet)
    assert (rerun.reused, rerun.computed) == (8, 8)
    assert verify(store).ok


@pytest.fixture
def small_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs: a disk that really fills up. Needs root and mount rights."""
    mountpoint = tmp_path / "small"
    mountpoint.mkdir()
    try:
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mountpoint)],
            capture_output=True,
            text=True,
        )
    except FileNotFoundError:
        pytest.skip("no mount command: the injected-error ENOSPC tests cover this")
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()}); covered by injection")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=True)


def test_enospc_on_a_filesystem_that_fills_up(small_filesystem):
    store = small_filesystem / "store"
    hashes, codes = _store(store, blocks=1)
    free = os.statvfs(small_filesystem).f_bavail * os.statvfs(small_filesystem).f_frsize
    filler = small_filesystem / "filler"
    filler.write_bytes(b"\0" * (free - (16 << 10)))  # 16 KiB left: less than one shard
    new = _hashes(8, start=8)
    with StoreWriter(store, FINGERPRINT, log=_quiet) as writer:
        before = _files(store)
        with pytest.raises(StoreFullError, match="previous 8 rows intact"):
            writer.commit(new, _codes(8, seed=6))
        assert _files(store) == before, "no short shard, no short index, no temporaries"
    assert verify(store).ok and not verify(store).notices
    filler.unlink()
    with StoreWriter(store, FINGERPRINT, log=_quiet) as writer:
        writer.commit(new, _codes(8, seed=6))
    with FeatureStore(store) as reader:
        assert len(reader) == 16 and np.array_equal(reader.get(hashes), codes)
    assert verify(store).ok
