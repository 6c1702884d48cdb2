"""Near-copies of real photos, made the way copies arise in the wild: resized, re-encoded,
cropped a little, brightened or darkened a little. The near-duplicate detector is
calibrated on them instead of on a guessed threshold."""

from __future__ import annotations

import io
import random
from dataclasses import dataclass

from PIL import Image, ImageEnhance

__all__ = ["CopyRecipe", "near_copy"]


@dataclass(frozen=True)
class CopyRecipe:
    """The ranges a copy's changes are drawn from."""

    scale: tuple[float, float] = (0.5, 0.9)
    jpeg_quality: tuple[int, int] = (50, 90)
    max_crop: float = 0.10
    brightness: tuple[float, float] = (0.9, 1.1)


def near_copy(image: Image.Image, rng: random.Random, recipe: CopyRecipe = CopyRecipe()) -> bytes:
    """JPEG bytes of one near-copy of ``image``, its changes drawn from ``recipe``."""
    image = image.convert("RGB")
    scale = rng.uniform(*recipe.scale)
    width, height = (max(16, round(side * scale)) for side in image.size)
    image = image.resize((width, height), Image.Resampling.BICUBIC)
    crop = rng.uniform(0.0, recipe.max_crop)
    cut_w, cut_h = int(width * crop), int(height * crop)
    left, top = rng.randint(0, cut_w), rng.randint(0, cut_h)
    image = image.crop((left, top, left + width - cut_w, top + height - cut_h))
    image = ImageEnhance.Brightness(image).enhance(rng.uniform(*recipe.brightness))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=rng.randint(*recipe.jpeg_quality))
    return out.getvalue()
