"""The audit stage on a dataset with a planted leak: a near-copy of a train image filed
under test/. The stage must find it, list it first, and ``train`` must score without it."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest
import yaml
from PIL import Image

from features.compute.extract import extract_codes
from features.compute.loader import ImageRef
from features.data.manifest import build_manifest, write_manifest
from features.data.near_copies import near_copy
from features.data.scan import scan_dataset
from features.data.synthetic import make_dataset
from pipeline import audit, train
from tests.conftest import LIMITS, SMALL_CONFIG, SMALL_EXTRACT, SMALL_STORE


@pytest.fixture(scope="module")
def leaky(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """train/ and test/ folders of generated shapes, one train image copied into test/."""
    root = tmp_path_factory.mktemp("audit")
    images = root / "images"
    make_dataset(images / "train", per_class=8, seed=1)
    make_dataset(images / "test", per_class=3, seed=2)
    source = images / "train" / "circles" / "circles_0003.jpg"
    with Image.open(source) as image:
        copy = near_copy(image, random.Random(0))
    (images / "test" / "circles" / "copy_of_train_0003.jpg").write_bytes(copy)
    outcomes, predefined = scan_dataset(images, LIMITS, n_jobs=1)
    rows, _, _ = build_manifest(outcomes, images, predefined, "salt", 0.25)
    write_manifest(root / "manifest.csv", rows)
    refs = [ImageRef(row.sha256, images / row.path) for row in rows]
    extract_codes(refs, root / SMALL_STORE, SMALL_CONFIG, LIMITS, progress=False, log=print)
    return root


def _params(root: Path) -> Path:
    params = {
        "paths": {
            key: str(root / value)
            for key, value in {
                "manifest": "manifest.csv",
                "files_report": "files.csv",
                "data_report": "data.json",
                "scan_cache": "scan.json",
                "store": "store",
                "extract_report": "extract.json",
                "models": "models",
                "metrics": "metrics",
                "predictions": "predictions",
                "summary": "summary.json",
                "compare_report": "compare.md",
                "plots": "plots",
                "tradeoff": "tradeoff.csv",
                "checkpoints": "checkpoints",
                "curves": "curves",
            }.items()
        },
        "downloads": {},
        "data": {"root": str(root / "images")},
        "extract": SMALL_EXTRACT,
        "heads": {"logreg": {"C": 1.0}},
        "audit": {"signal": "perceptual", "max_hamming": 24, "calibration_photos": 12},
    }
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_a_cross_split_copy_is_found_listed_first_and_left_out_of_the_score(
    leaky: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    params = _params(leaky)
    out, summary_path = leaky / "audit", leaky / "audit.json"
    audit.main(
        [
            *("--data", str(leaky / "images"), "--manifest", str(leaky / "manifest.csv")),
            *("--store", str(leaky / "store"), "--out", str(out)),
            *("--summary", str(summary_path), "--params", str(params)),
        ]
    )
    assert "RANDOM weights" in capsys.readouterr().out
    groups = json.loads((out / "groups.json").read_text())["groups"]
    first = groups[0]
    assert first["leaks"]
    assert {m["path"] for m in first["members"]} >= {
        "train/circles/circles_0003.jpg",
        "test/circles/copy_of_train_0003.jpg",
    }
    summary = json.loads(summary_path.read_text())
    assert summary["leaking_pairs"] >= 1 and summary["images"] == 4 * 11 + 1
    assert summary["calibration"]["precision"] is not None
    assert summary["max_hamming"] == 24 and summary["dataset_bound"] is None  # fixed by hand
    calibration = json.loads((out / "calibration.json").read_text())
    assert calibration["rule"]["signal"] == "perceptual"
    assert calibration["rule"]["max_hamming"] == 24  # from params, not calibrated
    assert set(calibration["signals"]) == {"perceptual", "codes", "fused"}
    with open(out / "images.csv", newline="") as stream:
        scored = list(csv.DictReader(stream))
    leaked = [row for row in scored if row["leaked"] == "1"]
    assert {row["split"] for row in leaked} == {"train", "test"}
    assert all(row["label_quality"] == "" for row in scored if row["split"] == "test")

    metrics = leaky / "metrics.json"
    train.main(
        [
            "logreg",
            *("--manifest", str(leaky / "manifest.csv"), "--store", str(leaky / SMALL_STORE)),
            *("--model", str(leaky / "m.joblib"), "--metrics", str(metrics)),
            *("--predictions", str(leaky / "p.csv"), "--groups", str(out / "groups.json")),
            *("--params", str(params)),
        ]
    )
    figures = json.loads(metrics.read_text())
    clean = figures["without_leaked"]
    assert clean["excluded"] >= 1 and clean["n"] == figures["n_test"] - clean["excluded"]
    assert figures["moved_by_near_duplicates"] == 0  # the dataset's own split is kept
    with open(leaky / "p.csv", newline="") as stream:
        assert all(0 < float(row["confidence"]) <= 1 for row in csv.DictReader(stream))
