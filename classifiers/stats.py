"""How sure a score is: bootstrap intervals per head, exact McNemar tests between heads.

A test split of a few hundred images leaves accuracy uncertain by several points, so two
heads a few points apart may be indistinguishable. These functions put a number on that.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.stats import binomtest

__all__ = [
    "BOOTSTRAP_RESAMPLES",
    "BOOTSTRAP_SEED",
    "CONFIDENCE",
    "ECE_BINS",
    "bootstrap_intervals",
    "discordant_counts",
    "expected_calibration_error",
    "json_safe",
    "mcnemar_exact",
]

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0  # fixed: rerunning a stage reproduces its intervals exactly
CONFIDENCE = 0.95
_BLOCK_CELLS = 1 << 22  # index-matrix cells drawn at once: bounds memory for large splits


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None: JSON and reports say n/a."""
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    return value


def _encode(actual: np.ndarray, predicted: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Both label arrays as codes 0..k-1 over the classes that occur in either."""
    labels, codes = np.unique(np.concatenate([actual, predicted]), return_inverse=True)
    return codes[: len(actual)], codes[len(actual) :], len(labels)


def _macro_f1(tp: np.ndarray, n_true: np.ndarray, n_pred: np.ndarray) -> np.ndarray:
    """Macro-F1 of each row of per-class counts, over the classes that occur in the row.

    F1 = 2tp / (true + predicted); a class neither present nor predicted has no F1 and is
    left out of the mean, as scikit-learn does without ``labels``.
    """
    occurs = (n_true + n_pred) > 0
    f1 = np.divide(2 * tp, n_true + n_pred, out=np.zeros(tp.shape), where=occurs)
    return f1.sum(axis=-1) / occurs.sum(axis=-1)


def _resampled_scores(
    actual: np.ndarray, predicted: np.ndarray, k: int, index: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy and macro-F1 of each row of ``index`` (one resample of the images per row).

    Per-resample confusion counts come from one ``bincount`` each: resample ``r``'s class
    ``c`` is bin ``r * k + c``.
    """
    true, pred = actual[index], predicted[index]
    hits = true == pred
    offset = np.arange(len(index))[:, None] * k
    size = len(index) * k
    tp = np.bincount((true + offset)[hits], minlength=size).reshape(-1, k)
    n_true = np.bincount((true + offset).ravel(), minlength=size).reshape(-1, k)
    n_pred = np.bincount((pred + offset).ravel(), minlength=size).reshape(-1, k)
    return hits.mean(axis=1), _macro_f1(tp, n_true, n_pred)


def bootstrap_intervals(
    actual: np.ndarray,
    predicted: np.ndarray,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    confidence: float = CONFIDENCE,
) -> dict[str, dict[str, float]]:
    """Percentile bootstrap intervals for accuracy and macro-F1, resampling the images.

    Percentile rather than BCa: it stays defined (and degenerate) for a perfect head.
    """
    actual, predicted, k = _encode(np.asarray(actual), np.asarray(predicted))
    n = len(actual)
    if n == 0:
        raise ValueError("a bootstrap interval needs at least one image")
    rng = np.random.default_rng(seed)
    block = max(1, _BLOCK_CELLS // n)
    scores = [
        _resampled_scores(actual, predicted, k, rng.integers(0, n, (min(block, resamples - s), n)))
        for s in range(0, resamples, block)
    ]
    tail = 100 * (1 - confidence) / 2
    intervals = {}
    for name, values in zip(("accuracy", "macro_f1"), zip(*scores, strict=True), strict=True):
        low, high = np.percentile(np.concatenate(values), [tail, 100 - tail])
        intervals[name] = {"low": float(low), "high": float(high)}
    return intervals


def discordant_counts(actual: np.ndarray, first: np.ndarray, second: np.ndarray) -> tuple[int, int]:
    """(images only ``first`` got right, images only ``second`` got right): McNemar's b, c."""
    first_right = np.asarray(first) == np.asarray(actual)
    second_right = np.asarray(second) == np.asarray(actual)
    return int(np.sum(first_right & ~second_right)), int(np.sum(second_right & ~first_right))


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: are the discordant pairs a fair coin?

    Only images exactly one head got right carry evidence; with none, nothing differs.
    """
    if b + c == 0:
        return 1.0
    return float(binomtest(b, b + c, 0.5).pvalue)


ECE_BINS = 15  # equal-width confidence bins, as in Guo et al. 2017


def expected_calibration_error(
    actual: np.ndarray, probabilities: np.ndarray, classes: np.ndarray
) -> float:
    """How far the top class's probability is from how often it is right: the bins'
    |accuracy - mean confidence|, weighted by their share of images. 0 is calibrated.

    ``probabilities`` is an array of shape (n_images, n_classes), columns in ``classes``'
    order. A head can be accurate and overconfident; accuracy alone hides it.
    """
    confidence = probabilities.max(axis=1)
    correct = np.asarray(classes)[probabilities.argmax(axis=1)] == np.asarray(actual)
    bins = np.minimum((confidence * ECE_BINS).astype(int), ECE_BINS - 1)
    gaps = [
        abs(correct[bins == b].mean() - confidence[bins == b].mean()) * np.mean(bins == b)
        for b in np.unique(bins)
    ]
    return float(np.sum(gaps))
