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

from features.data.images import ImageLimits, ImageRejected, _draft_size, decode_rgb
from features.data.preprocess import Preprocessing, resize_crop, to_uint8_chw
from features.store.shards import Failure

__all__ = ["Batch", "DecodedImages", "Failure", "ImageRef", "make_loader"]


@dataclass(frozen=True)
class ImageRef:
    """An image to extract: its content hash and one path holding those bytes."""

    sha256: str
    path: Path


@dataclass
class Batch:
    """Decoded pixels for ``hashes`` (row i is image i) plus the images that failed.

    With ``raw_jpeg`` loaders, JPEG files travel undecoded for the device to decode: all
    of a batch's bytes in one tensor (``raw_bytes``, split by ``raw_sizes``), because a
    DataLoader worker hands each tensor over through its own shared-memory segment: one
    per batch rather than one per image.
    """

    hashes: list[str]
    pixels: torch.Tensor  # uint8 of shape (len(hashes), 3, crop, crop)
    failures: list[Failure] = field(default_factory=list)
    raw_hashes: list[str] = field(default_factory=list)
    raw_bytes: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.uint8))
    raw_sizes: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.hashes) + len(self.failures) + len(self.raw_hashes)

    @property
    def raw(self) -> list[tuple[str, torch.Tensor]]:
        """``(sha256, JPEG bytes)`` per undecoded image; the tensors are views, not copies."""
        if not self.raw_hashes:
            return []
        return list(zip(self.raw_hashes, torch.split(self.raw_bytes, self.raw_sizes), strict=True))

    def pin_memory(self, device: str | None = None) -> Batch:
        """Called by the DataLoader's pinning thread: page-locked pixels copy asynchronously."""
        if self.pixels.numel():
            self.pixels = self.pixels.pin_memory()
        return self


@dataclass(frozen=True)
class _Item:
    sha256: str
    pixels: torch.Tensor | None = None
    failure: Failure | None = None
    raw: bytes | None = None  # undecoded JPEG, for the device decoder


def _is_jpeg(data: bytes) -> bool:
    """A JPEG stream ending in its EOI marker.

    nvJPEG is not guaranteed to refuse a truncated stream the way PIL does, so a stream
    without EOI near its end (truncated, or with trailing data) is decoded by PIL, which
    rejects truncation. Entropy-coded data cannot contain FF D9.
    """
    return data[:3] == b"\xff\xd8\xff" and b"\xff\xd9" in data[-32:]


_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # not DHT, JPG, DAC
_STANDALONE_MARKERS = frozenset(range(0xD0, 0xDA)) | {0x01}


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's frame header, without decoding; None if not found."""
    position = 2
    end = len(data) - 9
    while position < end:
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in _STANDALONE_MARKERS:
            position += 2
            continue
        if marker in _SOF_MARKERS:
            height = int.from_bytes(data[position + 5 : position + 7], "big")
            width = int.from_bytes(data[position + 7 : position + 9], "big")
            return width, height
        if marker == 0xDA:  # start of scan before any frame header
            return None
        position += 2 + int.from_bytes(data[position + 2 : position + 4], "big")
    return None


def for_device_decoder(data: bytes, preprocessing: Preprocessing) -> bool:
    """Whether these bytes go to the device JPEG decoder rather than PIL in the worker.

    Complete JPEG streams only, and, with ``jpeg_draft``, only those PIL would decode at
    full scale: a JPEG at least twice the ``resize`` is decoded by PIL at reduced DCT
    scale (cheap on the CPU), and the device's full decode plus antialiased resize would
    give different pixels (several levels on average) under the same fingerprint. With
    that rule both paths agree to within one level (tests/features/test_gpu_decode.py).
    """
    if not _is_jpeg(data):
        return False
    if not preprocessing.jpeg_draft:
        return True
    size = jpeg_size(data)
    if size is None or min(size) < 1:
        return True  # the device decoder tries; anything it refuses falls back to PIL
    width, height = size
    wanted_width, wanted_height = _draft_size(width, height, preprocessing.resize)
    return min(width // wanted_width, height // wanted_height) < 2


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
        if self.raw_jpeg and for_device_decoder(data, self.preprocessing):
            return _Item(ref.sha256, raw=data)
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
    raw = [item for item in items if item.raw is not None]
    return Batch(
        hashes=[item.sha256 for item in decoded],
        pixels=pixels,
        failures=[item.failure for item in items if item.failure is not None],
        raw_hashes=[item.sha256 for item in raw],
        raw_bytes=(
            torch.frombuffer(bytearray(b"".join(item.raw for item in raw)), dtype=torch.uint8)
            if raw
            else torch.empty(0, dtype=torch.uint8)
        ),
        raw_sizes=[len(item.raw) for item in raw],
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
