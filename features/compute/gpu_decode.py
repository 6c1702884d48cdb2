"""Optional GPU JPEG path: nvJPEG decode, then resize and crop on the device.

Sixteen CPU cores of PIL top out near 2,400 images/s; batched nvJPEG decodes ~18,000/s on an
H100, which is what end-to-end rates above 10,000 images/s need. Anything nvJPEG refuses
(CMYK, progressive oddities, corrupt streams) falls back to the CPU decoder for that image
alone, which records a failure only if the CPU cannot decode it either. The loader keeps
two kinds of JPEG on the CPU path from the start (``loader.for_device_decoder``): streams
without an end marker (nvJPEG may accept a truncated file that PIL rejects) and, with
``jpeg_draft``, images big enough for PIL's reduced-scale decode, whose pixels a full
decode would not reproduce. The same code runs with ``device=cpu`` (libjpeg-turbo), which
is how CI covers it; there it matches the PIL path to within one grey level.

Resizing is batched by source size: images of the same height and width (most of a photo
collection comes in a handful of camera sizes) share one interpolation call, and the
rounding back to uint8 happens once per batch, so kernel launches grow with the number of
distinct sizes in a batch rather than with its length.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torchvision.io import ImageReadMode, decode_jpeg

from features.compute.loader import Failure, decode_item
from features.data.images import ImageLimits
from features.data.preprocess import Preprocessing, resized_size

__all__ = ["DeviceDecoded", "decode_on_device", "resize_crop_tensor"]


@dataclass
class DeviceDecoded:
    """uint8 pixels on the device for ``hashes``, and the images neither decoder could read."""

    hashes: list[str]
    pixels: torch.Tensor
    failures: list[Failure] = field(default_factory=list)


def _resize_crop_float(images: torch.Tensor, preprocessing: Preprocessing) -> torch.Tensor:
    """uint8 (N, 3, H, W), one size, to float (N, 3, crop, crop), not yet rounded."""
    height, width = images.shape[-2:]
    new_width, new_height = resized_size(width, height, preprocessing.resize)
    crop = preprocessing.crop
    if new_width < crop or new_height < crop:
        raise ValueError(
            f"extract.crop={crop} is larger than the resized image {new_width}x{new_height}; "
            f"set extract.resize >= extract.crop"
        )
    resized = images.float()
    if (new_height, new_width) != (height, width):  # PIL skips an identity resize too
        resized = F.interpolate(
            resized,
            size=(new_height, new_width),
            mode="bilinear",
            antialias=True,
            align_corners=False,
        )
    top = round((new_height - crop) / 2.0)
    left = round((new_width - crop) / 2.0)
    return resized[:, :, top : top + crop, left : left + crop]


def _to_uint8(pixels: torch.Tensor) -> torch.Tensor:
    return pixels.round_().clamp_(0, 255).to(torch.uint8)


def resize_crop_tensor(image: torch.Tensor, preprocessing: Preprocessing) -> torch.Tensor:
    """uint8 (3, H, W) to uint8 (3, crop, crop): antialiased bilinear, same geometry as PIL."""
    return _to_uint8(_resize_crop_float(image[None], preprocessing))[0]


def _resize_crop_batch(
    images: Sequence[torch.Tensor], preprocessing: Preprocessing, device: torch.device
) -> torch.Tensor:
    """uint8 (3, H_i, W_i) images of any sizes to one uint8 (N, 3, crop, crop) batch."""
    crop = preprocessing.crop
    if not images:
        return torch.empty((0, 3, crop, crop), dtype=torch.uint8, device=device)
    by_size: dict[tuple[int, int], list[int]] = {}
    for position, image in enumerate(images):
        by_size.setdefault(tuple(image.shape[-2:]), []).append(position)
    rows: list[torch.Tensor | None] = [None] * len(images)
    for positions in by_size.values():
        group = torch.stack([images[i] for i in positions])
        for position, row in zip(positions, _resize_crop_float(group, preprocessing), strict=True):
            rows[position] = row
    return _to_uint8(torch.stack(rows))


def _decode_each(data: Sequence[torch.Tensor], device: torch.device) -> list[torch.Tensor | None]:
    try:
        return list(
            decode_jpeg(
                list(data), mode=ImageReadMode.RGB, device=device, apply_exif_orientation=True
            )
        )
    except RuntimeError:
        decoded: list[torch.Tensor | None] = []
        for item in data:  # one bad stream must not cost the whole batch its GPU decode
            try:
                decoded.append(
                    decode_jpeg(
                        item, mode=ImageReadMode.RGB, device=device, apply_exif_orientation=True
                    )
                )
            except RuntimeError:
                decoded.append(None)
        return decoded


def _within_limits(image: torch.Tensor, limits: ImageLimits) -> bool:
    height, width = image.shape[-2:]
    return min(height, width) >= limits.min_side and height * width <= limits.max_pixels


def decode_on_device(
    raw: Sequence[tuple[str, torch.Tensor]],
    preprocessing: Preprocessing,
    limits: ImageLimits,
    device: torch.device,
) -> DeviceDecoded:
    """Decode JPEG byte tensors on ``device``; fall back to the CPU path per image.

    Rows keep the order of ``raw`` (minus failures), so a batch's rows do not depend on
    which images happened to need the fallback.
    """
    decoded = _decode_each([data for _, data in raw], device)
    hashes: list[str] = []
    device_images: list[torch.Tensor] = []
    fallback: dict[int, torch.Tensor] = {}  # row -> CPU-decoded uint8 (3, crop, crop)
    failures: list[Failure] = []
    for (sha, data), image in zip(raw, decoded, strict=True):
        if image is not None and _within_limits(image, limits):
            hashes.append(sha)
            device_images.append(image)
            continue
        item = decode_item(sha, bytes(data.numpy()), preprocessing, limits)
        if item.failure is not None:
            failures.append(item.failure)
        else:
            fallback[len(hashes)] = item.pixels
            hashes.append(sha)
    pixels = _resize_crop_batch(device_images, preprocessing, device)
    if fallback:
        device_rows = iter(pixels.unbind(0))
        pixels = torch.stack(
            [
                fallback[row].to(device) if row in fallback else next(device_rows)
                for row in range(len(hashes))
            ]
        )
    return DeviceDecoded(hashes, pixels, failures)
