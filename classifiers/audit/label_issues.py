"""Likely label errors by confident learning (cleanlab) on out-of-fold probabilities.

The probabilities come from a standardised logistic regression cross-validated on the train
split: every image is scored by a model that never saw it, as confident learning requires.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from cleanlab.filter import find_label_issues
from cleanlab.rank import get_label_quality_scores
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from features.errors import UserError

__all__ = ["LabelIssues", "find_label_errors"]


@dataclass(frozen=True)
class LabelIssues:
    """Per image: flagged or not, quality in [0, 1] (low: likely mislabelled), and the
    class the out-of-fold model predicted."""

    flagged: np.ndarray  # bool (n,)
    quality: np.ndarray  # float64 (n,)
    predicted: np.ndarray  # str (n,)


def find_label_errors(
    X: np.ndarray, y: np.ndarray, C: float, folds: int = 5, seed: int = 0
) -> LabelIssues:
    """Score every row of (``X``, ``y``) from out-of-fold probabilities: ``folds`` folds,
    fewer when the smallest class has fewer images (each fold needs one of each)."""
    classes, labels = np.unique(y, return_inverse=True)
    smallest = int(np.bincount(labels).min()) if len(labels) else 0
    if len(classes) < 2 or smallest < 2:
        raise UserError(
            f"the label audit needs two classes with at least 2 train images each "
            f"(found {len(classes)} classes, the smallest with {smallest})"
        )
    folds = min(folds, smallest)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=1000))
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    probs = cross_val_predict(model, X, labels, cv=cv, method="predict_proba")
    flagged = find_label_issues(labels, probs, n_jobs=1)  # its process pool costs seconds
    quality = get_label_quality_scores(labels, probs)
    return LabelIssues(flagged, quality, classes[probs.argmax(axis=1)])
