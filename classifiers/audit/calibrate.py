"""One calibration run: sample photos, copy them, and measure each near-duplicate signal."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from classifiers.audit.calibration import (
    cosine_similarity,
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


def _max_hamming(figures: dict[str, Any]) -> int:
    best = figures["best_threshold"]
    return int(-best) if best is not None else 0


def calibrate(
    rows: Sequence[ManifestRow],
    data_root: Path,
    settings: AuditSettings,
    encode: Encode | None,
) -> dict[str, Any]:
    """Precision and recall of each signal on copies of real photos, and the perceptual
    radius to use (``settings.max_hamming``, or the calibrated one when that is null).
    ``encode`` gives codes of files with the audited feature set's backbone; None skips the
    codes signal."""
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
        target = settings.target_precision
        perceptual = signal_figures(
            "perceptual", perceptual_similarity(packed), found, 0.0, target
        ).as_dict()
        radius = (
            settings.max_hamming if settings.max_hamming is not None else _max_hamming(perceptual)
        )
        perceptual = signal_figures(
            "perceptual", perceptual_similarity(packed), found, -radius, target
        ).as_dict()
        signals = {"perceptual": {**perceptual, "max_hamming": radius}}
        if encode is not None:
            similarity = cosine_similarity(encode(found.paths))
            best = signal_figures("codes", similarity, found, 1.0, target)
            threshold = (
                settings.min_cosine if settings.min_cosine is not None else best.best_threshold
            )
            signals["codes"] = signal_figures(
                "codes", similarity, found, threshold if threshold is not None else 1.0, target
            ).as_dict()
    met = perceptual["recall"] >= GOAL_RECALL and perceptual["precision"] >= target
    return {
        "photos": len(photos),
        "copies_per_photo": settings.calibration_copies,
        "images": len(found.paths),
        "max_hamming": radius,
        "max_hamming_from": "params" if settings.max_hamming is not None else "calibration",
        "goal": {"recall": GOAL_RECALL, "precision": target, "met": met},
        "signals": signals,
        "seconds": round(time.perf_counter() - started, 3),
    }
