"""Score the fine-tuned network on a split: the figures a head's metrics hold.

The labels-only figures come from :func:`classifiers.evaluate.score`, as for every head;
the latency is that of the network's forward passes over the split, measured while
predicting (repeating a full-network pass to time it would cost minutes on a CPU).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from classifiers.evaluate import score
from classifiers.finetune.model import FinetuneNet
from classifiers.finetune.predict import Logits, forward_batches
from classifiers.finetune.runtime import Runtime
from features.compute.loader import ImageRef
from features.data.images import ImageLimits
from features.data.preprocess import Preprocessing
from features.errors import UserError

__all__ = ["Evaluation", "evaluate_images", "require_usable"]


@dataclass(frozen=True)
class Evaluation:
    """Metrics and the per-image predictions they were computed from, in input order."""

    metrics: dict[str, Any]
    hashes: list[str]
    actual: list[str]
    predicted: list[str]


def require_usable(out: Logits, split: str) -> None:
    """Refuse a batch with an image that did not decode or an output that is not finite:
    a figure over part of a split, or over NaN, would misreport the network."""
    if out.failures:
        failure = out.failures[0]
        raise UserError(f"{split} image {failure.sha256[:12]}: {failure.reason}: {failure.detail}")
    if out.hashes and not bool(torch.isfinite(out.logits).all()):
        raise UserError(
            f"the network gave NaN or inf for {split} images; set extract.precision: fp32 "
            f"or retrain with a lower finetune.lr"
        )


def evaluate_images(
    net: FinetuneNet,
    refs: Sequence[ImageRef],
    labels: dict[str, str],
    classes: list[str],
    preprocessing: Preprocessing,
    limits: ImageLimits,
    runtime: Runtime,
    batch_size: int,
    split: str = "test",
) -> Evaluation:
    """Predict ``refs`` (labelled by ``labels``, sha256 -> class) and score them."""
    hashes: list[str] = []
    predicted: list[str] = []
    seconds = 0.0
    for out in forward_batches(net, refs, preprocessing, limits, runtime, batch_size):
        require_usable(out, split)
        hashes += out.hashes
        predicted += [classes[i] for i in out.logits.argmax(dim=1).tolist()] if out.hashes else []
        seconds += out.seconds
    actual = [labels[sha] for sha in hashes]
    metrics = score(np.array(actual), np.array(predicted), classes)
    metrics["predict_ms_per_1000"] = 1e6 * seconds / len(hashes) if hashes else 0.0
    metrics["n"] = len(hashes)
    return Evaluation(metrics, hashes, actual, predicted)
