"""The whole pipeline under real git + DVC in a temporary workspace."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from features.data.synthetic import make_dataset, make_image
from pipeline.workspace import create_workspace, run_in
from tests.conftest import SHAPES, SHAPES_OVERRIDES, TEST_PARAMS_FILE

pytestmark = pytest.mark.slow

DATA = SHAPES
OVERRIDES = {**SHAPES_OVERRIDES, "heads": {"mlp": {"hidden": [32], "max_iter": 50}}}
HEADS = ("logreg", "svm", "mlp")


def _ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def _json(workspace: Path, relative: str) -> dict:
    return json.loads((workspace / relative).read_text())


def _commit(workspace: Path, message: str, tag: str | None = None) -> None:
    run_in(workspace, "git", "add", "-A")
    run_in(workspace, "git", "commit", "-q", "-m", message)
    if tag:
        run_in(workspace, "git", "tag", tag)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    root = create_workspace(
        tmp_path_factory.mktemp("ws") / "project", OVERRIDES, base=TEST_PARAMS_FILE
    )
    make_dataset(root / DATA, per_class=8)
    run_in(root, "dvc", "add", "-q", DATA)
    _commit(root, "dataset v1")
    return root


def test_repro_builds_every_artifact(workspace):
    output = run_in(workspace, "dvc", "repro").stdout
    assert _ran(output) == {"prepare", "extract", "compare", *(f"train@{h}" for h in HEADS)}
    for head in HEADS:
        assert (workspace / f"models/{head}.joblib").is_file()
        assert (workspace / f"models/{head}.json").is_file()
        assert (workspace / f"plots/predictions/{head}.csv").is_file()
        assert (workspace / f"reports/plots/confusion_{head}.png").is_file()
    assert (workspace / "reports/plots/accuracy_vs_fit_time.png").is_file()
    assert (workspace / "store/index.h5").is_file()
    summary = _json(workspace, "metrics/summary.json")
    assert set(summary["heads"]) == set(HEADS) and summary["random_weights"] is True
    assert "Random weights" in (workspace / "reports/compare.md").read_text()
    extract = _json(workspace, "reports/extract.json")
    assert (extract["computed"], extract["reused"]) == (32, 0)
    shown = run_in(workspace, "dvc", "metrics", "show", "--json").stdout
    assert all(f'"{head}"' in shown for head in HEADS)
    run_in(workspace, "dvc", "plots", "show")
    status = run_in(workspace, "git", "status", "--porcelain", "--untracked-files=all").stdout
    generated = [line for line in status.splitlines() if "dvc_plots/" in line or "scan" in line]
    assert not generated, "`git add -A` would commit generated files"
    assert "analytics = false" in (workspace / ".dvc/config").read_text()
    _commit(workspace, "results v1", tag="v1")


def test_predict_reuses_stored_codes_and_computes_new_ones(workspace, tmp_path):
    rows = list(csv.DictReader((workspace / "plots/predictions/svm.csv").open()))
    manifest = {
        row["sha256"]: row["path"]
        for row in csv.DictReader((workspace / "data/manifest.csv").open())
    }
    known = tmp_path / "renamed.jpg"  # a stored image under a new name: matched by content
    shutil.copyfile(workspace / DATA / manifest[rows[0]["sha256"]], known)
    novel = tmp_path / "novel.jpg"
    make_image("circles", np.random.default_rng(999)).save(novel, format="JPEG")
    output = run_in(
        workspace,
        "python",
        "-m",
        "pipeline.predict",
        "--head",
        "svm",
        "--json",
        str(known),
        str(novel),
    ).stdout
    answer = json.loads(output)
    assert answer["random_weights"] is True
    first, second = answer["results"]
    assert (first["codes"], second["codes"]) == ("store", "computed")
    assert first["label"] == rows[0]["predicted"]  # the same answer the test run gave
    for result in (first, second):
        assert set(result["probabilities"]) == {"circles", "squares", "stripes", "triangles"}
        assert abs(sum(result["probabilities"].values()) - 1) < 1e-6
    text = run_in(
        workspace, "python", "-m", "pipeline.predict", "--head", "logreg", str(novel)
    ).stdout
    assert "RANDOM weights" in text and "codes computed now" in text


def test_changing_svm_params_reruns_only_that_head(workspace):
    before = (workspace / "store/index.h5").stat().st_mtime_ns
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["heads"]["svm"]["C"] = 0.1
    (workspace / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = run_in(workspace, "dvc", "status").stdout
    assert "train@svm" in status and "extract" not in status
    output = run_in(workspace, "dvc", "repro").stdout
    assert _ran(output) == {"train@svm", "compare"}
    assert (workspace / "store/index.h5").stat().st_mtime_ns == before, "extract ran"
    assert _json(workspace, "metrics/heads/svm.json")["params"]["C"] == 0.1
    _commit(workspace, "svm C=0.1")


def test_experiment_run_on_one_head_reruns_only_it(workspace):
    output = run_in(workspace, "dvc", "exp", "run", "-S", "heads.logreg.C=0.5").stdout
    assert _ran(output) == {"train@logreg", "compare"}
    run_in(workspace, "git", "checkout", "--", ".")
    run_in(workspace, "dvc", "checkout", "-q")


def test_growing_the_dataset_extracts_only_new_images(workspace):
    make_dataset(workspace / DATA, per_class=3, start=8)
    run_in(workspace, "dvc", "add", "-q", DATA)
    output = run_in(workspace, "dvc", "repro").stdout
    assert {"prepare", "extract"} <= _ran(output)
    extract = _json(workspace, "reports/extract.json")
    assert (extract["computed"], extract["reused"]) == (12, 32)
    _commit(workspace, "dataset v2", tag="v2")


def test_checking_out_an_earlier_tag_restores_its_data_and_results(workspace):
    v2_manifest = (workspace / "data/manifest.csv").read_text()
    run_in(workspace, "git", "checkout", "-q", "v1")
    run_in(workspace, "dvc", "checkout", "-q", "--force")
    manifest = (workspace / "data/manifest.csv").read_text()
    assert manifest != v2_manifest and len(manifest.splitlines()) == 33
    assert len(list((workspace / DATA).rglob("*.jpg"))) == 32
    summary = _json(workspace, "metrics/summary.json")
    assert _json(workspace, "metrics/heads/svm.json")["params"]["C"] == 1.0
    assert set(summary["heads"]) == set(HEADS)
    assert run_in(workspace, "dvc", "status").stdout.strip().endswith("up to date.")
