"""A small labelled image dataset, generated deterministically: the offline demo's data.

Four classes a person can tell apart at a glance (and random-weight codes can too):
circles, squares, stripes and triangles, each with its own colour family, drawn at random
positions, sizes and aspect ratios on jittered backgrounds, saved as real JPEG files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["CLASSES", "make_dataset", "make_image"]

CLASSES = ("circles", "squares", "stripes", "triangles")
_COLOURS = {
    "circles": (200, 40, 40),
    "squares": (40, 80, 200),
    "stripes": (30, 150, 60),
    "triangles": (220, 180, 30),
}


def make_image(label: str, rng: np.random.Generator) -> Image.Image:
    """One image of class ``label``; every random choice comes from ``rng``."""
    width, height = (int(v) for v in rng.integers(72, 160, size=2))
    background = tuple(int(v) for v in rng.integers(200, 250, size=3))
    image = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(image)
    colour = tuple(int(np.clip(c + rng.integers(-30, 30), 0, 255)) for c in _COLOURS[label])
    size = int(rng.integers(min(width, height) // 3, min(width, height) * 3 // 4))
    x = int(rng.integers(0, width - size))
    y = int(rng.integers(0, height - size))
    if label == "circles":
        draw.ellipse((x, y, x + size, y + size), fill=colour)
    elif label == "squares":
        draw.rectangle((x, y, x + size, y + size), fill=colour)
    elif label == "stripes":
        step = int(rng.integers(6, 14))
        for offset in range(0, width, step * 2):
            draw.rectangle((offset, 0, offset + step - 1, height), fill=colour)
    else:
        draw.polygon([(x, y + size), (x + size, y + size), (x + size // 2, y)], fill=colour)
    noise = rng.normal(0, 6, size=(height, width, 3))
    pixels = np.clip(np.asarray(image, dtype=np.float64) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


def make_dataset(
    root: Path,
    per_class: int = 40,
    seed: int = 0,
    classes: tuple[str, ...] = CLASSES,
    start: int = 0,
) -> list[Path]:
    """Write ``per_class`` JPEGs per class under ``root/<class>/``; same seed, same bytes.

    ``start`` offsets the image numbers, so a second call grows the dataset with new,
    different images and leaves the existing files untouched.
    """
    written = []
    for label in classes:
        folder = Path(root) / label
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(start, start + per_class):
            rng = np.random.default_rng([seed, CLASSES.index(label), index])
            path = folder / f"{label}_{index:04d}.jpg"
            make_image(label, rng).save(path, format="JPEG", quality=90)
            written.append(path)
    return written
