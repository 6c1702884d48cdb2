"""One calibration run: sample photos, copy them, and measure each near-duplicate signal."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from classifiers.audit.calibration import (
    CalibrationSet,
    cosine_similarity,
    fused_figures,
    make_calibration_set,
    perceptual_similarity,
    signal_figures,
)
from classifiers.audit.settings import AuditSettings
from features.data.manifest import ManifestRow, content_draw
from features.data.perceptual import signatures
from features.errors import UserError

__all__ = ["GOAL_RECALL", "calibrate", "calibration_photos"]

GOAL_RECALL = 0.95
_SAMPLE_SALT = "audit-calibration"

Encode = Callable[[Sequence[Path]], np.ndarray]


def calibration_photos(rows: Sequence[ManifestRow], count: int) -> list[ManifestRow]:
    """``count`` train images drawn by content hash: the same sample on every rerun, and
    no image moves in or out when others are added unless it is displaced."""
    train = [row for row in rows if row.split == "train"]
    return sorted(train, key=lambda row: content_draw(row.sha256, _SAMPLE_SALT))[:count]


def _rule(
    perceptual: np.ndarray,
    cosine: np.ndarray | None,
    found: CalibrationSet,
    settings: AuditSettings,
) -> dict[str, Any]:
    """The decision the audit applies, at ``settings.rule_precision`` on the calibration
    pairs. That is stricter than the goal's 99 %: a dataset of n images has n²/2 pairs and
    few copies among them, so a false-positive rate the calibration set can barely see
    (1 in 10^4 pairs) would join hundreds of distinct photos into chains there."""
    target = settings.rule_precision
    if settings.signal == "fused" and cosine is not None:
        fused = fused_figures(cosine, -perceptual, found, target)
        if fused.get("threshold") is not None:
            keys = ("weight", "threshold", "max_hamming", "precision", "recall")
            return {"signal": "fused", "at_precision": target, **{k: fused[k] for k in keys}}
    radius = settings.max_hamming
    if radius is None:
        best = signal_figures("perceptual", perceptual, found, 0.0, target).best_threshold
        radius = int(-best) if best is not None else 0
    figures = signal_figures("perceptual", perceptual, found, -radius, target)
    return {
        "signal": "perceptual",
        "at_precision": target,
        "max_hamming": radius,
        "fixed": settings.max_hamming is not None,
        "precision": figures.precision,
        "recall": figures.recall,
    }


def _radius_curve(perceptual: np.ndarray, found: CalibrationSet) -> dict[str, list[float]]:
    """Precision and recall of the perceptual signal at every radius 0..128, so the audit
    can say what a radius narrowed for the dataset's size still catches."""
    figures = [signal_figures("perceptual", perceptual, found, -r, 1.0) for r in range(129)]
    return {
        "precision": [round(f.precision, 4) for f in figures],
        "recall": [round(f.recall, 4) for f in figures],
    }


def _goal_figures(
    perceptual: np.ndarray, cosine: np.ndarray | None, found: CalibrationSet, target: float
) -> dict[str, dict[str, Any]]:
    """Each signal at its best threshold for the goal's precision: the issue's yardstick."""
    signals = {"perceptual": perceptual}
    if cosine is not None:
        signals["codes"] = cosine
    figures: dict[str, dict[str, Any]] = {}
    for name, similarity in signals.items():
        best = signal_figures(name, similarity, found, 1.0, target).best_threshold
        figures[name] = signal_figures(
            name, similarity, found, best if best is not None else np.inf, target
        ).as_dict()
    if cosine is not None:
        figures["fused"] = fused_figures(cosine, -perceptual, found, target)
    return figures


def calibrate(
    rows: Sequence[ManifestRow],
    data_root: Path,
    settings: AuditSettings,
    encode: Encode | None,
) -> dict[str, Any]:
    """Precision and recall of each signal on copies of real photos (at the goal's
    precision), and the rule the audit applies (at ``settings.rule_precision``).
    ``encode`` gives codes of files with the audited feature set's backbone; None skips the
    codes and the fused signal."""
    started = time.perf_counter()
    photos = calibration_photos(rows, settings.calibration_photos)
    if len(photos) < 2:
        raise UserError("audit calibration needs at least 2 train images")
    with tempfile.TemporaryDirectory(prefix="calibration-") as scratch:
        found = make_calibration_set(
            [data_root / row.path for row in photos],
            [row.label for row in photos],
            Path(scratch),
            settings.calibration_copies,
            settings.seed,
        )
        packed, decoded = signatures(found.paths)
        if not decoded.all():
            raise UserError(f"audit calibration: {int((~decoded).sum())} images did not decode")
        cosine = cosine_similarity(encode(found.paths)) if encode is not None else None
    perceptual = perceptual_similarity(packed)
    target = settings.target_precision
    signals = _goal_figures(perceptual, cosine, found, target)
    best = max(signals, key=lambda name: signals[name]["best_recall"])
    return {
        "photos": len(photos),
        "copies_per_photo": settings.calibration_copies,
        "images": len(found.paths),
        "rule": _rule(perceptual, cosine, found, settings),
        "goal": {
            "recall": GOAL_RECALL,
            "precision": target,
            "best_signal": best,
            "met": signals[best]["best_recall"] >= GOAL_RECALL,
        },
        "signals": signals,
        "perceptual_by_radius": _radius_curve(perceptual, found),
        "seconds": round(time.perf_counter() - started, 3),
    }
