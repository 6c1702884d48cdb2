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


def _rule(signals: dict[str, dict[str, Any]], settings: AuditSettings) -> dict[str, Any]:
    """The decision the audit applies: the fused signal when asked for and reachable, else
    the perceptual radius alone."""
    fused = signals.get("fused")
    if settings.signal == "fused" and fused and fused.get("threshold") is not None:
        keys = ("weight", "threshold", "max_hamming", "precision", "recall")
        return {"signal": "fused", **{key: fused[key] for key in keys}}
    perceptual = signals["perceptual"]
    keys = ("max_hamming", "precision", "recall")
    return {"signal": "perceptual", **{key: perceptual[key] for key in keys}}


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
        similarity = perceptual_similarity(packed)
        best = signal_figures("perceptual", similarity, found, 0.0, target).best_threshold
        radius = settings.max_hamming
        if radius is None:
            radius = int(-best) if best is not None else 0
        perceptual = signal_figures("perceptual", similarity, found, -radius, target).as_dict()
        signals = {"perceptual": {**perceptual, "max_hamming": radius}}
        if encode is not None:
            cosine = cosine_similarity(encode(found.paths))
            best = signal_figures("codes", cosine, found, 1.0, target).best_threshold
            signals["codes"] = signal_figures(
                "codes", cosine, found, best if best is not None else 1.0, target
            ).as_dict()
            signals["fused"] = fused_figures(cosine, -similarity, found, target)
    rule = _rule(signals, settings)
    met = rule["recall"] >= GOAL_RECALL and rule["precision"] >= target
    return {
        "photos": len(photos),
        "copies_per_photo": settings.calibration_copies,
        "images": len(found.paths),
        "max_hamming": radius,
        "max_hamming_from": "params" if settings.max_hamming is not None else "calibration",
        "rule": rule,
        "goal": {"recall": GOAL_RECALL, "precision": target, "met": met},
        "signals": signals,
        "seconds": round(time.perf_counter() - started, 3),
    }
