"""Calibrating the near-duplicate detector on real photos and generated copies of them.

Each sampled photo gets ``copies`` near-copies (:func:`features.data.near_copies.near_copy`).
Every pair of images from the same photo is a positive; every pair from two different photos
is a negative, and pairs from two photos of the same class are counted apart as the hard
negatives. Each signal (the perceptual signature's Hamming distance; the codes' cosine
similarity) gets its figures at the configured threshold and the threshold that gives the
most recall at the target precision.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from features.data.near_copies import near_copy
from features.data.perceptual import hamming

__all__ = [
    "FUSION_WEIGHTS",
    "CalibrationSet",
    "SignalFigures",
    "cosine_similarity",
    "fused_figures",
    "make_calibration_set",
    "perceptual_similarity",
    "signal_figures",
]


@dataclass(frozen=True)
class CalibrationSet:
    """Photos and their copies on disk; ``sources[i]`` is the photo image ``i`` comes from."""

    paths: list[Path]
    sources: np.ndarray  # int (n,)
    labels: list[str]


def make_calibration_set(
    photos: Sequence[Path],
    labels: Sequence[str],
    dest: Path,
    copies: int,
    seed: int,
) -> CalibrationSet:
    """Each photo as it is, then ``copies`` near-copies of it, written under ``dest``."""
    rng = random.Random(seed)
    dest.mkdir(parents=True, exist_ok=True)
    paths, sources, kept_labels = [], [], []
    for number, (photo, label) in enumerate(zip(photos, labels, strict=True)):
        with Image.open(photo) as image:
            image.load()
            made = [near_copy(image, rng) for _ in range(copies)]
        paths.append(photo)
        for index, data in enumerate(made):
            copy = dest / f"{number:05d}_copy{index}.jpg"
            copy.write_bytes(data)
            paths.append(copy)
        sources.extend([number] * (copies + 1))
        kept_labels.extend([label] * (copies + 1))
    return CalibrationSet(paths, np.asarray(sources), kept_labels)


@dataclass(frozen=True)
class SignalFigures:
    """One signal's precision and recall at the configured threshold and at its best one."""

    signal: str
    threshold: float
    precision: float
    recall: float
    best_threshold: float | None  # most recall at target_precision; None if unreachable
    best_recall: float
    target_precision: float
    positives: int
    negatives: int
    hard_negatives_passed: int  # same-class distinct-photo pairs the threshold lets through

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


# Bits of Hamming distance worth 0.001 .. 0.005 of cosine: the grid the fused signal's
# weight is chosen from (on flower photos with random-weight codes, 0.0015 did best).
FUSION_WEIGHTS = (0.0005, 0.001, 0.0015, 0.002, 0.003, 0.005)


def _pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.triu_indices(n, 1)


def _precision_recall(similar: np.ndarray, positive: np.ndarray) -> tuple[float, float]:
    hits = int((similar & positive).sum())
    return hits / max(int(similar.sum()), 1), hits / max(int(positive.sum()), 1)


def signal_figures(
    signal: str,
    similarity: np.ndarray,
    calibration: CalibrationSet,
    threshold: float,
    target_precision: float,
) -> SignalFigures:
    """Figures for one signal given the pairwise ``similarity`` (higher: more alike) of the
    upper-triangle pairs of ``calibration`` in :func:`numpy.triu_indices` order."""
    first, second = _pairs(len(calibration.paths))
    positive = calibration.sources[first] == calibration.sources[second]
    labels = np.asarray(calibration.labels)
    hard = ~positive & (labels[first] == labels[second])
    precision, recall = _precision_recall(similarity >= threshold, positive)
    order = np.argsort(-similarity, kind="stable")
    hits = np.cumsum(positive[order])
    precisions = hits / np.arange(1, len(order) + 1)
    last = np.r_[similarity[order][1:] != similarity[order][:-1], True]  # ties decided together
    reachable = np.flatnonzero(last & (precisions >= target_precision))
    best = int(reachable[-1]) if len(reachable) else None
    return SignalFigures(
        signal=signal,
        threshold=float(threshold),
        precision=precision,
        recall=recall,
        best_threshold=float(similarity[order][best]) if best is not None else None,
        best_recall=float(hits[best] / max(int(positive.sum()), 1)) if best is not None else 0.0,
        target_precision=target_precision,
        positives=int(positive.sum()),
        negatives=int((~positive).sum()),
        hard_negatives_passed=int((hard & (similarity >= threshold)).sum()),
    )


def perceptual_similarity(signatures: np.ndarray) -> np.ndarray:
    """Minus the Hamming distance of every upper-triangle pair: higher is more alike."""
    first, second = _pairs(len(signatures))
    return -hamming(signatures[first], signatures[second]).astype(np.float64)


def cosine_similarity(codes: np.ndarray) -> np.ndarray:
    """Cosine similarity of every upper-triangle pair of a (bounded) calibration set."""
    unit = codes.astype(np.float64)
    unit /= np.maximum(np.linalg.norm(unit, axis=1, keepdims=True), 1e-12)
    first, second = _pairs(len(codes))
    return np.einsum("ij,ij->i", unit[first], unit[second])


def fused_figures(
    cosine: np.ndarray, distance: np.ndarray, calibration: CalibrationSet, target_precision: float
) -> dict[str, object]:
    """The fused signal ``cosine - weight * hamming`` at the weight in
    :data:`FUSION_WEIGHTS` and the threshold that give the most recall at the target: the
    codes see through crops that move a perceptual hash, the hash sees what random-weight
    codes blur. ``max_hamming`` is the largest distance a pair above threshold can have."""
    best: tuple[float, SignalFigures] | None = None
    for weight in FUSION_WEIGHTS:
        score = cosine - weight * distance
        figures = signal_figures("fused", score, calibration, 1.0, target_precision)
        if figures.best_threshold is not None and (
            best is None or figures.best_recall > best[1].best_recall
        ):
            best = (weight, figures)
    if best is None:
        return {"signal": "fused", "weight": None, "threshold": None, "recall": 0.0}
    weight, figures = best
    threshold = float(figures.best_threshold)
    chosen = signal_figures(
        "fused", cosine - weight * distance, calibration, threshold, target_precision
    )
    radius = min(int((1.0 - threshold) / weight), 128)
    return {**chosen.as_dict(), "weight": weight, "max_hamming": radius}
