"""verify, repair, info and compact: damage a real store, find it, fix it, recompute only it.

One clean extraction (24 images, 3 shards of 8) is copied into each test and damaged there;
``repair`` plus a re-extract must give back the clean run's codes bit for bit while
computing only the rows that were dropped.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import h5py
import numpy as np
import pytest

import features.store.reader
from features.compute.extract import extract_codes
from features.compute.loader import ImageRef
from features.data.synthetic import make_dataset
from features.files import file_sha256
from features.store import FeatureStore, StoreError, StoreWriter
from features.store.checkpoint import INDEX_NAME
from features.store.index import read_index, write_index
from features.store.maintenance import compact, info, repair, verify
from features.store.shards import SHARD_DIR, write_shard
from tests.conftest import LIMITS, SMALL_CONFIG, refs_for
from tests.killpoints import KillPoint, child_command

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Clean:
    store: Path
    refs: list[ImageRef]
    hashes: list[str]  # in store order
    codes: np.ndarray


def _quiet(message: str) -> None:
    del message


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Clean:
    root = tmp_path_factory.mktemp("maintenance")
    make_dataset(root / "images", per_class=6)
    refs = refs_for(root / "images")
    extract_codes(refs, root / "store", SMALL_CONFIG, LIMITS, progress=False, log=_quiet)
    with FeatureStore(root / "store") as reader:
        assert reader.state.rows == 24 and len(reader.state.shards) == 3
        return Clean(root / "store", refs, reader.hashes, reader.get(reader.hashes))


@pytest.fixture
def store(clean: Clean, tmp_path: Path) -> Path:
    """A private copy of the clean store, to damage."""
    return Path(shutil.copytree(clean.store, tmp_path / "store"))


def _shard(store: Path, index: int) -> Path:
    return store / SHARD_DIR / read_index(store).shards[index].name


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.store", *args], cwd=ROOT, capture_output=True, text=True
    )


def _reextract(clean: Clean, store: Path) -> tuple[int, int]:
    report = extract_codes(clean.refs, store, SMALL_CONFIG, LIMITS, progress=False, log=_quiet)
    return report.reused, report.computed


def _assert_clean(clean: Clean, store: Path) -> None:
    report = verify(store)
    assert report.ok and not report.notices, (report.problems, report.notices)
    with FeatureStore(store) as reader:
        assert sorted(reader.hashes) == sorted(clean.hashes)
        assert reader.get(clean.hashes).tobytes() == clean.codes.tobytes()


def _truncate(path: Path) -> str:
    with open(path, "r+b") as stream:
        stream.truncate(path.stat().st_size // 2)
    return "truncated"


def _flip_byte(path: Path) -> str:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # inside the codes: the file still opens and decodes
    path.write_bytes(bytes(data))
    return "corrupt"


@pytest.mark.parametrize("damage", [_truncate, _flip_byte], ids=["truncated", "flipped_byte"])
def test_damaged_shard_is_found_repaired_and_only_its_rows_recomputed(clean, store, damage):
    victim = _shard(store, 1)
    kind = damage(victim)
    report = verify(store)
    assert [(p.kind, p.shard) for p in report.problems] == [(kind, victim.name)]
    assert report.rows == 16
    found = _cli("verify", str(store))
    assert found.returncode == 1, found.stdout + found.stderr
    assert f"problem: [{kind}] {victim.name}" in found.stdout
    assert "the index lists 24 rows in 3 shards, 16 of them healthy" in found.stdout

    fixed = _cli("repair", str(store))
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert f"dropped {victim.name}" in fixed.stdout
    assert "16 rows in 2 shards: OK" in fixed.stdout
    assert not victim.exists()
    assert _reextract(clean, store) == (16, 8)
    _assert_clean(clean, store)


def test_shard_with_a_nan_row_is_found_dropped_and_recomputed(clean, store):
    state = read_index(store)
    victim = _shard(store, 1)
    with h5py.File(victim, "r+") as handle:
        handle["codes"][3, 100] = np.nan
    # Re-record the checksum, so that the row check, not the SHA-256, is what finds it.
    record = replace(state.shards[1], sha256=file_sha256(victim), bytes=victim.stat().st_size)
    shards = (state.shards[0], record, state.shards[2])
    write_index(store, replace(state, shards=shards, generation=state.generation + 1))
    report = verify(store)
    assert [(p.kind, p.shard) for p in report.problems] == [("non_finite", victim.name)]
    assert report.rows == 16
    assert verify(store, full=False).ok, "--quick reads sizes only"
    found = _cli("verify", str(store))
    assert found.returncode == 1, found.stdout + found.stderr
    assert f"problem: [non_finite] {victim.name}: 1 of 8 rows hold NaN or inf" in found.stdout
    summary = (
        f"verify: {store}: the index lists 24 rows in 3 shards, 16 of them healthy: 1 problem(s)"
    )
    assert summary in found.stdout

    fixed = _cli("repair", str(store))
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert f"dropped {victim.name}" in fixed.stdout
    assert "16 rows in 2 shards: OK" in fixed.stdout
    assert _reextract(clean, store) == (16, 8), "whole batches again: bit-identical codes"
    _assert_clean(clean, store)


def test_extract_on_a_damaged_store_stops_with_the_fix(clean, store):
    _truncate(_shard(store, 2))
    with pytest.raises(StoreError, match=r"cannot be read .*pipeline\.store repair"):
        extract_codes(clean.refs, store, SMALL_CONFIG, LIMITS, progress=False, log=_quiet)
    assert not (store / "LOCK").exists()


def test_missing_shard_is_found_and_recomputed(clean, store):
    victim = _shard(store, 0)
    victim.unlink()
    assert [(p.kind, p.shard) for p in verify(store).problems] == [("missing", victim.name)]
    with pytest.raises(StoreError, match=r"pipeline\.store verify"):
        FeatureStore(store)
    assert repair(store, log=_quiet).ok
    assert _reextract(clean, store) == (16, 8)
    _assert_clean(clean, store)


def test_orphan_shards_are_notices_adopted_or_removed_by_repair(clean, store):
    state = read_index(store)
    write_index(store, replace(state, shards=state.shards[:2], generation=state.generation + 1))
    shutil.copy(_shard(store, 0), store / SHARD_DIR / "shard-copy-of-the-first.h5")
    report = verify(store)
    assert report.ok and report.rows == 16
    assert sorted(n.shard for n in report.notices) == sorted(
        [state.shards[2].name, "shard-copy-of-the-first.h5"]
    )
    assert all(n.kind == "orphan" for n in report.notices)
    strict = _cli("verify", "--strict", str(store))
    assert strict.returncode == 1 and "notice: [orphan]" in strict.stdout

    logs: list[str] = []
    assert repair(store, log=logs.append).ok
    assert any(f"recovered 8 rows from {state.shards[2].name}" in line for line in logs), logs
    assert any("removed shard-copy-of-the-first.h5" in line for line in logs), logs
    assert _reextract(clean, store) == (24, 0)
    _assert_clean(clean, store)


def test_fingerprint_mismatch_in_a_shard_is_found_and_dropped(clean, store):
    state = read_index(store)
    victim = state.shards[2]
    with FeatureStore(store) as reader:
        hashes = reader.hashes[16:]
        codes = reader.get(hashes)
    other = replace(state.fingerprint, preprocessing='{"resize": 64}')
    impostor = write_shard(store / SHARD_DIR, hashes, codes, other)
    write_index(store, replace(state, shards=(*state.shards[:2], impostor), generation=9))
    (store / SHARD_DIR / victim.name).unlink()
    problems = verify(store).problems
    assert [(p.kind, p.shard) for p in problems] == [("fingerprint", impostor.name)]
    assert "preprocessing" in problems[0].detail
    assert repair(store, log=_quiet).ok
    assert _reextract(clean, store) == (16, 8)
    _assert_clean(clean, store)


def test_shape_mismatch_and_duplicates_are_found_and_repaired(clean, store):
    state = read_index(store)
    lying = replace(state.shards[0], rows=9)
    write_index(store, replace(state, shards=(lying, *state.shards[1:]), generation=9))
    assert [(p.kind, p.shard) for p in verify(store).problems] == [("shape", lying.name)]

    twice = shutil.copy(_shard(store, 1), store / SHARD_DIR / "shard-twice.h5")
    copy = replace(state.shards[1], name=Path(twice).name)
    write_index(store, replace(state, shards=(*state.shards, copy), generation=10))
    duplicates = verify(store).problems
    assert {p.kind for p in duplicates} == {"duplicate"} and len(duplicates) == 8
    assert repair(store, log=_quiet).ok
    assert _reextract(clean, store) == (24, 0)
    _assert_clean(clean, store)


def test_info_reports_fingerprint_rows_bytes_and_shards(clean, store):
    facts = info(store)
    shard_bytes = sum(s.bytes for s in read_index(store).shards)
    assert (facts["rows"], facts["shards"], facts["skipped"]) == (24, 3, 0)
    assert facts["bytes_per_image"] == round(shard_bytes / 24, 1)
    assert facts["raw_bytes_per_image"] == 4096 * 2
    assert facts["fingerprint"]["weights"] == "random:0" and facts["random_weights"]
    shown = _cli("info", str(store))
    assert shown.returncode == 0 and json.loads(shown.stdout) == facts


def test_compact_merges_shards_without_changing_a_code(clean, store):
    before = read_index(store)
    early = FeatureStore(store)
    shown = _cli("compact", str(store), "--target-rows", "64")
    assert shown.returncode == 0 and "compact: 3 shards -> 1" in shown.stdout, shown.stderr
    after = read_index(store)
    assert after.generation == before.generation + 1 and after.rows == 24
    assert sorted(p.name for p in (store / SHARD_DIR).iterdir()) == [after.shards[0].name]
    _assert_clean(clean, store)
    with FeatureStore(store) as reader:
        assert reader.hashes == clean.hashes, "store order is kept"
    assert early.get(clean.hashes).tobytes() == clean.codes.tobytes(), "a reader from before"
    early.close()
    assert compact(store, target_rows=64, log=_quiet) == (1, 1)


def test_reader_opening_during_a_compaction_reads_the_new_index(clean, store, monkeypatch):
    real = features.store.reader.read_index

    def compacted_meanwhile(root: Path):
        state = real(root)
        monkeypatch.setattr(features.store.reader, "read_index", real)
        compact(root, target_rows=64, log=_quiet)  # deletes every shard `state` lists
        return state

    monkeypatch.setattr(features.store.reader, "read_index", compacted_meanwhile)
    with FeatureStore(store) as reader:
        assert len(reader.state.shards) == 1
        assert reader.get(clean.hashes).tobytes() == clean.codes.tobytes()


@pytest.mark.slow
@pytest.mark.parametrize(
    "point",
    [
        KillPoint("features.store.maintenance.write_shard", "after"),
        KillPoint("features.store.checkpoint.publish", "before", 1, "index"),
        KillPoint("features.store.writer.StoreWriter.replace_shards", "after"),
    ],
    ids=["merged_shard_written", "index_tmp_written", "index_replaced_old_shards_left"],
)
def test_compact_killed_midway_leaves_old_or_new_set(clean, store, point):
    child = subprocess.run(
        child_command("compact", store, "--target-rows", "64", kill=point),
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert child.returncode == -signal.SIGKILL, child.stdout + child.stderr
    report = verify(store)
    assert report.ok and report.notices, "leftovers are notices, never problems"
    assert report.rows == 24 and len(report.bad_shards()) == 0
    with FeatureStore(store) as reader:
        assert reader.get(clean.hashes).tobytes() == clean.codes.tobytes()
    logs: list[str] = []
    with StoreWriter(store, read_index(store).fingerprint, log=logs.append):
        pass  # the next writer removes whatever the killed compaction left
    assert any("removed" in line for line in logs), logs
    _assert_clean(clean, store)


@pytest.mark.parametrize("command", ["info", "verify", "repair", "compact"])
@pytest.mark.parametrize("state", ["missing", "unreadable"])
def test_store_commands_on_a_missing_or_unreadable_store_say_so_in_one_line(
    tmp_path, command, state
):
    store = tmp_path / "store"
    if state == "unreadable":
        store.mkdir()
        (store / INDEX_NAME).write_bytes(b"not an HDF5 file")
    result = _cli(command, str(store))
    assert "Traceback" not in result.stderr, result.stderr
    if command == "verify":  # a report, not an error: the problem is the finding
        assert result.returncode == 1 and "problem: [index]" in result.stdout
        return
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    expected = "no feature store at" if state == "missing" else "cannot read"
    assert expected in lines[0]
