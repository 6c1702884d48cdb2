"""Reader: files on disk to batches of uint8 pixels, in DataLoader workers.

Each item's bytes are read once, hashed and checked against the manifest hash before they
are decoded: a file that changed since ``prepare`` is refused for this run rather than
having its codes filed under another image's hash. A file that fails to decode becomes a
:class:`Failure` in its batch, never an exception and never a substitute image.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from features.images import ImageLimits, ImageRejected, decode_rgb
from features.preprocess import Preprocessing, resize_crop, to_uint8_chw

__all__ = ["Batch", "DecodedImages", "Failure", "ImageRef", "make_loader"]


@dataclass(frozen=True)
class ImageRef:
    """An image to extract: its content hash and one path holding those bytes."""

    sha256: str
    path: Path


@dataclass(frozen=True)
class Failure:
    """An image that produced no pixels this run.

    ``permanent`` failures depend only on the bytes (a corrupt file) and are recorded in
    the store so reruns skip them; others (the file changed or vanished) are retried.
    """

    sha256: str
    reason: str
    detail: str
    permanent: bool


@dataclass
class Batch:
    """Decoded pixels for ``hashes`` (row i is image i) plus the images that failed."""

    hashes: list[str]
    pixels: torch.Tensor  # uint8 of shape (len(hashes), 3, crop, crop)
    failures: list[Failure] = field(default_factory=list)
    raw: list[tuple[str, torch.Tensor]] = field(default_factory=list)  # JPEG bytes for GPU

    def __len__(self) -> int:
        return len(self.hashes) + len(self.failures) + len(self.raw)


@dataclass(frozen=True)
class _Item:
    sha256: str
    pixels: torch.Tensor | None = None
    failure: Failure | None = None
    raw: torch.Tensor | None = None


def _is_jpeg(data: bytes) -> bool:
    return data[:3] == b"\xff\xd8\xff"


class DecodedImages(Dataset):
    """Map-style dataset over ``refs``; with ``raw_jpeg`` JPEG bytes pass through undecoded."""

    def __init__(
        self,
        refs: Sequence[ImageRef],
        preprocessing: Preprocessing,
        limits: ImageLimits,
        raw_jpeg: bool = False,
    ) -> None:
        self.refs = list(refs)
        self.preprocessing = preprocessing
        self.limits = limits
        self.raw_jpeg = raw_jpeg

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, index: int) -> _Item:
        ref = self.refs[index]
        try:
            data = ref.path.read_bytes()
        except OSError as error:
            return _Item(
                ref.sha256,
                failure=Failure(
                    ref.sha256, "unreadable", f"{ref.path}: {error.strerror}", permanent=False
                ),
            )
        if hashlib.sha256(data).hexdigest() != ref.sha256:
            return _Item(
                ref.sha256,
                failure=Failure(
                    ref.sha256,
                    "unreadable",
                    f"{ref.path} changed since prepare; rerun prepare",
                    permanent=False,
                ),
            )
        if self.raw_jpeg and _is_jpeg(data):
            return _Item(ref.sha256, raw=torch.frombuffer(bytearray(data), dtype=torch.uint8))
        return decode_item(ref.sha256, data, self.preprocessing, self.limits)


def decode_item(
    sha256: str, data: bytes, preprocessing: Preprocessing, limits: ImageLimits
) -> _Item:
    """Decode and crop on the CPU; a rejected image becomes a permanent failure."""
    short_side = preprocessing.resize if preprocessing.jpeg_draft else None
    try:
        image = decode_rgb(data, limits, short_side=short_side)
        return _Item(sha256, pixels=to_uint8_chw(resize_crop(image, preprocessing)))
    except ImageRejected as rejected:
        return _Item(sha256, failure=Failure(sha256, rejected.reason, rejected.detail, True))


def _collate(items: list[_Item]) -> Batch:
    decoded = [item for item in items if item.pixels is not None]
    pixels = (
        torch.stack([item.pixels for item in decoded])
        if decoded
        else torch.empty((0, 3, 0, 0), dtype=torch.uint8)
    )
    return Batch(
        hashes=[item.sha256 for item in decoded],
        pixels=pixels,
        failures=[item.failure for item in items if item.failure is not None],
        raw=[(item.sha256, item.raw) for item in items if item.raw is not None],
    )


def make_loader(
    refs: Sequence[ImageRef],
    preprocessing: Preprocessing,
    limits: ImageLimits,
    batch_size: int,
    num_workers: int,
    pin_memory: bool,
    raw_jpeg: bool = False,
) -> DataLoader:
    """Batches in ``refs`` order (the order that makes resumed runs bit-identical)."""
    return DataLoader(
        DecodedImages(refs, preprocessing, limits, raw_jpeg=raw_jpeg),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_collate,
        pin_memory=pin_memory,
        prefetch_factor=4 if num_workers > 0 else None,
        persistent_workers=False,
    )
