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

__all__ = ["evaluate", "predict_ms_per_1000"]


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


def evaluate(
    model: Pipeline, X: np.ndarray, y: np.ndarray, classes: list[str]
) -> tuple[dict[str, Any], np.ndarray]:
    """Metrics on (``X``, ``y``) and the predictions they were computed from."""
    predicted = model.predict(X)
    precision, recall, f1, support = precision_recall_fscore_support(
        y, predicted, labels=classes, zero_division=0
    )
    metrics = {
        "accuracy": float(accuracy_score(y, predicted)),
        "balanced_accuracy": float(balanced_accuracy_score(y, predicted)),
        "macro_f1": float(f1_score(y, predicted, labels=classes, average="macro", zero_division=0)),
        "per_class": {
            label: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for label, p, r, f, s in zip(classes, precision, recall, f1, support, strict=True)
        },
        "confusion_matrix": {
            "labels": classes,
            "matrix": confusion_matrix(y, predicted, labels=classes).tolist(),
        },
        "predict_ms_per_1000": predict_ms_per_1000(model, X),
        "n": len(y),
    }
    return metrics, predicted
