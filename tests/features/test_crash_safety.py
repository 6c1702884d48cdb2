"""SIGKILL at every step of a commit, and Ctrl-C: the store verifies and resumes exactly.

Each kill scenario runs extraction in a child process (:mod:`tests.killpoints`) that dies
by SIGKILL at one named call, so no ``finally`` or ``atexit`` runs: what is left on disk is
what a ``kill -9`` at that moment leaves. The test then checks the issue's four promises:
the store verifies, a rerun completes, the codes equal an uninterrupted run's bit for bit,
and every hash is stored exactly once. The kill-point x outcome table is printed at the end
of the module (and written to ``$KILL_MATRIX_OUT`` when set).

The clean run (24 images, batch 4, a commit every 8 rows, 4 undecodable images last)
commits in this order, which the call counts below refer to::

    index gen 0 (empty) | shard 1 + index gen 1 | shard 2 + gen 2 | shard 3 + gen 3 |
    gen 4: skip records only (the 4 undecodable images)
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml

import features.store.index
from features.compute.encoder import PendingCodes
from features.compute.extract import extract_codes
from features.compute.loader import ImageRef
from features.data.synthetic import make_dataset
from features.files import TMP_PREFIX
from features.store import FeatureStore, StoreWriter
from features.store.checkpoint import INDEX_NAME
from features.store.committer import Committer
from features.store.fingerprint import Fingerprint
from features.store.index import COMMIT_DIR, read_index
from features.store.maintenance import verify
from features.store.shards import SHARD_DIR
from pipeline.workspace import merge
from tests.conftest import (
    LIMITS,
    SMALL_CONFIG,
    SMALL_EXTRACT,
    TEST_PARAMS,
    refs_for,
    shapes_manifest,
)
from tests.killpoints import KillPoint, child_command, save_refs

ROOT = Path(__file__).resolve().parents[2]
GOOD = 24  # decodable images: 3 commits of 8 rows
BROKEN = 4  # truncated JPEGs, last in order: the final commit holds only skip records


@dataclass(frozen=True)
class Dataset:
    refs: list[ImageRef]
    refs_file: Path
    good: list[str]  # hashes of decodable images, in extraction order
    codes: np.ndarray  # the clean run's codes for ``good``


@dataclass(frozen=True)
class Scenario:
    """One or more child runs, each killed at its point, then an in-process rerun."""

    name: str
    kills: tuple[KillPoint, ...]
    reused: int  # rows the rerun finds committed or adopts, so never recomputes


SCENARIOS = (
    Scenario(
        "before_first_batch",
        (KillPoint("features.store.committer.Committer.submit", "before", 1),),
        0,
    ),
    Scenario(
        "between_batches", (KillPoint("features.store.committer.Committer.submit", "before", 2),), 0
    ),
    Scenario(
        "between_commits", (KillPoint("features.store.committer.Committer._commit", "after"),), 8
    ),
    Scenario(
        "shard_built_in_memory",
        (KillPoint("h5py.Group.create_dataset", "after", 2, "shard_codes"),),
        8,
    ),
    Scenario("mid_shard_write", (KillPoint("features.store.shards.open", "after", 2, "shard"),), 8),
    Scenario(
        "shard_tmp_written_before_rename",
        (KillPoint("features.store.shards.publish", "before", 2, "shard"),),
        8,
    ),
    Scenario(
        "shard_renamed_before_index",
        (KillPoint("features.store.writer.write_shard", "after", 2),),
        16,
    ),
    Scenario(
        "mid_commit_record_write",
        (KillPoint("features.store.index.open", "after", 2, "index"),),
        16,
    ),
    Scenario(
        "commit_record_tmp_written_before_rename",
        (KillPoint("features.store.index.publish", "before", 2, "index"),),
        16,
    ),
    Scenario(
        "commit_record_renamed_before_dir_fsync",
        (KillPoint("features.files.fsync_path", "before", 3, "root"),),
        16,
    ),
    Scenario(
        "skip_only_commit",
        (KillPoint("features.store.index.publish", "before", 4, "index"),),
        GOOD,
    ),
    Scenario(
        "lock_taken_before_holder_written",
        (
            KillPoint("features.store.committer.Committer._commit", "after"),
            KillPoint("features.store.lock._read_holder", "before"),
        ),
        8,
    ),
    Scenario(
        "recovery_before_adoption",
        (
            KillPoint("features.store.index.publish", "before", 2, "index"),
            KillPoint("features.store.recovery.adopt_orphans", "before"),
        ),
        16,
    ),
    Scenario(
        "adoption_index_tmp_before_rename",
        (
            KillPoint("features.store.writer.write_shard", "after", 2),
            # the rerun's first checkpoint folds commit 1's record; its second adopts
            KillPoint("features.store.checkpoint.publish", "before", 2, "index"),
        ),
        16,
    ),
    Scenario(
        "finished_before_lock_release",
        (KillPoint("features.store.lock.StoreLock.release", "before"),),
        GOOD,
    ),
)


def _quiet(message: str) -> None:
    del message


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    """24 images + 4 truncated ones, and the codes of one uninterrupted run over them."""
    root = tmp_path_factory.mktemp("crash")
    make_dataset(root / "images", per_class=GOOD // 4)
    refs = refs_for(root / "images")
    for path in make_dataset(root / "broken", per_class=1, start=100):
        path.write_bytes(path.read_bytes()[:300])
        refs.append(ImageRef(_sha256(path), path))
    refs_file = save_refs(refs, root / "refs.json")
    report = extract_codes(refs, root / "clean", SMALL_CONFIG, LIMITS, progress=False, log=_quiet)
    assert (report.computed, report.skipped) == (GOOD, BROKEN)
    state = read_index(root / "clean")
    assert (len(state.shards), state.generation) == (3, 4), "the commit schedule changed"
    good = [ref.sha256 for ref in refs[:GOOD]]
    with FeatureStore(root / "clean") as reader:
        codes = reader.get(good)
    return Dataset(refs, refs_file, good, codes)


@pytest.fixture(scope="module")
def kill_matrix(request: pytest.FixtureRequest) -> Iterator[list[str]]:
    """Rows of the kill-point x outcome table, printed once the module's tests ran."""
    rows: list[str] = []
    yield rows
    if not rows:
        return
    plugins = request.config.pluginmanager
    reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
    header = (
        "| kill point | left on disk after SIGKILL | verify | rerun reused/computed/skipped "
        "| recovery | final store |\n|---|---|---|---|---|---|"
    )
    table = "\n".join([header, *rows])
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_sep("-", "SIGKILL matrix")
            reporter.write_line(table)
    out = os.environ.get("KILL_MATRIX_OUT")
    if out:
        Path(out).write_text(table + "\n")


def _kill_child(store: Path, refs_file: Path, point: KillPoint, *options: str) -> int:
    """Run extraction in a child killed at ``point``; return its pid."""
    child = subprocess.Popen(
        child_command("extract", store, "--refs", str(refs_file), *options, kill=point),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output, _ = child.communicate(timeout=300)
    assert child.returncode == -signal.SIGKILL, (
        f"{point.spec()} was never reached (exit {child.returncode}):\n{output}"
    )
    return child.pid


def _leftovers(store: Path) -> str:
    state = read_index(store)
    indexed = {shard.name for shard in state.shards}
    orphans = [p for p in (store / SHARD_DIR).glob("shard-*.h5") if p.name not in indexed]
    temporaries = [
        path
        for folder in (store, store / SHARD_DIR, store / COMMIT_DIR)
        for path in folder.glob(f"{TMP_PREFIX}*")
    ]
    parts = [f"gen {state.generation}, {state.rows} rows, {len(state.skipped)} skips"]
    if orphans:
        parts.append(f"{len(orphans)} unindexed shard")
    if temporaries:
        parts.append(f"{len(temporaries)} tmp file")
    if (store / "LOCK").exists():
        parts.append("LOCK")
    return "; ".join(parts)


def _recovery(logs: list[str]) -> str:
    notes = []
    removed = sum("removed .tmp-" in line for line in logs)
    if removed:
        notes.append(f"removed {removed} tmp")
    for line in logs:
        if match := re.search(r"recovered (\d+) rows", line):
            notes.append(f"adopted {match.group(1)} rows")
    if any("took over a stale lock" in line for line in logs):
        notes.append("took over stale LOCK")
    return ", ".join(notes) or "-"


def _stored_hashes(store: Path) -> list[str]:
    """The ``hashes`` virtual dataset, read the way any HDF5 tool would."""
    with h5py.File(store / INDEX_NAME, "r") as handle:
        return [value.decode() for value in handle["hashes"][:]]


@pytest.mark.slow
@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda scenario: scenario.name)
def test_sigkill_then_rerun_gives_the_uninterrupted_store(
    scenario: Scenario, dataset: Dataset, tmp_path: Path, kill_matrix: list[str]
):
    store = tmp_path / "store"
    pids = [_kill_child(store, dataset.refs_file, point) for point in scenario.kills]

    left = _leftovers(store)
    after_kill = verify(store)
    assert after_kill.ok, after_kill.problems
    with FeatureStore(store) as reader:
        committed = reader.hashes
        expected = dataset.codes[[dataset.good.index(sha) for sha in committed]]
        assert reader.get(committed).tobytes() == expected.tobytes()

    logs: list[str] = []
    rerun = extract_codes(
        dataset.refs, store, SMALL_CONFIG, LIMITS, progress=False, log=logs.append
    )
    assert (rerun.reused, rerun.computed, rerun.skipped) == (
        scenario.reused,
        GOOD - scenario.reused,
        BROKEN,
    ), logs
    took_over = re.search(r"stale lock left by pid (\d+)", "\n".join(logs))
    assert took_over and int(took_over.group(1)) in pids, logs

    hashes = _stored_hashes(store)
    assert len(hashes) == len(set(hashes)) == GOOD and set(hashes) == set(dataset.good)
    with FeatureStore(store) as reader:
        assert reader.get(dataset.good).tobytes() == dataset.codes.tobytes()
        assert set(reader.skipped) == {ref.sha256 for ref in dataset.refs[GOOD:]}
    final = verify(store)
    assert final.ok and not final.notices, (final.problems, final.notices)
    assert not (store / "LOCK").exists()
    kill_matrix.append(
        f"| {scenario.name} (`{' then '.join(p.spec() for p in scenario.kills)}`) | {left} "
        f"| ok, {len(after_kill.notices)} notice(s) "
        f"| {rerun.reused}/{rerun.computed}/{rerun.skipped} | {_recovery(logs)} "
        f"| verifies, {len(hashes)} unique hashes, codes bit-identical |"
    )


@pytest.mark.slow
def test_sigkill_between_two_layers_commits_leaves_both_stores_valid_and_resumable(
    dataset: Dataset, tmp_path: Path
):
    root = tmp_path / "stores"
    stores = {"fc6": root / "fc6", "fc7": root / "fc7"}
    # Commits go fc6, fc7, fc6, fc7...: the third is fc6's second, so fc7 is a commit behind.
    point = KillPoint("features.store.writer.StoreWriter.commit", "after", 3)
    _kill_child(root, dataset.refs_file, point, "--layers", "fc6,fc7")
    assert [read_index(stores[layer]).rows for layer in ("fc6", "fc7")] == [16, 8]
    for store in stores.values():
        assert verify(store).ok

    rerun = extract_codes(dataset.refs, stores, SMALL_CONFIG, LIMITS, progress=False, log=_quiet)
    assert rerun.layers_computed == {"fc7": 8, "fc6+fc7": GOOD - 16}
    assert (rerun.reused, rerun.skipped) == (8, BROKEN)
    clean_fc7 = tmp_path / "clean_fc7"
    extract_codes(dataset.refs, {"fc7": clean_fc7}, SMALL_CONFIG, LIMITS, progress=False)
    with FeatureStore(clean_fc7) as reader:
        fc7_codes = reader.get(dataset.good)
    broken = {ref.sha256 for ref in dataset.refs[GOOD:]}
    for layer, expected in (("fc6", dataset.codes), ("fc7", fc7_codes)):
        hashes = _stored_hashes(stores[layer])
        assert len(hashes) == len(set(hashes)) == GOOD, layer
        with FeatureStore(stores[layer]) as reader:
            assert reader.get(dataset.good).tobytes() == expected.tobytes(), layer
            assert set(reader.skipped) == broken
        final = verify(stores[layer])
        assert final.ok and not final.notices, (final.problems, final.notices)


def _wait_for_commit(store: Path, child: subprocess.Popen, timeout: float = 120.0) -> int:
    """Poll the index until a commit with rows has landed; return its row count."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert child.poll() is None, "extraction finished before it could be interrupted"
        try:
            rows = read_index(store).rows
        except (OSError, KeyError):
            rows = 0  # not created yet; the rename makes it appear complete
        if rows:
            return rows
        time.sleep(0.01)
    raise AssertionError("no commit landed in time")


def _extract_command(workspace: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pipeline.extract",
        "--data",
        str(workspace / "images"),
        "--manifest",
        str(workspace / "manifest.csv"),
        "--store",
        str(workspace / "store"),
        "--report",
        str(workspace / "extract.json"),
        "--params",
        str(workspace / "params.yaml"),
        "--no-progress",
    ]


@pytest.fixture
def extract_workspace(tmp_path: Path) -> Path:
    """A manifest of 120 generated images and params for a small CPU extraction."""
    shapes_manifest(tmp_path, per_class=30)
    params = copy.deepcopy(TEST_PARAMS)
    params["extract"] = merge(params["extract"], SMALL_EXTRACT)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return tmp_path


@pytest.mark.slow
def test_sigint_commits_finished_batches_and_exits_130(extract_workspace: Path):
    store = extract_workspace / "store" / "vgg16_fc6"  # tests/params.yaml's one feature set
    command = _extract_command(extract_workspace)
    child = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    seen = _wait_for_commit(store, child)
    child.send_signal(signal.SIGINT)
    _, stderr = child.communicate(timeout=120)
    assert child.returncode == 130, stderr
    assert "interrupted: finished work is committed" in stderr

    assert not [
        *store.glob(f"{TMP_PREFIX}*"),
        *(store / SHARD_DIR).glob(f"{TMP_PREFIX}*"),
        *(store / COMMIT_DIR).glob(f"{TMP_PREFIX}*"),
    ]
    assert not (store / "LOCK").exists()
    kept = read_index(store).rows
    assert seen <= kept < 120 and kept % 4 == 0, "whole batches, at least what was seen"
    report = verify(store)
    assert report.ok and not report.notices, (report.problems, report.notices)
    with FeatureStore(store) as reader:
        assert np.isfinite(reader.get(reader.hashes)).all()

    rerun = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
    assert f"reused {kept}, computed {120 - kept}, skipped 0" in rerun.stdout
    summary = json.loads((extract_workspace / "extract.json").read_text())
    assert (summary["reused"], summary["computed"]) == (kept, 120 - kept)
    assert verify(store).ok


def test_second_ctrl_c_during_the_final_flush_waits_for_the_commit(tmp_path, monkeypatch):
    store = tmp_path / "store"
    fingerprint = Fingerprint(
        "vgg16", "classifier.1", 4, "random:0", "{}", "fp32", "float16", "t", "t"
    )
    hashes = [f"{i:064x}" for i in range(8)]
    codes = np.arange(32, dtype=np.float16).reshape(8, 4)
    real = features.store.index.publish

    def ctrl_c_at_the_commit_point(tmp: Path, final: Path) -> None:
        if final.parent.name == COMMIT_DIR:
            os.kill(os.getpid(), signal.SIGINT)  # reaches the main thread, waiting in close()
            time.sleep(0.3)  # this commit is still in flight when the interrupt lands
        real(tmp, final)

    with StoreWriter(store, fingerprint, log=_quiet) as writer:
        committer = Committer(writer, commit_rows=100, commit_seconds=3600.0)
        committer.submit(hashes, PendingCodes(torch.from_numpy(codes)), [])
        monkeypatch.setattr(features.store.index, "publish", ctrl_c_at_the_commit_point)
        with pytest.raises(KeyboardInterrupt):
            committer.close()
    assert read_index(store).rows == 8, "the finished batch was committed before exiting"
    assert not [
        *store.glob(f"{TMP_PREFIX}*"),
        *(store / SHARD_DIR).glob(f"{TMP_PREFIX}*"),
        *(store / COMMIT_DIR).glob(f"{TMP_PREFIX}*"),
    ]
