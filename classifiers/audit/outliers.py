"""Outliers: images far from everything else in code space.

The score is the mean cosine distance to the k nearest neighbours. An image is flagged when
its score's modified z-score (median and MAD, robust to the outliers themselves) exceeds
3.5, Iglewicz and Hoaglin's cut-off, so a clean dataset flags few and a dataset with a
folder of screenshots flags them, instead of always flagging a fixed fraction.
"""

from __future__ import annotations

import numpy as np

from classifiers.audit.neighbours import Neighbours

__all__ = ["MODIFIED_Z_CUTOFF", "flag_outliers", "outlier_scores"]

MODIFIED_Z_CUTOFF = 3.5
_MAD_TO_SIGMA = 0.6745


def outlier_scores(neighbours: Neighbours) -> np.ndarray:
    """Mean cosine distance to each row's neighbours (0 for a row with none)."""
    found = neighbours.indices >= 0
    distances = np.where(found, 1.0 - neighbours.similarities, 0.0)
    counts = np.maximum(found.sum(axis=1), 1)
    return (distances.sum(axis=1) / counts).astype(np.float64)


def flag_outliers(scores: np.ndarray, cutoff: float = MODIFIED_Z_CUTOFF) -> np.ndarray:
    """Which scores are outliers by the modified z-score; none when the scores do not vary."""
    if not len(scores):
        return np.zeros(0, dtype=bool)
    median = np.median(scores)
    mad = np.median(np.abs(scores - median))
    if mad == 0:
        return np.zeros(len(scores), dtype=bool)
    return _MAD_TO_SIGMA * (scores - median) / mad > cutoff
