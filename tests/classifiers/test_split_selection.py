"""Which split gives the figure and which chooses: decided from the manifest, before fitting."""

from __future__ import annotations

import numpy as np
import pytest

from classifiers.data import SplitPlan, missing_classes, plan_splits
from classifiers.fit import fit_head
from classifiers.heads import LogRegParams, MLPParams
from features.data.manifest import ManifestRow
from features.errors import UserError
from pipeline.params import ParamsError, validate
from tests.conftest import TEST_PARAMS

NO_TEST = "evaluated on val: the dataset has no test split"


def _rows(splits: dict[str, tuple[str, ...]], folders: bool = True) -> list[ManifestRow]:
    """Two images per class per split; ``folders`` puts them under ``<split>/``."""
    rows = []
    for split, classes in splits.items():
        for label in classes:
            for i in range(2):
                path = f"{split}/{label}/{i}.jpg" if folders else f"{label}/{split}{i}.jpg"
                rows.append(ManifestRow(path, f"{split}{label}{i}", label, split))
    return rows


AB = ("a", "b")


@pytest.mark.parametrize(
    ("splits", "evaluate_on", "expected"),
    [
        ({"train": AB, "test": AB}, "auto", SplitPlan("test", None, None)),
        ({"train": AB, "val": AB}, "auto", SplitPlan("val", None, NO_TEST)),
        ({"train": AB, "val": AB, "test": AB}, "auto", SplitPlan("test", "val", None)),
        ({"train": AB, "val": AB, "test": AB}, "test", SplitPlan("test", "val", None)),
        (
            {"train": AB, "val": AB, "test": AB},
            "val",
            SplitPlan("val", None, "evaluated on val: evaluation.evaluate_on: val"),
        ),
    ],
)
def test_plan_prefers_test_and_never_selects_on_the_evaluated_split(
    splits, evaluate_on, expected
) -> None:
    assert plan_splits(_rows(splits), evaluate_on, "data/x") == expected


@pytest.mark.parametrize(
    ("splits", "evaluate_on", "folders", "message"),
    [
        (
            {"train": AB},
            "auto",
            True,
            "no images to evaluate on: looked for test/ and val/ under data/x (the dataset "
            "has only train/); add a test/<class>/ folder of images",
        ),
        (
            {"train": AB, "val": AB},
            "test",
            True,
            "no images to evaluate on: looked for test/ under data/x (the dataset has only "
            "train/, val/); add a test/<class>/ folder of images",
        ),
        (
            {"train": AB},
            "auto",
            False,
            "no images to evaluate on: looked for test/ and val/ under data/x (the dataset "
            "has only train/); raise split.test_fraction",
        ),
        (
            {"test": AB},
            "auto",
            True,
            "no images to train on: no train/ images under data/x (found only test/)",
        ),
    ],
)
def test_a_split_that_cannot_be_used_is_one_user_error(splits, evaluate_on, folders, message):
    with pytest.raises(UserError) as error:
        plan_splits(_rows(splits, folders), evaluate_on, "data/x")
    assert str(error.value) == message


def test_missing_classes_lists_classes_without_images_in_the_split() -> None:
    rows = _rows({"train": ("a", "b", "c"), "test": ("b",)})
    assert missing_classes(rows, "test") == ["a", "c"]
    assert missing_classes(rows, "train") == []


def test_evaluate_on_is_validated_with_its_choices() -> None:
    with pytest.raises(ParamsError) as error:
        validate({**TEST_PARAMS, "evaluation": {"evaluate_on": "holdout"}})
    assert "evaluation.evaluate_on: got 'holdout'" in str(error.value)
    assert "auto, test, val" in str(error.value)
    assert validate(TEST_PARAMS).evaluation.evaluate_on == "auto"


def _blobs(n_per_class: int, seed: int, spread: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = np.eye(3, 8) * 3
    X = np.concatenate([c + spread * rng.normal(size=(n_per_class, 8)) for c in centres])
    return X.astype(np.float32), np.repeat(np.array(["a", "b", "c"]), n_per_class)


def test_grid_is_scored_on_val_as_one_fold_and_the_winner_fitted_on_train() -> None:
    X, y = _blobs(20, 0)
    X_val, y_val = _blobs(10, 1)
    params = LogRegParams(grid={"C": [1e-4, 1.0]})
    result = fit_head("logreg", params, X, y, val=(X_val, y_val))
    assert result.selected_on == "val"
    assert [row["std_accuracy"] for row in result.cv] == [0.0, 0.0]
    best = max(result.cv, key=lambda row: row["mean_accuracy"])
    assert result.params.C == best["params"]["C"] and result.params.grid is None
    assert result.model.score(X_val, y_val) == pytest.approx(best["mean_accuracy"])


def test_without_val_the_grid_uses_cv_on_train_and_nothing_else_is_selected() -> None:
    X, y = _blobs(20, 0)
    assert fit_head("logreg", LogRegParams(grid={"C": [1.0]}), X, y).selected_on == "train_cv"
    assert fit_head("logreg", LogRegParams(C=1.0), X, y).selected_on is None


def test_mlp_early_stops_on_val_and_keeps_its_best_epoch() -> None:
    X, y = _blobs(30, 0, spread=2.0)
    X_val, y_val = _blobs(15, 1, spread=2.0)
    params = MLPParams(hidden=[8], max_iter=200, seed=3)
    result = fit_head("mlp", params, X, y, val=(X_val, y_val))
    clf = result.model.named_steps["clf"]
    assert result.selected_on == "val"
    assert clf.n_iter_ < params.max_iter  # stopped once val stopped improving
    assert clf.get_params()["random_state"] == 3 and clf.get_params()["early_stopping"]
    again = fit_head("mlp", params, X, y, val=(X_val, y_val)).model
    np.testing.assert_array_equal(again.predict(X_val), result.model.predict(X_val))
