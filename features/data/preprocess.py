"""Geometry on the CPU at uint8, normalisation on the device.

Resizing and cropping stay on uint8 pixels in the loader workers (4x less memory traffic
than float32); the ImageNet mean/std normalisation runs on the accelerator as part of the
forward pass. The geometry matches ``torchvision.transforms.Resize(resize)`` followed by
``CenterCrop(crop)`` on a PIL image exactly, which a test checks.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from PIL import Image

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Preprocessing",
    "resize_crop",
    "resized_size",
    "to_uint8_chw",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """Everything about the input pipeline that changes the codes (part of the fingerprint)."""

    resize: int = field(default=256, metadata={"min": 32})  # shorter side before the crop
    crop: int = field(default=224, metadata={"min": 32})  # VGG16's native input; >= 32
    mean: tuple[float, float, float] = IMAGENET_MEAN
    # Each channel is divided by its std: zero makes every code NaN.
    std: tuple[float, float, float] = field(default=IMAGENET_STD, metadata={"min_exclusive": 0})
    jpeg_draft: bool = True  # decode big JPEGs at reduced DCT scale (never below `resize`)

    def describe(self) -> dict[str, object]:
        description = asdict(self)
        description["interpolation"] = "bilinear"
        return description


def resized_size(width: int, height: int, shorter: int) -> tuple[int, int]:
    """torchvision's rule: the shorter side becomes ``shorter``, the longer is truncated."""
    if width <= height:
        return shorter, int(shorter * height / width)
    return int(shorter * width / height), shorter


# Beyond this aspect ratio only the band the crop keeps is resized: a 65,000 x 16 strip
# would otherwise become a ~1,000,000 x 256 intermediate image (~800 MB) to be cropped.
BAND_ASPECT = 8


def resize_crop(image: Image.Image, preprocessing: Preprocessing) -> Image.Image:
    """Resize the shorter side to ``resize`` and take the centre ``crop`` square."""
    width, height = resized_size(image.width, image.height, preprocessing.resize)
    crop = preprocessing.crop
    if width < crop or height < crop:
        raise ValueError(
            f"extract.crop={crop} is larger than the resized image {width}x{height}; "
            f"set extract.resize >= extract.crop"
        )
    top = round((height - crop) / 2.0)
    left = round((width - crop) / 2.0)
    if max(width, height) > BAND_ASPECT * preprocessing.resize:
        scale_x, scale_y = image.width / width, image.height / height
        band = (left * scale_x, top * scale_y, (left + crop) * scale_x, (top + crop) * scale_y)
        return image.resize((crop, crop), Image.Resampling.BILINEAR, box=band)
    if (width, height) != image.size:
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    return image.crop((left, top, left + crop, top + crop))


def to_uint8_chw(image: Image.Image) -> torch.Tensor:
    """An RGB PIL image as a contiguous uint8 tensor of shape (3, H, W)."""
    array = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))
