"""Optional GPU JPEG path: nvJPEG decode, then resize and crop on the device.

Sixteen CPU cores of PIL top out near 2,400 images/s; batched nvJPEG decodes ~18,000/s on an
H100, which is what end-to-end rates above 10,000 images/s need. Anything nvJPEG refuses
(CMYK, progressive oddities, corrupt streams) falls back to the CPU decoder for that image
alone, which records a failure only if the CPU cannot decode it either. The same code runs
with ``device=cpu`` (libjpeg-turbo), which is how CI covers it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torchvision.io import ImageReadMode, decode_jpeg

from features.images import ImageLimits
from features.loader import Failure, decode_item
from features.preprocess import Preprocessing, resized_size

__all__ = ["DeviceDecoded", "decode_on_device", "resize_crop_tensor"]


@dataclass
class DeviceDecoded:
    """uint8 pixels on the device for ``hashes``, and the images neither decoder could read."""

    hashes: list[str]
    pixels: torch.Tensor
    failures: list[Failure] = field(default_factory=list)


def resize_crop_tensor(image: torch.Tensor, preprocessing: Preprocessing) -> torch.Tensor:
    """uint8 (3, H, W) to uint8 (3, crop, crop): antialiased bilinear, same geometry as PIL."""
    height, width = image.shape[-2:]
    new_width, new_height = resized_size(width, height, preprocessing.resize)
    resized = F.interpolate(
        image[None].float(),
        size=(new_height, new_width),
        mode="bilinear",
        antialias=True,
        align_corners=False,
    )[0]
    crop = preprocessing.crop
    top = round((new_height - crop) / 2.0)
    left = round((new_width - crop) / 2.0)
    cropped = resized[:, top : top + crop, left : left + crop]
    return cropped.round_().clamp_(0, 255).to(torch.uint8)


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
    """Decode JPEG byte tensors on ``device``; fall back to the CPU path per image."""
    hashes: list[str] = []
    pixels: list[torch.Tensor] = []
    failures: list[Failure] = []
    decoded = _decode_each([data for _, data in raw], device)
    for (sha, data), image in zip(raw, decoded, strict=True):
        if image is not None and _within_limits(image, limits):
            hashes.append(sha)
            pixels.append(resize_crop_tensor(image, preprocessing))
            continue
        item = decode_item(sha, bytes(data.numpy()), preprocessing, limits)
        if item.failure is not None:
            failures.append(item.failure)
        else:
            hashes.append(sha)
            pixels.append(item.pixels.to(device))
    stacked = (
        torch.stack(pixels)
        if pixels
        else torch.empty(
            (0, 3, preprocessing.crop, preprocessing.crop), dtype=torch.uint8, device=device
        )
    )
    return DeviceDecoded(hashes, stacked, failures)
