"""Score a fitted head on held-out codes: the numbers the comparison is built on."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)
from sklearn.pipeline import Pipeline

from classifiers.stats import (
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    CONFIDENCE,
    bootstrap_intervals,
    expected_calibration_error,
    json_safe,
)

__all__ = ["evaluate", "per_class_scores", "predict_ms_per_1000", "score"]


def predict_ms_per_1000(model: Pipeline, X: np.ndarray, repeats: int = 3) -> float:
    """Best-of-``repeats`` prediction latency, scaled to 1,000 images."""
    if len(X) == 0:
        return 0.0
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        model.predict(X)
        best = min(best, time.perf_counter() - started)
    return 1000.0 * best * 1000.0 / len(X)


def per_class_scores(y: np.ndarray, predicted: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """Precision, recall, F1 and support per class; None (n/a) where a score is undefined.

    A class absent from the split has no recall, and one never predicted no precision:
    they are None rather than a zero that would read as a measured failure.
    """
    scores = precision_recall_fscore_support(y, predicted, labels=classes, zero_division=np.nan)
    return {
        label: json_safe({"precision": p, "recall": r, "f1": f, "support": int(s)})
        for label, p, r, f, s in zip(classes, *scores, strict=True)
    }


def evaluate(
    model: Pipeline, X: np.ndarray, y: np.ndarray, classes: list[str]
) -> tuple[dict[str, Any], np.ndarray]:
    """Metrics on (``X``, ``y``) (:func:`score`, the expected calibration error where the
    head gives probabilities, the latency, the count) and the predictions they came from."""
    predicted = model.predict(X)
    metrics = score(y, predicted, classes)
    metrics["ece"] = (
        expected_calibration_error(y, model.predict_proba(X), model.classes_)
        if hasattr(model, "predict_proba") and len(y)
        else None
    )
    metrics["predict_ms_per_1000"] = predict_ms_per_1000(model, X)
    metrics["n"] = len(y)
    return metrics, predicted


def score(y: np.ndarray, predicted: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """The figures that depend on the labels alone, for any model: a scikit-learn head,
    or a fine-tuned network that predicts from images.

    Macro-F1 averages over the classes present in ``y`` or predicted (as the bootstrap
    does), so a class the split lacks does not count as a zero.
    """
    intervals = bootstrap_intervals(y, predicted)
    return {
        "accuracy": float(accuracy_score(y, predicted)),
        "accuracy_ci": intervals["accuracy"],
        "balanced_accuracy": float(balanced_accuracy_score(y, predicted)),
        "macro_f1": float(f1_score(y, predicted, average="macro")),
        "macro_f1_ci": intervals["macro_f1"],
        "bootstrap": {
            "resamples": BOOTSTRAP_RESAMPLES,
            "seed": BOOTSTRAP_SEED,
            "confidence": CONFIDENCE,
        },
        "per_class": per_class_scores(y, predicted, classes),
        "confusion_matrix": {
            "labels": classes,
            "matrix": confusion_matrix(y, predicted, labels=classes).tolist(),
        },
    }
