"""User errors through the real command line: one line on stderr, non-zero exit, no traceback.

Each stage runs as ``python -m pipeline.<stage>`` in a scratch workspace holding its own
params.yaml, exactly as dvc runs it; ``--debug`` brings the traceback back.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image

from features.compute.extract import extract_codes
from features.compute.loader import ImageRef
from features.data.manifest import build_manifest, write_manifest
from features.data.scan import scan_dataset
from features.files import file_sha256
from features.store.fingerprint import FingerprintMismatch
from features.store.lock import LOCK_NAME, StoreLock
from pipeline.cli import EXIT_USER_ERROR, one_line
from pipeline.workspace import merge, workspace_env
from tests.conftest import LIMITS, SMALL_CONFIG, TEST_PARAMS

# The extract section that matches tests.conftest.SMALL_CONFIG, so a store written in
# process with SMALL_CONFIG has the fingerprint these params ask for.
SMALL_EXTRACT = {
    "weights": "random",
    "seed": SMALL_CONFIG.seed,
    "device": "cpu",
    "precision": "fp32",
    "batch_size": 4,
    "num_workers": 0,
    "preprocessing": {"resize": 32, "crop": 32},
}


def _image(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, size=(40, 48, 3), dtype=np.uint8)).save(path)


@pytest.fixture
def workspace(tmp_path) -> Path:
    """A folder with params.yaml (small CPU extraction) and a good two-class dataset."""
    base = TEST_PARAMS
    params = merge(base, {"data": {"root": "images"}, "downloads": {}, "extract": SMALL_EXTRACT})
    _write_params(tmp_path, params)
    for index in range(6):
        _image(tmp_path / "images" / ("cats" if index % 2 else "dogs") / f"{index}.jpg", index)
    return tmp_path


def _write_params(workspace: Path, params: dict[str, Any]) -> None:
    (workspace / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def _stage(workspace: Path, module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", f"pipeline.{module}", *args],
        cwd=workspace,
        env=workspace_env(),
        text=True,
        capture_output=True,
        timeout=300,
    )


def _prepare(workspace: Path, data: str = "images", *extra: str) -> subprocess.CompletedProcess:
    return _stage(
        workspace,
        "prepare",
        *("--data", data, "--manifest", "manifest.csv", "--files", "files.csv"),
        *("--report", "data.json", "--cache", "scan.sqlite", *extra),
    )


def _assert_user_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    assert result.returncode == EXIT_USER_ERROR, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got:\n{result.stderr}"
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


def test_prepare_on_a_missing_folder(workspace):
    result = _prepare(workspace, "no-such-folder")
    _assert_user_error(result, "data.root='no-such-folder' is not a folder")
    debug = _prepare(workspace, "no-such-folder", "--debug")
    assert debug.returncode != 0
    assert "Traceback" in debug.stderr and "UserError" in debug.stderr


def test_prepare_on_a_folder_without_images(workspace):
    (workspace / "junk" / "cats").mkdir(parents=True)
    (workspace / "junk" / "cats" / "notes.txt").write_text("no images here")
    (workspace / "junk" / "cats" / "fake.jpg").write_text("not an image")
    _assert_user_error(_prepare(workspace, "junk"), "no usable images under junk")


def test_prepare_with_a_single_class(workspace):
    for index in range(3):
        _image(workspace / "one" / "cats" / f"{index}.jpg", index)
    _assert_user_error(_prepare(workspace, "one"), "only one class ('cats')")


def test_prepare_with_an_empty_class(workspace):
    (workspace / "images" / "birds").mkdir()
    (workspace / "images" / "birds" / ".DS_Store").write_bytes(b"Bud1")
    _assert_user_error(_prepare(workspace), "['birds']", "hold no usable images")


def test_invalid_params_stop_the_stage_before_any_work(workspace):
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["data"]["limits"]["min_side"] = -3
    params["extract"]["batch_sise"] = 8
    _write_params(workspace, params)
    line = _assert_user_error(
        _prepare(workspace),
        "params.yaml: 2 problems:",
        "data.limits.min_side: got -3; allowed: a value >= 1",
        "extract.batch_sise: unknown key; allowed keys:",
    )
    assert "batch_size" in line
    assert not (workspace / "manifest.csv").exists(), "nothing may run on invalid params"
    _assert_user_error(_stage(workspace, "params"), "data.limits.min_side: got -3")


def test_params_check_passes_on_good_params(workspace):
    result = _stage(workspace, "params")
    assert result.returncode == 0, result.stderr
    assert "params.yaml: ok" in result.stdout


def test_extract_into_a_store_with_another_fingerprint(workspace):
    refs = _manifest_and_refs(workspace)
    extract_codes(refs, workspace / "store", SMALL_CONFIG, LIMITS, progress=False)
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["extract"]["seed"] = SMALL_CONFIG.seed + 1
    _write_params(workspace, params)
    args = ("--data", "images", "--manifest", "manifest.csv", "--store", "store")
    args += ("--report", "extract.json", "--no-progress")
    _assert_user_error(
        _stage(workspace, "extract", *args),
        "store store/vgg16_fc6: its codes were computed differently and are never mixed",
        f"weights: the store holds 'random:{SMALL_CONFIG.seed}', this run computes 'random:",
        "Point extract at a new store path",
    )
    debug = _stage(workspace, "extract", *args, "--debug")
    assert debug.returncode != 0
    assert "Traceback" in debug.stderr and "FingerprintMismatch" in debug.stderr


def _manifest_and_refs(workspace: Path) -> list[ImageRef]:
    root = workspace / "images"
    outcomes, predefined = scan_dataset(root, LIMITS, n_jobs=1)
    rows, _, _ = build_manifest(outcomes, root, predefined, "salt", 0.5)
    write_manifest(workspace / "manifest.csv", rows)
    return [ImageRef(row.sha256, root / row.path) for row in rows]


EXTRACT_ARGS = ("--data", "images", "--manifest", "manifest.csv", "--store", "store")
EXTRACT_ARGS += ("--report", "extract.json")


def test_a_locked_store_is_refused_before_torch_is_even_imported(workspace):
    _manifest_and_refs(workspace)
    (workspace / "store").mkdir()
    holder = StoreLock(workspace / "store" / LOCK_NAME)
    holder.acquire()
    try:
        refused = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "pipeline.extract", *EXTRACT_ARGS],
            cwd=workspace,
            env=workspace_env(),
            text=True,
            capture_output=True,
            timeout=300,
        )
    finally:
        holder.release()
    imported = [line.split("|")[-1].strip() for line in refused.stderr.splitlines()]
    assert refused.returncode == EXIT_USER_ERROR, refused.stderr
    assert "is being written by pid" in refused.stderr
    assert not [name for name in imported if name.split(".")[0] == "torch"]


def test_a_fingerprint_mismatch_is_refused_before_weights_load_or_the_model_is_built(
    workspace, monkeypatch
):
    refs = _manifest_and_refs(workspace)
    extract_codes(refs, workspace / "store", SMALL_CONFIG, LIMITS, progress=False)
    not_weights = workspace / "weights.pth"
    not_weights.write_bytes(b"not a state dict: loading it would fail")
    config = replace(
        SMALL_CONFIG, weights=str(not_weights), weights_sha256=file_sha256(not_weights)
    )

    def never(*args: object) -> None:
        raise AssertionError("the network was built for a run the store refuses")

    monkeypatch.setattr("features.compute.backend.build_layers_extractor", never)
    with pytest.raises(FingerprintMismatch, match="weights: the store holds 'random:"):
        extract_codes(refs, workspace / "store", config, LIMITS, progress=False)


def test_extract_off_a_terminal_logs_whole_progress_lines(workspace):
    _manifest_and_refs(workspace)
    result = _stage(workspace, "extract", *EXTRACT_ARGS)
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stderr
    assert "extract: 6/6 img (100%)" in result.stderr


def test_train_an_unknown_head(workspace):
    args = ("forest", "--manifest", "manifest.csv", "--store", "store")
    args += ("--model", "models/forest.joblib", "--metrics", "m.json", "--predictions", "p.csv")
    _assert_user_error(
        _stage(workspace, "train", *args), "head 'forest' is not configured", "logreg"
    )


def test_predict_with_a_head_that_was_never_trained(workspace):
    result = _stage(workspace, "predict", "--head", "forest", "images/dogs/0.jpg")
    _assert_user_error(result, "no trained head at models/vgg16_fc6/forest.joblib")


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("plain", "plain"),
        ("a:\n  b\n  c", "a: b; c"),
        (
            "params.yaml: 2 problems:\n  x: got 1\n  y: got 2",
            "params.yaml: 2 problems: x: got 1; y: got 2",
        ),
        ("", ""),
    ],
)
def test_one_line(message, expected):
    assert one_line(message) == expected
