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
from pipeline.workspace import run_in
from tests.conftest import SHAPES, SHAPES_OVERRIDES, shapes_workspace

pytestmark = pytest.mark.slow

DATA = SHAPES
OVERRIDES = {**SHAPES_OVERRIDES, "heads": {"mlp": {"hidden": [32], "max_iter": 50}}}
HEADS = ("logreg", "svm", "mlp")
FC6, FC7 = "vgg16_fc6", "vgg16_fc7"


def _stages(heads: tuple[str, ...], *sets: str) -> set[str]:
    return {f"train@{head}-{features}" for head in heads for features in sets}


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
    return shapes_workspace(tmp_path_factory.mktemp("ws"), OVERRIDES, per_class=8)


def test_repro_builds_every_artifact(workspace):
    output = run_in(workspace, "dvc", "repro").stdout
    assert _ran(output) == {
        "prepare",
        "extract",
        "audit",
        "compare",
        "report",
        *_stages(HEADS, FC6),
    }
    for head in HEADS:
        assert (workspace / f"models/{FC6}/{head}.joblib").is_file()
        assert (workspace / f"models/{FC6}/{head}.json").is_file()
        assert (workspace / f"plots/predictions/{FC6}/{head}.csv").is_file()
        assert (workspace / f"reports/plots/confusion_{head}-{FC6}.png").is_file()
    assert (workspace / "reports/plots/accuracy_vs_fit_time.png").is_file()
    assert (workspace / "reports/plots/accuracy_heatmap.png").is_file()
    assert (workspace / f"store/{FC6}/index.h5").is_file()
    summary = _json(workspace, "metrics/summary.json")
    assert set(summary["entries"]) == {f"{h}-{FC6}" for h in HEADS}
    assert summary["random_weights"] is True
    assert "Random weights" in (workspace / "reports/compare.md").read_text()
    extract = _json(workspace, "reports/extract.json")
    assert (extract["computed"], extract["reused"]) == (32, 0)
    shown = run_in(workspace, "dvc", "metrics", "show", "--json").stdout
    assert all(f'"{head}-{FC6}"' in shown for head in HEADS)
    run_in(workspace, "dvc", "plots", "show")
    status = run_in(workspace, "git", "status", "--porcelain", "--untracked-files=all").stdout
    generated = [line for line in status.splitlines() if "dvc_plots/" in line or "scan" in line]
    assert not generated, "`git add -A` would commit generated files"
    assert "analytics = false" in (workspace / ".dvc/config").read_text()
    _commit(workspace, "results v1", tag="v1")


def test_predict_reuses_stored_codes_and_computes_new_ones(workspace, tmp_path):
    rows = list(csv.DictReader((workspace / f"plots/predictions/{FC6}/svm.csv").open()))
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


def test_adding_a_feature_set_extracts_only_it_and_trains_only_its_heads(workspace):
    fc6_index = workspace / f"store/{FC6}/index.h5"
    before = fc6_index.stat().st_mtime_ns
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["features"][FC7] = {"backbone": "vgg16", "layer": "fc7"}
    (workspace / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    output = run_in(workspace, "dvc", "repro").stdout
    # the audit reads every store, but its groups are unchanged: no fc6 head reruns
    assert _ran(output) == {"extract", "audit", "compare", "report", *_stages(HEADS, FC7)}
    assert fc6_index.stat().st_mtime_ns == before, "the fc6 store was written to"
    extract = _json(workspace, "reports/extract.json")
    assert (extract["computed"], extract["reused"]) == (32, 0)
    assert extract["backbones"]["vgg16"]["layers_computed"] == {"fc7": 32}
    fingerprints = extract["backbones"]["vgg16"]["fingerprints"]
    assert (fingerprints[FC7]["layer"], fingerprints[FC6]["layer"]) == (
        "classifier.4",
        "classifier.1",
    )
    summary = _json(workspace, "metrics/summary.json")
    assert set(summary["entries"]) == {f"{h}-{s}" for h in HEADS for s in (FC6, FC7)}
    assert summary["best"]["features"] in (FC6, FC7)
    assert "| logreg |" in (workspace / "reports/compare.md").read_text()
    _commit(workspace, "feature set vgg16_fc7")


def test_changing_svm_params_reruns_that_head_on_every_feature_set_only(workspace):
    before = (workspace / f"store/{FC6}/index.h5").stat().st_mtime_ns
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["heads"]["svm"]["C"] = 0.1
    (workspace / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = run_in(workspace, "dvc", "status").stdout
    assert f"train@svm-{FC7}" in status and "extract" not in status
    output = run_in(workspace, "dvc", "repro").stdout
    assert _ran(output) == {"compare", "report", *_stages(("svm",), FC6, FC7)}
    assert (workspace / f"store/{FC6}/index.h5").stat().st_mtime_ns == before, "extract ran"
    for features in (FC6, FC7):
        assert _json(workspace, f"metrics/heads/{features}/svm.json")["params"]["C"] == 0.1
    _commit(workspace, "svm C=0.1")


def test_experiment_run_on_one_head_reruns_only_it(workspace):
    output = run_in(workspace, "dvc", "exp", "run", "-S", "heads.logreg.C=0.5").stdout
    assert _ran(output) == {"compare", "report", *_stages(("logreg",), FC6, FC7)}
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
    assert _json(workspace, f"metrics/heads/{FC6}/svm.json")["params"]["C"] == 1.0
    assert set(summary["entries"]) == {f"{h}-{FC6}" for h in HEADS}
    assert not (workspace / f"store/{FC7}").exists()
    assert run_in(workspace, "dvc", "status").stdout.strip().endswith("up to date.")
