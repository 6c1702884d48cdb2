"""The statistics behind the comparison, checked against small cases worked by hand."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
from sklearn.dummy import DummyClassifier
from sklearn.metrics import accuracy_score, f1_score
from sklearn.pipeline import make_pipeline

import classifiers.stats as stats
from classifiers.evaluate import evaluate, per_class_scores
from classifiers.stats import bootstrap_intervals, discordant_counts, json_safe, mcnemar_exact


def _noisy(n: int, k: int, accuracy: float, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    actual = rng.integers(0, k, n)
    predicted = np.where(rng.random(n) < accuracy, actual, rng.integers(0, k, n))
    return np.array([f"c{i}" for i in actual]), np.array([f"c{i}" for i in predicted])


def test_mcnemar_exact_matches_the_binomial_worked_by_hand() -> None:
    # 7 discordant pairs split 1/6: P(X <= 1) + P(X >= 6) = (1 + 7 + 7 + 1) / 2**7
    assert mcnemar_exact(1, 6) == pytest.approx(0.125, abs=1e-12)
    assert mcnemar_exact(6, 1) == pytest.approx(0.125, abs=1e-12)
    assert mcnemar_exact(0, 5) == pytest.approx(2 / 32, abs=1e-12)
    assert mcnemar_exact(3, 3) == 1.0
    assert mcnemar_exact(0, 0) == 1.0  # identical correctness: no evidence of a difference


def test_discordant_counts_pair_correctness_image_by_image() -> None:
    actual = ["a", "a", "b", "b", "c"]
    first = ["a", "b", "b", "a", "c"]  # right on 0, 2, 4
    second = ["a", "a", "a", "a", "a"]  # right on 0, 1
    assert discordant_counts(actual, first, second) == (2, 1)


def test_bootstrap_interval_contains_the_estimate_and_is_reproducible() -> None:
    actual, predicted = _noisy(300, 5, 0.8)
    intervals = bootstrap_intervals(actual, predicted)
    point = {
        "accuracy": accuracy_score(actual, predicted),
        "macro_f1": f1_score(actual, predicted, average="macro"),
    }
    for name, interval in intervals.items():
        assert interval["low"] < point[name] < interval["high"], name
        assert interval["high"] - interval["low"] < 0.2
    assert bootstrap_intervals(actual, predicted) == intervals
    assert bootstrap_intervals(actual, predicted, seed=7) != intervals


def test_bootstrap_interval_is_degenerate_for_a_perfect_classifier() -> None:
    labels = np.array(["a", "b", "c"] * 10)
    intervals = bootstrap_intervals(labels, labels)
    assert intervals == {name: {"low": 1.0, "high": 1.0} for name in ("accuracy", "macro_f1")}


def test_bootstrap_macro_f1_agrees_with_scikit_learn_on_each_resample() -> None:
    """The bincount counts reproduce f1_score, including a class only ever predicted."""
    actual = np.array(["a", "a", "b", "b", "b", "c"])
    predicted = np.array(["a", "b", "b", "b", "d", "c"])
    codes_true, codes_pred, k = stats._encode(actual, predicted)
    index = np.random.default_rng(3).integers(0, len(actual), (50, len(actual)))
    accuracy, macro_f1 = stats._resampled_scores(codes_true, codes_pred, k, index)
    for row, acc, f1 in zip(index, accuracy, macro_f1, strict=True):
        assert acc == pytest.approx(accuracy_score(actual[row], predicted[row]))
        assert f1 == pytest.approx(f1_score(actual[row], predicted[row], average="macro"))


def test_bootstrap_is_fast_for_a_thousand_images() -> None:
    actual, predicted = _noisy(1000, 5, 0.85)
    started = time.perf_counter()
    bootstrap_intervals(actual, predicted, resamples=1000)
    assert time.perf_counter() - started < 0.5


def test_bootstrap_in_blocks_draws_the_same_resamples(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bounding memory on a large split must not change the intervals."""
    actual, predicted = _noisy(100, 3, 0.7)
    whole = bootstrap_intervals(actual, predicted, resamples=50)
    monkeypatch.setattr(stats, "_BLOCK_CELLS", 100 * 7)  # 7 resamples per block, 8 blocks
    assert bootstrap_intervals(actual, predicted, resamples=50) == whole


def test_per_class_is_n_a_where_undefined_never_nan() -> None:
    actual = np.array(["a", "a", "b", "b"])
    predicted = np.array(["a", "b", "b", "c"])
    scores = per_class_scores(actual, predicted, ["a", "b", "c", "d"])
    assert scores["a"] == {
        "precision": 1.0,
        "recall": 0.5,
        "f1": pytest.approx(2 / 3),
        "support": 2,
    }
    # c: predicted once, never present: precision 0 is measured, recall is undefined
    assert scores["c"] == {"precision": 0.0, "recall": None, "f1": 0.0, "support": 0}
    # d: neither present nor predicted: nothing is defined
    assert scores["d"] == {"precision": None, "recall": None, "f1": None, "support": 0}
    json.dumps(scores, allow_nan=False)


def test_evaluate_writes_intervals_and_only_finite_numbers() -> None:
    X = np.zeros((12, 2))
    y = np.array(["a"] * 8 + ["b"] * 4)
    model = make_pipeline(DummyClassifier(strategy="most_frequent")).fit(X, y)
    metrics, predicted = evaluate(model, X, y, ["a", "b", "c"])
    assert list(predicted) == ["a"] * 12
    assert metrics["accuracy_ci"]["low"] <= metrics["accuracy"] <= metrics["accuracy_ci"]["high"]
    assert metrics["macro_f1"] == pytest.approx(f1_score(y, predicted, average="macro"))
    assert metrics["per_class"]["c"]["recall"] is None
    assert metrics["bootstrap"]["resamples"] >= 1000
    json.dumps(metrics, allow_nan=False)


def test_json_safe_replaces_non_finite_numbers_anywhere() -> None:
    cleaned = json_safe({"a": math.nan, "b": [np.float64(math.inf), 1.5], "c": {"d": 2}})
    assert cleaned == {"a": None, "b": [None, 1.5], "c": {"d": 2}}
