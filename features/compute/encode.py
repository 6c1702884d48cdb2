"""Codes outside the store: images in memory or files on disk, for ``predict``.

The same backend, loader, prefetch and finiteness check as ``extract``, without a store:
codes come back batch by batch and nothing is written.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import torch

from features.compute.backbones import get_backbone
from features.compute.backend import Backend, resolve_backend
from features.compute.config import ExtractConfig
from features.compute.encoder import Encoder, cpu_allocator_tuned
from features.compute.extract import compile_batch, run_loader
from features.compute.finite import CheckedBatch, FiniteGuard
from features.compute.loader import ImageRef, decode_item
from features.compute.prefetch import ReadyBatch, prefetch, prepare_batch
from features.data.images import ImageLimits
from features.data.preprocess import Preprocessing
from features.errors import UserError
from features.store.fingerprint import Fingerprint
from features.store.shards import Failure

__all__ = ["encode_files", "encode_images", "encode_paths"]


def _checked_backend(config: ExtractConfig, expected: Fingerprint | None) -> Backend:
    """The backend, refused unless it computes codes as ``expected`` says.

    A head applied to codes computed any other way gives meaningless answers. The backbone
    and layer come from ``expected``: they are the head's feature set.
    """
    if expected is None:
        return resolve_backend(config)
    spec = get_backbone(expected.backbone)
    layer = spec.layer_with_identity(expected.layer)
    backend = resolve_backend(replace(config, backbone=spec.name), [layer.name])
    expected.require_same(
        backend.fingerprint,
        "the head",
        ours="it was trained on",
        theirs="extract params now compute",
        fix="Set extract back to what the head was trained with, or retrain the head.",
    )
    return backend


def _checked_batches(batches: Iterable[ReadyBatch], encoder: Encoder) -> Iterator[CheckedBatch]:
    """Each batch's forward pass, checked by :class:`FiniteGuard` as ``extract`` checks it."""
    guard = FiniteGuard(encoder)
    with cpu_allocator_tuned(encoder.device):
        for ready in batches:
            yield guard(ready, encoder(ready.pixels) if ready.hashes else None)


def _decoded_batch(
    images: Sequence[tuple[str, bytes]], preprocessing: Preprocessing, limits: ImageLimits
) -> ReadyBatch:
    items = [decode_item(sha, data, preprocessing, limits) for sha, data in images]
    decoded = [item for item in items if item.pixels is not None]
    pixels = (
        torch.stack([item.pixels for item in decoded])
        if decoded
        else torch.empty((0, 3, 0, 0), dtype=torch.uint8)
    )
    failures = [item.failure for item in items if item.failure is not None]
    return ReadyBatch([item.sha256 for item in decoded], pixels, failures, len(items))


def encode_images(
    images: Sequence[tuple[str, bytes]],
    config: ExtractConfig,
    limits: ImageLimits,
    expected: Fingerprint | None = None,
) -> tuple[dict[str, np.ndarray], list[Failure]]:
    """Codes for images already in memory, ``batch_size`` at a time, bypassing the store.

    With ``expected`` set, refuses to compute codes any other way than the fingerprint
    says. An image whose codes hold NaN or inf is a ``non_finite`` failure, as in the store.
    """
    backend = _checked_backend(config, expected)
    size = config.batch_size
    batches = (
        _decoded_batch(images[start : start + size], config.preprocessing, limits)
        for start in range(0, len(images), size)
    )
    codes: dict[str, np.ndarray] = {}
    failures: list[Failure] = []
    for checked in _checked_batches(batches, backend.encoder(config)):
        failures.extend(checked.failures)
        if checked.codes is not None:
            codes.update(zip(checked.hashes, checked.codes.numpy(), strict=True))
    return codes, failures


def encode_files(
    refs: Sequence[ImageRef],
    config: ExtractConfig,
    limits: ImageLimits,
    expected: Fingerprint | None = None,
) -> Iterator[CheckedBatch]:
    """Codes for image files, one checked batch at a time, bypassing the store (``predict``).

    Files are read, re-hashed and decoded as ``extract`` does (ahead of the forward pass,
    one batch's bytes in memory at a time), so many files cost what ``extract`` costs.
    The fingerprint check happens on the call, before any file is read.
    """
    backend = _checked_backend(config, expected)
    device = backend.device
    prepare = partial(
        prepare_batch, preprocessing=config.preprocessing, limits=limits, device=device
    )
    batches = prefetch(run_loader(refs, config, limits, device), prepare, device)
    encoder = backend.encoder(config, compile_batch(config, device, len(refs)))
    return _checked_batches(batches, encoder)


def encode_paths(
    paths: Sequence[Path],
    config: ExtractConfig,
    limits: ImageLimits,
    expected: Fingerprint | None = None,
) -> np.ndarray:
    """Codes of ``paths`` in that order, all or nothing (the audit's calibration copies):
    a file that yields no code is an error, not a gap."""
    refs = [ImageRef(hashlib.sha256(Path(p).read_bytes()).hexdigest(), Path(p)) for p in paths]
    codes: dict[str, np.ndarray] = {}
    for batch in encode_files(refs, config, limits, expected):
        if batch.failures:
            failure = batch.failures[0]
            raise UserError(f"no code for {failure.detail or failure.sha256}: {failure.reason}")
        if batch.codes is not None:
            codes.update(zip(batch.hashes, batch.codes.numpy(), strict=True))
    return np.stack([codes[ref.sha256] for ref in refs])
