"""The classifier-block head: VGG16's fc6 and fc7 retrained on stored pool5 maps.

One forward pass fills a ``vgg16_fc6`` and a ``vgg16_pool5_map`` store (random weights,
32 px shapes); the block started from the same weights must reproduce the stored fc6 codes
from the maps, fit above chance, and go through the real train stage and ``predict``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from classifiers.block import block_init
from classifiers.block_fit import ALIGNMENT_TOLERANCE, check_alignment, fit_block
from classifiers.data import carve_val, load_split
from classifiers.heads import BlockParams
from features.compute.extract import extract_codes
from features.compute.loader import ImageRef
from features.data.manifest import build_manifest, read_manifest, write_manifest
from features.data.scan import scan_dataset
from features.data.synthetic import make_dataset
from features.errors import UserError
from features.store import FeatureStore
from pipeline import predict, train
from tests.conftest import LIMITS, SMALL_CONFIG, SMALL_EXTRACT, TEST_PARAMS

PARAMS = BlockParams(epochs=2, patience=2, lr=1e-4, batch_size=16)


def _quiet(message: str) -> None:
    del message


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shapes, a manifest, and the fc6 and pool5-map stores from one forward pass."""
    root = tmp_path_factory.mktemp("block")
    images = root / "images"
    make_dataset(images, per_class=12)
    outcomes, predefined = scan_dataset(images, LIMITS, n_jobs=1)
    rows, _, _ = build_manifest(outcomes, images, predefined, "salt", 0.25)
    write_manifest(root / "manifest.csv", rows)
    refs = [ImageRef(row.sha256, images / row.path) for row in rows]
    stores = {"fc6": root / "store/vgg16_fc6", "pool5_map": root / "store/vgg16_pool5_map"}
    extract_codes(refs, stores, SMALL_CONFIG, LIMITS, progress=False, log=_quiet)
    return root


@pytest.fixture(scope="module")
def init():
    return block_init("vgg16", "random", SMALL_CONFIG.seed, None)


def _split(root: Path, split: str, store: str = "vgg16_pool5_map"):
    with FeatureStore(root / "store" / store) as reader:
        return load_split(read_manifest(root / "manifest.csv"), split, reader)


def test_fc6_from_stored_maps_equals_the_stored_fc6_codes(root, init):
    maps, fc6 = _split(root, "train"), _split(root, "train", "vgg16_fc6")
    assert maps.hashes == fc6.hashes and maps.X.shape[1] == 25088
    assert check_alignment(init, maps.X, fc6.X) < ALIGNMENT_TOLERANCE / 10
    other = block_init("vgg16", "random", SMALL_CONFIG.seed + 1, None)
    with pytest.raises(UserError, match="do not line up"):
        check_alignment(other, maps.X, fc6.X)


def test_the_block_is_deterministic_and_records_its_curves(root, init):
    train_split, val = carve_val(_split(root, "train"), 0.25)
    test = _split(root, "test")
    first = fit_block(PARAMS, train_split, val, init, log=_quiet)
    again = fit_block(PARAMS, train_split, val, init, log=_quiet)
    probabilities = first.model.predict_proba(test.X)
    np.testing.assert_array_equal(probabilities, again.model.predict_proba(test.X))
    curves = first.model.named_steps["clf"].curves_
    assert [row["epoch"] for row in curves] == [1, 2]
    assert all(np.isfinite(row["train_loss"]) for row in curves)


def test_the_block_fits_above_chance(root, init):
    """Random-weight maps differ little between images (one large common component), so
    the block needs ~100 steps here where pretrained maps need a few; no dropout for that."""
    train_split, val = carve_val(_split(root, "train"), 0.25)
    test = _split(root, "test")
    params = BlockParams(epochs=30, patience=30, lr=1e-4, batch_size=8, dropout=0.0)
    model = fit_block(params, train_split, val, init, log=_quiet).model
    accuracy = float((model.predict(test.X) == test.y).mean())
    assert accuracy > 0.25 + 0.25, f"chance is 0.25 on four classes, got {accuracy}"


def test_the_val_carve_depends_on_content_only(root):
    split = _split(root, "train")
    train_part, val = carve_val(split, 0.25)
    assert set(train_part.hashes).isdisjoint(val.hashes) and val.hashes
    reversed_split = type(split)(split.X[::-1], split.y[::-1], split.hashes[::-1])
    assert set(carve_val(reversed_split, 0.25)[1].hashes) == set(val.hashes)


def test_the_train_stage_fits_a_block_head_and_predict_uses_it(root, tmp_path, capsys):
    params = {
        **TEST_PARAMS,
        "paths": {**TEST_PARAMS["paths"], "store": str(root / "store")},
        "downloads": {},
        "data": {"root": str(root / "images")},
        "extract": SMALL_EXTRACT,
        "maps": {"vgg16_pool5_map": {"backbone": "vgg16", "layer": "pool5_map"}},
        "block_heads": {"block": {"epochs": 3, "batch_size": 16}},
    }
    params["paths"]["models"] = str(tmp_path / "models")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    model = tmp_path / "models/vgg16_pool5_map/block.joblib"
    metrics, curves = tmp_path / "block.json", tmp_path / "curves.csv"
    argv = ["block", "--features", "vgg16_pool5_map", "--manifest", str(root / "manifest.csv")]
    argv += ["--store", str(root / "store/vgg16_pool5_map"), "--model", str(model)]
    argv += ["--metrics", str(metrics), "--predictions", str(tmp_path / "p.csv")]
    argv += ["--curves", str(curves), "--params", str(tmp_path / "params.yaml")]
    train.main(argv)
    assert "alignment: fc6 recomputed from" in capsys.readouterr().out
    written = json.loads(metrics.read_text())
    assert written["kind"] == "classifier_block" and written["selected_on"] == "val"
    assert 1 <= written["best_epoch"] <= 3 and written["random_weights"] is True
    rows = list(csv.DictReader(curves.open()))
    assert list(rows[0]) == ["epoch", "train_loss", "val_loss", "val_accuracy"]
    novel = tmp_path / "novel.jpg"
    make_dataset(tmp_path / "new", per_class=1, start=500)[0].rename(novel)
    answers, head = predict.predict("block", [str(novel)], tmp_path / "params.yaml")
    assert answers[0].codes == "computed" and head.fingerprint.layer == "flatten"
    assert abs(sum(answers[0].values.values()) - 1) < 1e-5
