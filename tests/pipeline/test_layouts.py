"""Every dataset layout through the real ``train`` stage: the figure comes from test, else val.

One pool of generated images is extracted once; each layout copies some of them into its
own folders and gets its own manifest. The store is keyed by content, so every layout's
manifest finds its codes in the one store.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from features.compute.extract import extract_codes
from features.compute.loader import ImageRef
from features.data.manifest import build_manifest, write_manifest
from features.data.scan import scan_dataset
from features.data.synthetic import make_dataset
from pipeline import train
from pipeline.cli import run
from tests.conftest import LIMITS, SMALL_CONFIG
from tests.pipeline.test_train_stage import _params

CLASSES = ("circles", "squares", "stripes")
# Image numbers per split folder: disjoint, so no image is a duplicate across splits.
SPLIT_IMAGES = {"train": range(0, 8), "val": range(8, 11), "test": range(11, 14)}
HEADS = {
    "logreg": {"grid": {"C": [0.01, 1.0]}, "cv_folds": 2},
    "mlp": {"hidden": [16], "max_iter": 30},
}


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every image any layout uses, and one store holding all their codes."""
    root = tmp_path_factory.mktemp("layouts")
    make_dataset(root / "pool", per_class=14, classes=CLASSES)
    outcomes, _ = scan_dataset(root / "pool", LIMITS, n_jobs=1)
    refs = [ImageRef(o.sha256, root / "pool" / o.path) for o in outcomes]
    extract_codes(refs, root / "store", SMALL_CONFIG, LIMITS, progress=False, log=lambda _: None)
    return root


def _layout(pool: Path, name: str, splits: dict[str, tuple[str, ...]]) -> Path:
    """Copy pool images into ``<name>/<split>/<class>/``; split "" means flat ``<class>/``."""
    data = pool / name
    for split, classes in splits.items():
        for label in classes:
            folder = data / split / label
            folder.mkdir(parents=True, exist_ok=True)
            numbers = range(14) if split == "" else SPLIT_IMAGES[split]
            for index in numbers:
                image = pool / "pool" / label / f"{label}_{index:04d}.jpg"
                shutil.copy(image, folder / image.name)
    return data


def _train(pool: Path, data: Path, head: str, tmp_path: Path, **sections) -> dict:
    """Prepare's manifest for ``data``, then ``train@<head>`` as dvc.yaml runs it."""
    outcomes, predefined = scan_dataset(data, LIMITS, n_jobs=1)
    rows, _, _ = build_manifest(outcomes, data, predefined, "salt", 0.25)
    write_manifest(tmp_path / "manifest.csv", rows)
    params = {**_params(pool, {head: HEADS[head]}), **sections}
    params["data"] = {"root": str(data)}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    metrics = tmp_path / "metrics.json"
    argv = [head, "--manifest", str(tmp_path / "manifest.csv"), "--store", str(pool / "store")]
    argv += ["--model", str(tmp_path / "model.joblib"), "--metrics", str(metrics)]
    argv += ["--predictions", str(tmp_path / "predictions.csv")]
    argv += ["--params", str(tmp_path / "params.yaml")]
    train.main(argv)
    return json.loads(metrics.read_text())


@pytest.mark.parametrize("head", sorted(HEADS))
def test_flat_layout_evaluates_on_its_drawn_test_split(head, pool, tmp_path):
    metrics = _train(pool, _layout(pool, "flat", {"": CLASSES}), head, tmp_path)
    assert metrics["evaluated_on"] == "test" and metrics["evaluation_note"] is None
    assert metrics["selected_on"] == ("train_cv" if head == "logreg" else None)
    assert metrics["n_test"] > 0


def test_train_and_test_folders_evaluate_on_test(pool, tmp_path):
    data = _layout(pool, "train_test", {"train": CLASSES, "test": CLASSES})
    metrics = _train(pool, data, "logreg", tmp_path)
    assert metrics["evaluated_on"] == "test" and metrics["n_test"] == 3 * len(CLASSES)
    assert metrics["selected_on"] == "train_cv" and "val" not in metrics


@pytest.mark.parametrize("head", sorted(HEADS))
def test_train_and_val_folders_evaluate_on_val_and_say_so(head, pool, tmp_path, capsys):
    data = _layout(pool, "train_val", {"train": CLASSES, "val": CLASSES})
    metrics = _train(pool, data, head, tmp_path)
    note = "evaluated on val: the dataset has no test split"
    assert metrics["evaluated_on"] == "val" and metrics["evaluation_note"] == note
    assert metrics["n_test"] == 3 * len(CLASSES) and "val" not in metrics
    # val gives the figure, so it must not also choose: the grid falls back to CV on train.
    assert metrics["selected_on"] == ("train_cv" if head == "logreg" else None)
    out = capsys.readouterr().out
    assert note in out and "on val" in out.splitlines()[-1]


@pytest.mark.parametrize("head", sorted(HEADS))
def test_train_val_test_selects_on_val_and_reports_test(head, pool, tmp_path):
    data = _layout(pool, "all", {"train": CLASSES, "val": CLASSES, "test": CLASSES})
    metrics = _train(pool, data, head, tmp_path)
    assert metrics["evaluated_on"] == "test" and metrics["selected_on"] == "val"
    assert metrics["n_train"] == 8 * len(CLASSES) and metrics["n_test"] == 3 * len(CLASSES)
    assert set(metrics["val"]) == {"accuracy", "balanced_accuracy", "macro_f1"}
    if head == "logreg":
        assert len(metrics["cv"]) == 2 and all(row["std_accuracy"] == 0 for row in metrics["cv"])


def test_evaluate_on_val_overrides_a_present_test_split(pool, tmp_path):
    data = _layout(pool, "all", {"train": CLASSES, "val": CLASSES, "test": CLASSES})
    metrics = _train(pool, data, "logreg", tmp_path, evaluation={"evaluate_on": "val"})
    assert metrics["evaluated_on"] == "val" and metrics["selected_on"] == "train_cv"
    assert metrics["evaluation_note"] == "evaluated on val: evaluation.evaluate_on: val"


def test_a_class_missing_from_the_test_folder_is_named_not_a_crash(pool, tmp_path, capsys):
    data = _layout(pool, "gap", {"train": CLASSES, "test": CLASSES[:2]})
    metrics = _train(pool, data, "logreg", tmp_path)
    assert "warning: class(es) 'stripes' have no test images" in capsys.readouterr().out
    assert metrics["classes_not_evaluated"] == ["stripes"]
    assert metrics["confusion_matrix"]["labels"] == list(CLASSES)
    assert metrics["per_class"]["stripes"]["support"] == 0
    assert len(metrics["confusion_matrix"]["matrix"]) == len(CLASSES)


def test_only_a_train_folder_is_one_error_line_exit_2(pool, tmp_path, capsys):
    data = _layout(pool, "train_only", {"train": CLASSES})
    with pytest.raises(SystemExit) as exit_info:
        run(lambda argv: _train(pool, data, "logreg", tmp_path), [])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    (line,) = err.strip().splitlines()
    assert line.startswith(
        f"error: no images to evaluate on: looked for test/ and val/ under {data} "
        f"(the dataset has only train/); add a test/<class>/ folder of images"
    )
