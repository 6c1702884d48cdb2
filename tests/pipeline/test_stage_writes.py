"""Every file a stage writes is replaced whole: a kill at any write leaves old or new, never half.

Each stage runs under :mod:`tests.write_guard`, which fails on any file opened for writing
under its final name and can SIGKILL the stage right after its K-th write open. After each
kill, every output must still be byte-identical to the last complete run's, or be a new
complete file (see :func:`_complete`); the first run without a kill must write no file in
place at all.
"""

from __future__ import annotations

import csv
import json
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import joblib
import pytest
import yaml

from features.data.synthetic import make_dataset
from features.files import TMP_PREFIX
from pipeline.workspace import PROJECT_ROOT, create_workspace, run_in, workspace_env
from tests.conftest import SHAPES, SHAPES_OVERRIDES, TEST_PARAMS_FILE
from tests.write_guard import EXIT_UNSAFE_WRITE

pytestmark = pytest.mark.slow

DATA = SHAPES
OVERRIDES = {**SHAPES_OVERRIDES, "heads": {"logreg": {}}}
STAGES = ("prepare", "extract", "train@logreg-vgg16_fc6", "compare")
OUTPUT_DIRS = ("data", "reports", "models", "metrics", "plots")
PNG_END = b"IEND\xaeB`\x82"


def _outputs(workspace: Path) -> dict[Path, bytes]:
    """Every stage output that is a plain file (the store has its own kill matrix)."""
    files = {}
    for folder in OUTPUT_DIRS:
        for path in sorted((workspace / folder).rglob("*")):
            if path.is_file() and DATA not in path.as_posix() and not path.name.startswith("."):
                files[path] = path.read_bytes()
    return files


def _complete(path: Path, data: bytes) -> bool:
    """Whether ``data`` is a whole file of ``path``'s kind, not a truncated one."""
    if not data:
        return False
    if path.suffix == ".json":
        json.loads(data)
    elif path.suffix == ".png":
        return data.endswith(PNG_END)
    elif path.suffix == ".csv":
        rows = list(csv.reader(data.decode("utf-8", "surrogateescape").splitlines()))
        return len(rows) > 1 and all(len(row) == len(rows[0]) for row in rows)
    elif path.suffix == ".md":
        return b"Best:" in data
    elif path.suffix == ".joblib":
        joblib.load(path)
    return True


def _guarded(workspace: Path, command: str, kill: int | None) -> subprocess.CompletedProcess:
    options = ["--kill", str(kill)] if kill else []
    argv = [sys.executable, "-m", "tests.write_guard", "--root", ".", *options, "--"]
    env = {**workspace_env(), "PYTHONPATH": str(PROJECT_ROOT)}
    return subprocess.run(
        [*argv, *shlex.split(command)], cwd=workspace, env=env, capture_output=True, text=True
    )


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    root = create_workspace(
        tmp_path_factory.mktemp("writes") / "project", OVERRIDES, base=TEST_PARAMS_FILE
    )
    make_dataset(root / DATA, per_class=6)
    run_in(root, "dvc", "repro")
    return root


@pytest.mark.parametrize("stage", STAGES)
def test_a_kill_at_any_write_leaves_every_output_old_or_whole(workspace, stage):
    lock = yaml.safe_load((workspace / "dvc.lock").read_text())
    command = lock["stages"][stage]["cmd"]
    clean = _guarded(workspace, command, kill=None)
    assert clean.returncode != EXIT_UNSAFE_WRITE, clean.stderr
    assert clean.returncode == 0, clean.stderr
    kills = 0
    for kill in range(1, 50):
        before = _outputs(workspace)
        result = _guarded(workspace, command, kill)
        if result.returncode == 0:
            break
        assert result.returncode == -signal.SIGKILL, result.stderr
        kills += 1
        after = _outputs(workspace)
        assert after.keys() >= before.keys(), f"kill {kill} of {stage} deleted an output"
        for path, data in after.items():
            if before.get(path) != data:
                assert _complete(path, data), f"kill {kill} of {stage} left {path} half written"
    assert kills >= 1, f"{stage} wrote nothing under the guard"
    leftovers = [p for p in workspace.rglob(f"{TMP_PREFIX}*") if "store" not in p.parts]
    for leftover in leftovers:
        leftover.unlink()
