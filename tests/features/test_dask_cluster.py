"""Extraction on a real Dask cluster started as a user would (``dask scheduler``, ``dask
worker`` on 127.0.0.1), with one worker killed by SIGKILL mid-run: the run completes and
leaves a store with no orphans, no duplicate rows, and the codes of a local run."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from features.compute.extract import extract_codes
from features.data.manifest import read_manifest
from features.store import FeatureStore
from features.store.maintenance import verify
from features.store.shards import SHARD_DIR
from tests.conftest import (
    LIMITS,
    SMALL_CONFIG,
    SMALL_EXTRACT,
    TEST_PARAMS,
    refs_for,
    shapes_manifest,
)

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
DASK = str(Path(sys.executable).with_name("dask"))
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}  # workers unpickle our functions
SCHEDULER = [DASK, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard"]
WORKER = [DASK, "worker", "--nthreads", "1", "--no-nanny", "--no-dashboard", "--host", "127.0.0.1"]


def _wait(condition, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[str, list[subprocess.Popen]]]:
    """A scheduler and two single-threaded workers without nannies, so a killed worker
    stays dead; the address and the worker processes."""
    info = tmp_path / "scheduler.json"
    started = [
        subprocess.Popen(
            [*SCHEDULER, "--scheduler-file", str(info)],
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    ]
    try:
        _wait(info.exists, "the scheduler file")
        workers = [
            subprocess.Popen(
                [*WORKER, "--scheduler-file", str(info)],
                cwd=ROOT,
                env=ENV,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for _ in range(2)
        ]
        started += workers
        address = json.loads(info.read_text())["address"]
        from distributed import Client

        with Client(address) as client:
            client.wait_for_workers(2, timeout=120)
        yield address, workers
    finally:
        for process in reversed(started):
            process.kill()
            process.wait()


def _project(tmp_path: Path, address: str) -> tuple[Path, list[str]]:
    shapes_manifest(tmp_path, per_class=12)
    images = tmp_path / "images"
    params = copy.deepcopy(TEST_PARAMS)
    params["extract"] = {
        **params["extract"],
        **SMALL_EXTRACT,
        "scheduler": "dask",
        "dask": {"address": address, "workers": 2, "partition_rows": 4},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    command = [sys.executable, "-m", "pipeline.extract", "--data", str(images)]
    command += ["--manifest", str(tmp_path / "manifest.csv"), "--store", str(tmp_path / "store")]
    command += ["--report", str(tmp_path / "extract.json")]
    command += ["--params", str(tmp_path / "params.yaml")]
    return images, command


def test_a_worker_killed_mid_run_leaves_a_clean_store_with_a_local_runs_codes(cluster, tmp_path):
    address, workers = cluster
    images, command = _project(tmp_path, address)
    store = tmp_path / "store" / "vgg16_fc6"
    run = subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, text=True)
    _wait(lambda: any((store / SHARD_DIR).glob("shard-*.h5")), "the first shard")
    workers[0].send_signal(signal.SIGKILL)
    output, _ = run.communicate(timeout=300)
    assert run.returncode == 0, output
    report = verify(store)
    assert report.ok and not report.notices, (report.problems, report.notices)  # --strict
    rows = read_manifest(tmp_path / "manifest.csv")
    with FeatureStore(store) as reader:
        stored = reader.hashes
        assert len(stored) == len(set(stored)) == len(rows)  # no duplicate rows
        codes = reader.get([row.sha256 for row in rows])
    local = tmp_path / "local"
    extract_codes(refs_for(images), local, SMALL_CONFIG, LIMITS, progress=False)
    with FeatureStore(local) as reader:
        np.testing.assert_array_equal(codes, reader.get([row.sha256 for row in rows]))


def _settled(folder: Path, quiet_s: float = 3.0) -> None:
    """Wait until no shard file has appeared in ``folder`` for ``quiet_s`` seconds."""
    seen, since = -1, time.monotonic()
    while time.monotonic() - since < quiet_s:
        count = len(list(folder.glob("*.h5")))
        if count != seen:
            seen, since = count, time.monotonic()
        time.sleep(0.1)


def test_a_coordinator_killed_mid_run_is_resumed_from_the_workers_finished_shards(
    cluster, tmp_path
):
    address, _ = cluster
    images, command = _project(tmp_path, address)
    store = tmp_path / "store" / "vgg16_fc6"
    run = subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL)
    _wait(lambda: any((store / SHARD_DIR).glob("shard-*.h5")), "the first shard")
    run.send_signal(signal.SIGKILL)
    run.wait()
    _settled(store / SHARD_DIR)  # workers finish the partitions they were running
    left = {path.name for path in (store / SHARD_DIR).glob("shard-*.h5")}
    rerun = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    report = verify(store)
    assert report.ok and not report.notices, (report.problems, report.notices)  # --strict
    rows = read_manifest(tmp_path / "manifest.csv")
    with FeatureStore(store) as reader:
        assert left <= {shard.name for shard in reader.state.shards}  # adopted, not redone
        stored = reader.hashes
        assert len(stored) == len(set(stored)) == len(rows)
        codes = reader.get([row.sha256 for row in rows])
    counts = json.loads((tmp_path / "extract.json").read_text())
    assert counts["computed"] < len(rows)  # the rerun computed only what was missing
    local = tmp_path / "local"
    extract_codes(refs_for(images), local, SMALL_CONFIG, LIMITS, progress=False)
    with FeatureStore(local) as reader:
        np.testing.assert_array_equal(codes, reader.get([row.sha256 for row in rows]))
