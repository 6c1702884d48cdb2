"""Every stage on a subset of the real flower photos, defects included."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pipeline.workspace import create_workspace, run_in
from tests.conftest import TEST_PARAMS_FILE

pytestmark = pytest.mark.slow
FC6 = "vgg16_fc6"  # tests/params.yaml's one feature set

DUPLICATE_PAIRS = [
    (
        "train/sunflowers/15069459615_7e0fd61914_n.jpg",
        "train/sunflowers/15072973261_73e2912ef2_n.jpg",
    ),
    (
        "train/sunflowers/14889392928_9742aed45b_m.jpg",
        "train/sunflowers/15066430311_fb57fa92b0_m.jpg",
    ),
]
CONFLICT = ("test/roses/15922772266_1167a06620.jpg", "test/tulips/15922772266_1167a06620.jpg")


def _subset(flowers: Path, destination: Path, per_class: int) -> None:
    """A few images per class and split, the known defects, and one .DS_Store."""
    keep = {path for pair in [*DUPLICATE_PAIRS, CONFLICT] for path in pair}
    for split, count in (("train", per_class), ("test", per_class // 2)):
        for folder in sorted((flowers / split).iterdir()):
            images = sorted(p for p in folder.iterdir() if p.suffix == ".jpg")[:count]
            keep.update(str(p.relative_to(flowers)) for p in images)
    store = next((flowers / "train").rglob(".DS_Store"))
    keep.add(str(store.relative_to(flowers)))
    for relative in keep:
        target = destination / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(flowers / relative, target)


def test_flower_subset_through_every_stage(tmp_path, flowers):
    workspace = create_workspace(
        tmp_path / "project",
        {
            "downloads": {},
            "data": {"root": "data/flowers"},
            "extract": {
                "weights": "random",
                "device": "cpu",
                "batch_size": 8,
                "preprocessing": {"resize": 64, "crop": 64},
            },
            "heads": {"mlp": {"hidden": [64]}},
        },
        base=TEST_PARAMS_FILE,
    )
    _subset(flowers, workspace / "data/flowers", per_class=8)
    run_in(workspace, "dvc", "repro")

    report = json.loads((workspace / "reports/data.json").read_text())
    assert report["predefined_splits"] is True
    assert report["ignored"] == {"hidden_or_system": 1}
    assert report["skipped"] == {"label_conflict": 2}
    groups = {tuple(sorted(group["paths"])): group["conflict"] for group in report["duplicates"]}
    for pair in DUPLICATE_PAIRS:
        assert groups[tuple(sorted(pair))] is False
    assert groups[tuple(sorted(CONFLICT))] is True
    assert [sorted(f["path"] for f in c["files"]) for c in report["conflicts"]] == [
        sorted(CONFLICT)
    ]

    manifest = (workspace / "data/manifest.csv").read_text()
    assert CONFLICT[0] not in manifest and CONFLICT[1] not in manifest
    extract = json.loads((workspace / "reports/extract.json").read_text())
    distinct = len(manifest.splitlines()) - 1
    assert extract["computed"] == distinct and extract["random_weights"] is True
    summary = json.loads((workspace / "metrics/summary.json").read_text())
    assert set(summary["entries"]) == {f"{head}-{FC6}" for head in ("logreg", "svm", "mlp")}
    assert summary["best"]["features"] == FC6 and summary["random_weights"] is True
    compare = (workspace / "reports/compare.md").read_text()
    assert "Random weights" in compare and "| logreg |" in compare
    verified = run_in(workspace, "python", "-m", "pipeline.store", "verify").stdout
    assert f"{distinct} rows" in verified and "OK" in verified
