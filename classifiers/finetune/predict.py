"""Mapper: the fine-tuned network over image files, batch by batch.

One forward pass serves validation during training, the stage's evaluation and
``predict``: images are read and centre-cropped exactly as ``extract`` reads them
(:func:`features.compute.loader.make_loader`, content hash checked), in eval mode and
without gradients, and the network's training flag is put back afterwards.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from classifiers.finetune.model import FinetuneNet
from classifiers.finetune.persist import FinetuneSidecar
from classifiers.finetune.runtime import Runtime, resolve_runtime
from features.compute.config import ExtractConfig
from features.compute.loader import ImageRef, make_loader
from features.data.images import ImageLimits
from features.data.preprocess import Preprocessing
from features.store.shards import Failure

__all__ = ["Logits", "PredictedBatch", "forward_batches", "predict_images"]


@dataclass(frozen=True)
class Logits:
    """One batch's outputs: row i belongs to ``hashes[i]``; undecodable images apart."""

    hashes: list[str]
    logits: torch.Tensor  # float32 of shape (len(hashes), n_classes), on the CPU
    failures: list[Failure]
    seconds: float  # the forward pass alone, for the latency figure


@dataclass(frozen=True)
class PredictedBatch:
    """``predict``'s view of a batch: class probabilities, in the sidecar's class order."""

    hashes: list[str]
    probabilities: np.ndarray  # float32 of shape (len(hashes), n_classes)
    failures: list[Failure]  # undecodable images, and NaN or inf outputs


def forward_batches(
    net: FinetuneNet,
    refs: Sequence[ImageRef],
    preprocessing: Preprocessing,
    limits: ImageLimits,
    runtime: Runtime,
    batch_size: int,
) -> Iterator[Logits]:
    """Logits for ``refs`` in order, ``batch_size`` images at a time."""
    loader = make_loader(
        refs, preprocessing, limits, batch_size, runtime.workers, runtime.pin_memory
    )
    training = net.training
    net.eval()
    try:
        for batch in loader:
            started = time.perf_counter()
            with torch.inference_mode(), runtime.autocast():
                pixels = batch.pixels.to(runtime.device, non_blocking=True)
                logits = net(pixels).float().cpu() if batch.hashes else torch.empty(0)
            yield Logits(batch.hashes, logits, batch.failures, time.perf_counter() - started)
    finally:
        net.train(training)


def predict_images(
    net: FinetuneNet,
    sidecar: FinetuneSidecar,
    refs: Sequence[ImageRef],
    config: ExtractConfig,
    limits: ImageLimits,
) -> Iterator[PredictedBatch]:
    """Class probabilities of ``refs`` from a fine-tuned network (:func:`load_finetuned`).

    Images are prepared with the preprocessing the network was trained with (the
    sidecar's), on ``config``'s device and precision, ``config.batch_size`` at a time.
    """
    runtime = resolve_runtime(config)
    net.to(runtime.device)
    preprocessing = sidecar.preprocessing_config
    for out in forward_batches(net, refs, preprocessing, limits, runtime, config.batch_size):
        if not out.hashes:
            yield PredictedBatch([], np.empty((0, len(sidecar.classes)), np.float32), out.failures)
            continue
        finite = torch.isfinite(out.logits).all(dim=1).tolist()
        failures = list(out.failures) + [
            Failure(sha, "non_finite", "the network gave NaN or inf", permanent=False)
            for sha, ok in zip(out.hashes, finite, strict=True)
            if not ok
        ]
        probabilities = torch.softmax(out.logits[torch.tensor(finite)], dim=1).numpy()
        hashes = [sha for sha, ok in zip(out.hashes, finite, strict=True) if ok]
        yield PredictedBatch(hashes, probabilities, failures)
