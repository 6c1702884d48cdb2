"""Under DVC: a killed ``dvc repro`` resumes from the committed shards on the next one.

The store is a ``persist: true`` output, so DVC neither deletes it before rerunning the
stage nor restores it from the run-cache; ``dvc.lock`` gets its entry only when the stage
exits 0, so an interrupted store is never recorded as a finished output.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from features.data.synthetic import make_dataset
from features.store.index import read_index
from features.store.maintenance import verify
from pipeline.workspace import create_workspace, run_in, workspace_env
from tests.conftest import SHAPES, SHAPES_OVERRIDES, TEST_PARAMS_FILE

DATA = SHAPES
IMAGES = 120  # 4 classes x 30: a few seconds of extraction, a commit every 8 images
OVERRIDES = SHAPES_OVERRIDES


def _stages(workspace: Path) -> dict:
    lock = workspace / "dvc.lock"
    return yaml.safe_load(lock.read_text()).get("stages", {}) if lock.exists() else {}


def _wait_for_commit(store: Path, repro: subprocess.Popen, log: Path) -> int:
    """Poll the store's index until a commit with rows has landed; return its rows."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert repro.poll() is None, f"dvc repro ended first:\n{log.read_text()}"
        try:
            rows = read_index(store).rows
        except (OSError, KeyError):
            rows = 0
        if rows:
            return rows
        time.sleep(0.01)
    raise AssertionError(f"no commit in time:\n{log.read_text()}")


@pytest.mark.slow
def test_killed_dvc_repro_resumes_from_committed_shards(tmp_path):
    workspace = create_workspace(tmp_path / "ws", OVERRIDES, base=TEST_PARAMS_FILE)
    make_dataset(workspace / DATA, per_class=IMAGES // 4)
    run_in(workspace, "dvc", "add", "-q", DATA)
    run_in(workspace, "git", "commit", "-q", "-m", "dataset")
    store = workspace / "store" / "vgg16_fc6"

    log = tmp_path / "repro.log"
    with open(log, "w") as output:
        repro = subprocess.Popen(
            ["dvc", "repro"],
            cwd=workspace,
            env=workspace_env(),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: dvc and the stage it runs
        )
    try:
        _wait_for_commit(store, repro, log)
    finally:
        os.killpg(repro.pid, signal.SIGKILL)
        repro.wait()
    kept = read_index(store).rows
    assert 0 < kept < IMAGES, "killed between the first commit and the end of extract"
    stages = _stages(workspace)
    assert "prepare" in stages and "extract" not in stages, "no entry for a partial store"
    assert verify(store).ok

    run_in(workspace, "dvc", "repro")
    report = json.loads((workspace / "reports" / "extract.json").read_text())
    assert report["reused"] >= kept and report["computed"] == IMAGES - report["reused"]
    assert 0 < report["computed"] < IMAGES
    outs = _stages(workspace)["extract"]["outs"]
    entry = next(out for out in outs if out["path"] == "store")
    assert entry["md5"].endswith(".dir") and entry["nfiles"] == 1 + len(read_index(store).shards)
    final = verify(store)
    assert final.ok and not final.notices and not (store / "LOCK").exists()
    assert read_index(store).rows == IMAGES
    status = run_in(workspace, "dvc", "status")
    assert "up to date" in status.stdout, status.stdout
