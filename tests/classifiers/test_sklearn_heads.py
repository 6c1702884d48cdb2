"""``kind: sklearn`` heads: any scikit-learn classifier by dotted path, checked at params load.

Fitting goes through the real ``train`` stage on the tiny store test_train_stage.py builds;
params errors go through :func:`pipeline.params.validate`, one ``error:`` line each.
"""

from __future__ import annotations

import copy
import csv
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from classifiers.data import load_split
from classifiers.persist import load_head
from features.data.manifest import read_manifest
from features.store import FeatureStore
from pipeline import train
from pipeline.params import ParamsError, validate
from tests.conftest import SMALL_STORE, TEST_PARAMS
from tests.pipeline import test_train_stage as stage

store_root = stage.store_root  # the stage tests' tiny store, as a fixture of this module

KNN = "sklearn.neighbors.KNeighborsClassifier"
RIDGE = "sklearn.linear_model.RidgeClassifier"
LDA = "sklearn.discriminant_analysis.LinearDiscriminantAnalysis"


def _head(estimator: str, **options: Any) -> dict[str, Any]:
    return {"kind": "sklearn", "estimator": estimator, **options}


def _train(root: Path, tmp_path: Path, name: str, head: dict[str, Any]) -> tuple[dict, Path]:
    """Run ``train@<name>`` as dvc.yaml does; the metrics and the saved model's path."""
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(stage._params(root, {name: head})))
    model, metrics = tmp_path / f"{name}.joblib", tmp_path / f"{name}.metrics.json"
    predictions = tmp_path / f"{name}.predictions.csv"
    argv = [name, "--manifest", str(root / "manifest.csv"), "--store", str(root / SMALL_STORE)]
    argv += ["--model", str(model), "--metrics", str(metrics)]
    argv += ["--predictions", str(predictions), "--params", str(params)]
    train.main(argv)
    return json.loads(metrics.read_text()), model


@pytest.mark.parametrize(
    ("estimator", "params", "preprocess"),
    [
        (KNN, {"n_neighbors": 3, "metric": "cosine"}, "none"),
        (RIDGE, {"alpha": 10.0}, "standardize"),
        (LDA, {"solver": "lsqr", "shrinkage": "auto"}, "standardize"),
    ],
)
def test_an_sklearn_head_trains_through_the_stage_and_reloads(
    estimator: str, params: dict, preprocess: str, store_root: Path, tmp_path: Path
) -> None:
    head = _head(estimator, params=params, preprocess=preprocess)
    metrics, model = _train(store_root, tmp_path, "extra", head)

    assert metrics["kind"] == "sklearn" and 0.0 <= metrics["accuracy"] <= 1.0
    assert metrics["params"]["estimator"] == estimator
    assert metrics["params"]["params"].items() >= params.items()
    rows = read_manifest(store_root / "manifest.csv")
    with FeatureStore(store_root / SMALL_STORE) as store:
        test = load_split(rows, "test", store)
        loaded, sidecar = load_head(model, expected=store.fingerprint)
    clf = loaded.named_steps["clf"]
    assert f"{type(clf).__module__.split('._')[0]}.{type(clf).__name__}" == estimator
    assert clf.get_params().items() >= params.items()
    assert sidecar.kind == "sklearn"
    with (tmp_path / "extra.predictions.csv").open(newline="") as stream:
        written = [row["predicted"] for row in csv.DictReader(stream)]
    assert written == list(loaded.predict(test.X))


def test_a_grid_over_an_estimator_param_is_searched(store_root: Path, tmp_path: Path) -> None:
    head = _head(KNN, params={"metric": "cosine"}, grid={"n_neighbors": [1, 3]}, cv_folds=2)
    metrics, model = _train(store_root, tmp_path, "knn", head)

    assert [row["params"] for row in metrics["cv"]] == [{"n_neighbors": 1}, {"n_neighbors": 3}]
    assert metrics["selected_on"] == "train_cv"
    best = max(metrics["cv"], key=lambda row: row["mean_accuracy"])["params"]["n_neighbors"]
    chosen = metrics["params"]["params"]
    assert chosen == {"metric": "cosine", "n_neighbors": best}
    loaded, _ = load_head(model)
    assert loaded.named_steps["clf"].get_params()["n_neighbors"] == best


def _problem(head: dict[str, Any]) -> str:
    """The one-line error params load gives for a single bad head."""
    raw = copy.deepcopy(TEST_PARAMS)
    raw["heads"] = {"extra": head}
    with pytest.raises(ParamsError) as error:
        validate(raw, "params.yaml")
    message = str(error.value)
    assert "\n" not in message, message
    return message


def test_an_unknown_param_lists_the_estimators_own_names() -> None:
    message = _problem(_head(KNN, params={"n_neighbours": 3}))

    assert message.startswith("params.yaml: heads.extra.params.n_neighbours: unknown parameter;")
    assert "allowed: algorithm, leaf_size, metric, metric_params, n_jobs, n_neighbors" in message


@pytest.mark.parametrize("path", ["os.system", "this.s", "sklearn", "sklearn..neighbors"])
def test_a_path_outside_sklearn_is_refused_without_importing_it(path: str) -> None:
    message = _problem(_head(path))

    assert message.startswith(f"params.yaml: heads.extra.estimator: got {path!r}; allowed:")
    assert "this" not in sys.modules  # importing it would print the Zen of Python


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("sklearn.linear_model.Ridge", "not a classifier"),
        ("sklearn.preprocessing.StandardScaler", "not a classifier"),
        ("sklearn.neighbors.NoSuchClassifier", "no such class"),
        ("sklearn.ensemble.VotingClassifier", "needs constructor arguments"),
    ],
)
def test_an_sklearn_path_that_is_no_usable_classifier_is_refused(path: str, reason: str) -> None:
    message = _problem(_head(path))

    assert message.startswith(f"params.yaml: heads.extra.estimator: got {path!r}: {reason}")


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (
            _head(KNN, params={"n_neighbors": 0}),
            "heads.extra.params: The 'n_neighbors' parameter of KNeighborsClassifier must be",
        ),
        (
            _head(RIDGE, params={"alpha": float("nan")}),
            "heads.extra.params.alpha: got nan; allowed: finite numbers",
        ),
        (
            _head(RIDGE, params={"class_weight": {"a": float("inf")}}),
            "heads.extra.params.class_weight: got {'a': inf}; allowed: finite numbers",
        ),
        (
            _head(KNN, grid={"n_neighbors": [3, -1]}),
            "heads.extra.grid.n_neighbors: The 'n_neighbors' parameter of",
        ),
        (
            _head(KNN, grid={"C": [1.0]}),
            f"heads.extra.grid.C: not a {KNN} option; allowed: algorithm,",
        ),
    ],
)
def test_a_bad_value_is_refused_at_params_load(head: dict[str, Any], expected: str) -> None:
    assert _problem(head).startswith(f"params.yaml: {expected}")


def test_a_missing_estimator_is_one_problem() -> None:
    message = _problem({"kind": "sklearn", "grid": {"n_neighbors": [1]}})

    assert message == "params.yaml: heads.extra.estimator: missing; expected a string"
