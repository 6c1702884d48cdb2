"""``pipeline.predict`` on real batches: folders, ``@list`` files, bad files among good ones.

A tiny head (random weights, 32 px, CPU) is trained once through the real ``train`` stage
on a store built from tests/params.yaml, never the working params.yaml.
"""

from __future__ import annotations

import copy
import csv
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from sklearn.neighbors import NearestCentroid
from sklearn.svm import SVC

import features.compute.encoder
from classifiers.persist import HeadError
from features.data.synthetic import CLASSES, make_image
from features.errors import UserError
from pipeline import predict, train
from pipeline.cli import EXIT_USER_ERROR, run
from pipeline.predict import Head
from tests.conftest import SMALL_EXTRACT, SMALL_STORE, TEST_PARAMS, small_store

HEAD = "logreg"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Images, store and a trained head, built once; params.yaml with absolute paths."""
    root = small_store(tmp_path_factory.mktemp("predict"), per_class=4)
    images = root / "images"
    params = copy.deepcopy(TEST_PARAMS)
    params["paths"] = {key: str(root / value) for key, value in params["paths"].items()}
    params["paths"].update(manifest=str(root / "manifest.csv"), store=str(root / "store"))
    params.update(downloads={}, extract=SMALL_EXTRACT, heads={HEAD: {}})
    params["data"]["root"] = str(images)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    argv = [HEAD, "--manifest", str(root / "manifest.csv"), "--store", str(root / SMALL_STORE)]
    argv += ["--model", str(root / "models" / "vgg16_fc6" / f"{HEAD}.joblib")]
    argv += ["--metrics", str(root / "metrics.json"), "--predictions", str(root / "pred.csv")]
    train.main([*argv, "--params", str(root / "params.yaml")])
    return root


def _new_images(folder: Path, count: int, seed: int = 100) -> list[Path]:
    """JPEGs the store has never seen."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        path = folder / f"new_{index:02d}.jpg"
        label = CLASSES[index % len(CLASSES)]
        make_image(label, np.random.default_rng([seed, index])).save(path, format="JPEG")
        paths.append(path)
    return paths


def _predict(workspace: Path, *inputs: object) -> list[predict.Prediction]:
    rows, _ = predict.predict(HEAD, [str(i) for i in inputs], workspace / "params.yaml")
    return rows


def _main(workspace: Path, *argv: object) -> int:
    return predict.main(
        [*(str(a) for a in argv), "--head", HEAD, "--params", str(workspace / "params.yaml")]
    )


def test_a_folder_is_walked_by_prepares_rules(workspace, tmp_path):
    new = _new_images(tmp_path / "batch" / "nested", 3)
    (tmp_path / "batch" / ".hidden.jpg").write_bytes(new[0].read_bytes())
    (tmp_path / "batch" / "notes.txt").write_text("not an image")
    os.symlink(workspace / "params.yaml", tmp_path / "batch" / "outside.jpg")

    rows = _predict(workspace, tmp_path / "batch")

    paths = [Path(row.path).relative_to(tmp_path / "batch").as_posix() for row in rows]
    assert paths == ["nested/new_00.jpg", "nested/new_01.jpg", "nested/new_02.jpg", "outside.jpg"]
    assert [row.label in CLASSES for row in rows[:3]] == [True] * 3
    assert rows[3].error.startswith("outside_root:") and not rows[3].label


def test_a_list_file_names_files_relative_to_itself_or_absolute(workspace, tmp_path):
    first, second = _new_images(tmp_path / "pics", 2)
    listing = tmp_path / "lists" / "todo.txt"
    listing.parent.mkdir()
    listing.write_text(f"# today's batch\n\n../pics/{first.name}\n  {second}  \n")

    rows = _predict(workspace, f"@{listing}")

    assert [Path(row.path).resolve() for row in rows] == [first, second]
    assert all(row.label and not row.error for row in rows)


def test_bad_files_get_error_rows_and_the_others_are_predicted(workspace, tmp_path, capsys):
    good = _new_images(tmp_path, 3)
    (tmp_path / "fake.jpg").write_text("plain text, not an image")
    inputs = [good[0], tmp_path / "missing.jpg", good[1], tmp_path / "fake.jpg", good[2]]

    assert _main(workspace, *inputs) == 1

    captured = capsys.readouterr()
    assert "2 of 5 files could not be predicted" in captured.err
    lines = [line for line in captured.out.splitlines() if not line.startswith("NOTE")]
    assert [line.split(":")[0] for line in lines] == [str(path) for path in inputs]
    assert "missing.jpg: skipped (missing:" in lines[1]
    assert "fake.jpg: skipped (not_an_image:" in lines[3]
    assert all("codes computed now" in lines[i] for i in (0, 2, 4))


def test_out_writes_one_csv_row_per_file_with_where_the_codes_came_from(workspace, tmp_path):
    stored = sorted((workspace / "images" / "circles").glob("*.jpg"))[0]
    (novel,) = _new_images(tmp_path, 1)
    out = tmp_path / "predictions.csv"

    assert _main(workspace, stored, novel, tmp_path / "gone.jpg", "--out", out) == 1

    with out.open(newline="") as stream:
        rows = list(csv.DictReader(stream))
    probabilities = [f"p_{label}" for label in CLASSES]
    assert list(rows[0]) == ["path", "sha256", "label", *probabilities, "codes", "error"]
    assert [row["codes"] for row in rows] == ["store", "computed", ""]
    for row in rows[:2]:
        assert row["label"] in CLASSES and not row["error"] and len(row["sha256"]) == 64
        assert abs(sum(float(row[column]) for column in probabilities) - 1) < 1e-6
        assert max(probabilities, key=lambda column: float(row[column])) == f"p_{row['label']}"
    assert rows[2]["error"].startswith("missing:") and not rows[2]["p_circles"]


def test_new_images_are_encoded_in_batches_of_batch_size(workspace, tmp_path, monkeypatch):
    sizes = []
    forward = features.compute.encoder.Encoder.__call__

    def spy(self, pixels):
        sizes.append(len(pixels))
        return forward(self, pixels)

    monkeypatch.setattr(features.compute.encoder.Encoder, "__call__", spy)
    new = _new_images(tmp_path, 6)

    rows = _predict(workspace, tmp_path, new[0])  # the same bytes twice: encoded once

    assert sizes == [SMALL_EXTRACT["batch_size"], 2]
    assert len(rows) == 7 and rows[0].values == rows[-1].values


def test_a_list_that_does_not_exist_is_a_user_error(workspace, tmp_path, capsys):
    (image,) = _new_images(tmp_path, 1)
    argv = [str(image), f"@{tmp_path / 'nowhere.txt'}", "--head", HEAD]

    with pytest.raises(SystemExit) as exit_info:
        run(predict.main, [*argv, "--params", str(workspace / "params.yaml")])

    assert exit_info.value.code == EXIT_USER_ERROR
    assert "error: cannot read the list" in capsys.readouterr().err


def test_no_files_at_all_is_a_user_error(workspace, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no images"):
        _predict(workspace, tmp_path / "empty")


def test_a_two_class_head_without_probabilities_gives_one_score_per_class():
    """scikit-learn returns one decision score per image for two classes."""
    estimator = SVC(kernel="linear")
    rng = np.random.default_rng(0)
    codes = np.concatenate([rng.normal(-2, 1, (10, 4)), rng.normal(2, 1, (10, 4))])
    labels = np.array(["ants"] * 10 + ["bees"] * 10)
    head = Head(estimator.fit(codes, labels), fingerprint=None)
    values = head.values(codes[[0, -1]])
    assert head.kind == "scores" and values.shape == (2, 2)
    assert list(head.classes) == ["ants", "bees"]
    assert values[0].argmax() == 0 and values[1].argmax() == 1


def test_a_head_with_neither_probabilities_nor_scores_gives_votes():
    rng = np.random.default_rng(0)
    codes = np.concatenate([rng.normal(-2, 1, (10, 4)), rng.normal(2, 1, (10, 4))])
    labels = np.array(["ants"] * 10 + ["bees"] * 10)
    head = Head(NearestCentroid(metric="manhattan").fit(codes, labels), fingerprint=None)
    assert head.kind == "votes"
    assert head.values(codes[[0, -1]]).tolist() == [[1.0, 0.0], [0.0, 1.0]]


def test_features_picks_the_set_a_head_was_trained_on(workspace, tmp_path):
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["features"] = {
        "vgg16_fc6": {"backbone": "vgg16", "layer": "fc6"},
        "vgg16_fc7": {"backbone": "vgg16", "layer": "fc7"},
    }
    both = tmp_path / "params.yaml"
    both.write_text(yaml.safe_dump(params))
    stored = sorted((workspace / "images" / "circles").glob("*.jpg"))[0]
    with pytest.raises(UserError, match="pick one with --features: vgg16_fc6, vgg16_fc7"):
        predict.predict(HEAD, [str(stored)], both)
    rows, head = predict.predict(HEAD, [str(stored)], both, features="vgg16_fc6")
    assert rows[0].codes == "store" and head.fingerprint.layer == "classifier.1"
    with pytest.raises(HeadError, match=r"no trained head at .*vgg16_fc7"):
        predict.predict(HEAD, [str(stored)], both, features="vgg16_fc7")
