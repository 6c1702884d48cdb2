"""Calibrating the near-duplicate detector: the figures' arithmetic on a hand-made set, and
the goal (recall >= 95 % at precision >= 99 %) on copies of real flower photos."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pytest

from classifiers.audit.calibrate import calibrate
from classifiers.audit.calibration import CalibrationSet, signal_figures
from classifiers.audit.settings import AuditSettings
from features.compute.config import ExtractConfig
from features.compute.encode import encode_paths
from features.data.images import ImageLimits
from features.data.manifest import ManifestRow
from pipeline.schema import parse


def test_figures_count_pairs_of_the_same_photo_as_positives():
    found = CalibrationSet([Path(f"{i}") for i in range(4)], np.array([0, 0, 1, 1]), list("aabb"))
    # pairs in triu order: (0,1)+ (0,2) (0,3) (1,2) (1,3) (2,3)+
    similarity = np.array([0.9, 0.1, 0.2, 0.95, 0.3, 0.8])
    figures = signal_figures("test", similarity, found, 0.5, target_precision=0.99)
    assert (figures.positives, figures.negatives) == (2, 4)
    assert figures.precision == pytest.approx(2 / 3) and figures.recall == 1.0
    assert figures.best_threshold is None  # the most alike pair is two photos: unreachable
    separated = np.array([0.9, 0.1, 0.2, 0.5, 0.3, 0.8])
    figures = signal_figures("test", separated, found, 0.5, target_precision=0.99)
    assert figures.best_threshold == 0.8 and figures.best_recall == 1.0
    assert figures.hard_negatives_passed == 0  # (1,2) is two classes: not a hard negative


def test_calibration_on_copies_of_real_photos_meets_the_goal(flowers: Path):
    """Random-weight VGG16 codes (the configured backbone here) fall short alone; fused with
    the perceptual hash they reach recall >= 95 % at precision >= 99 %. The rule the audit
    applies lets no distinct pair of the calibration set through."""
    photos = sorted((flowers / "train").glob("*/*.jpg"))[::15][:80]
    rows = [
        ManifestRow(str(p.relative_to(flowers)), f"{i:064x}", p.parent.name, "train")
        for i, p in enumerate(photos)
    ]
    config = parse(ExtractConfig, {"weights": "random", "device": "cpu"}, "extract")
    encode = partial(encode_paths, config=config, limits=ImageLimits())
    result = calibrate(rows, flowers, AuditSettings(signal="fused", calibration_photos=80), encode)
    signals, rule = result["signals"], result["rule"]
    assert result["images"] == 240 and result["goal"]["met"]
    fused = signals["fused"]
    assert fused["precision"] >= 0.99 and fused["recall"] >= 0.95
    assert fused["best_recall"] >= max(
        signals["perceptual"]["best_recall"], signals["codes"]["best_recall"]
    )
    assert rule["signal"] == "fused" and rule["precision"] == 1.0 and rule["recall"] >= 0.8
