"""The precision check: codes at each precision against fp32, and what that does to the head."""

from __future__ import annotations

import time

import numpy as np
import torch

from bench.extract.ours import build_model
from bench.extract.report import say


def encode_all(pixels: torch.Tensor, config, device, precision: str) -> tuple[np.ndarray, float]:
    """Codes (float32, before storage rounding) and the seconds the forward passes took."""
    from features.compute.encoder import Encoder, cpu_allocator_tuned

    encoder = Encoder(
        build_model(config),
        config.preprocessing,
        device,
        precision,
        "float32",
        config.channels_last,
    )
    with cpu_allocator_tuned(device):
        encoder(pixels[:1]).numpy()  # first-call setup is not precision's cost
        started = time.perf_counter()
        blocks = [encoder(chunk).numpy().copy() for chunk in pixels.split(config.batch_size)]
        seconds = time.perf_counter() - started
    return np.concatenate(blocks), seconds


def head_accuracy(
    codes: np.ndarray, labels: list[str], as_stored: bool = True
) -> tuple[float, np.ndarray]:
    """The pipeline's logreg head, 5-fold stratified CV (fixed folds), on float16 codes."""
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    from classifiers.heads import LogRegParams, make_logreg

    y = np.asarray(labels)
    folds = min(5, min(np.unique(y, return_counts=True)[1]))
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=0)
    stored = codes.astype(np.float16).astype(np.float32) if as_stored else codes
    predicted = cross_val_predict(make_logreg(LogRegParams(C=1.0)), stored, y, cv=cv)
    return float((predicted == y).mean() * 100), predicted


def relative_error(codes: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    per_image = np.linalg.norm(codes - reference, axis=1) / np.maximum(
        np.linalg.norm(reference, axis=1), 1e-30
    )
    return {
        "overall": float(np.linalg.norm(codes - reference) / np.linalg.norm(reference)),
        "per_image_median": float(np.median(per_image)),
        "per_image_max": float(per_image.max()),
    }


def measure_precision(pixels, labels, config, device, candidates, naive_codes) -> dict[str, object]:
    say(f"precision: fp32 reference codes for {len(labels)} images ...")
    reference, reference_seconds = encode_all(pixels, config, device, "fp32")
    base_accuracy, base_predicted = head_accuracy(reference, labels)
    unrounded_accuracy, unrounded_predicted = head_accuracy(reference, labels, as_stored=False)
    result: dict[str, object] = {
        "images": len(labels),
        "head": "logreg (StandardScaler + LogisticRegression C=1, max_iter=2000), 5-fold "
        "stratified CV, shuffle seed 0, same folds for every precision, codes rounded to "
        "float16 as stored",
        "fp32": {"head_accuracy": base_accuracy, "seconds": reference_seconds},
        "noise_floor": {
            "what": "the same fp32 codes NOT rounded to float16 (relative change ~2e-4): how "
            "many predictions a perturbation far smaller than bf16's already flips",
            "head_accuracy": unrounded_accuracy,
            "accuracy_change_points": unrounded_accuracy - base_accuracy,
            "predictions_changed": int((unrounded_predicted != base_predicted).sum()),
        },
        "allowed_accuracy_change_points": 0.5,
    }
    for precision in candidates:
        say(f"precision: {precision} codes ...")
        codes, seconds = encode_all(pixels, config, device, precision)
        accuracy, predicted = head_accuracy(codes, labels)
        result[precision] = {
            "relative_error_vs_fp32": relative_error(codes, reference),
            "head_accuracy": accuracy,
            "accuracy_change_points": accuracy - base_accuracy,
            "predictions_changed": int((predicted != base_predicted).sum()),
            "within_allowed": abs(accuracy - base_accuracy) <= 0.5,
            "seconds": seconds,
            "speedup_vs_fp32_here": reference_seconds / seconds,
        }
    if naive_codes is not None:
        accuracy, _ = head_accuracy(naive_codes, labels)
        result["naive_loop_fp32"] = {
            "relative_error_vs_ours_fp32": relative_error(naive_codes, reference),
            "head_accuracy": accuracy,
            "note": "the notebook's float PIL pipeline vs ours (uint8 resize, normalise on "
            "device) at fp32: a check that both compute the same codes",
        }
    return result
