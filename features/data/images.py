"""Reader: turn image bytes into RGB pixels, with every conversion explicit.

Each decision here changes the codes, so each one is deliberate and tested:

- the format comes from the bytes, never the extension (a PNG named ``.jpg`` is a PNG);
- EXIF orientation is applied, so a phone photo looks as its owner saw it: a JPEG tagged
  orientation 6 decodes to the same pixels as a copy that was physically rotated;
- an animated image (GIF, APNG, WebP) and a multi-page TIFF contribute their first frame;
- CMYK, L, P, 1, YCbCr and LAB go through Pillow's ``convert("RGB")`` (no ICC colour
  management: embedded profiles are ignored, the same way for every file);
- anything with an alpha channel (RGBA, LA, PA, or a palette with a transparent index) is
  composited onto the fixed background :data:`BACKGROUND`, so transparent pixels do not
  turn into whatever colour the encoder left under them;
- 16-bit greyscale (I;16 and friends) is scaled to 8 bits by ``/ 257`` and rounded
  (65535 -> 255, 32896 -> 128), never clipped, so a 16-bit scan keeps its contrast;
- 32-bit integer ("I") images are read as 16-bit data (Pillow's mode for many 16-bit PNGs)
  and scaled the same way; float ("F") images are clipped to 0..255.

Limits (``data.limits`` in params.yaml) are checked from the header, before any pixel is
decoded: more than ``max_pixels`` pixels is a ``decompression_bomb``; a shorter side below
``min_side`` is ``too_small``. A 4000x8 strip is therefore too small at the default
``min_side: 16``: after the resize to the network's input, its centre crop would be a
smear of 8 source rows, and resizing it (to 128,000 x 256 pixels at ``resize: 256``)
would cost about 100 MB for nothing.

Bad files raise :class:`ImageRejected` with a reason from :data:`SKIP_REASONS`, and
nothing else: Pillow's plugins raise many exception types on malformed input, and one bad
file must never stop a run. Callers record the reason; they never substitute another image.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

__all__ = [
    "BACKGROUND",
    "SKIP_REASONS",
    "ImageLimits",
    "ImageRejected",
    "ProbeResult",
    "decode_rgb",
    "probe_image",
    "to_rgb",
]

BACKGROUND = (255, 255, 255)  # white: the usual backdrop of product and specimen photos

SKIP_REASONS = (
    "empty",
    "not_an_image",
    "corrupt",
    "decompression_bomb",
    "too_small",
    "unreadable",
    "outside_root",
    "symlink_loop",
    "label_conflict",
)

# Never let Pillow paper over a truncated file with grey pixels.
ImageFile.LOAD_TRUNCATED_IMAGES = False


@dataclass(frozen=True)
class ImageLimits:
    """Size limits an image must meet before it is decoded in full."""

    min_side: int = field(default=16, metadata={"min": 1})  # below this: no signal left
    # Pillow's warning threshold; Pillow itself refuses to open anything over twice that.
    max_pixels: int = field(default=89_478_485, metadata={"min": 1, "max": 2 * 89_478_485})


class ImageRejected(Exception):
    """An image that cannot be used, with the reason the data report records."""

    def __init__(self, reason: str, detail: str) -> None:
        if reason not in SKIP_REASONS:
            raise ValueError(f"unknown skip reason {reason!r}; expected one of {SKIP_REASONS}")
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class ProbeResult:
    """What validation learned about a usable image."""

    format: str
    mode: str
    width: int
    height: int
    frames: int


def _open(source: Path | bytes, limits: ImageLimits) -> Image.Image:
    """Open lazily and enforce the size limits before any pixel is decoded."""
    try:
        size = len(source) if isinstance(source, bytes) else source.stat().st_size
    except OSError as error:
        raise ImageRejected("unreadable", str(error)) from error
    if size == 0:
        raise ImageRejected("empty", "file has 0 bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    except Image.DecompressionBombError as error:
        raise ImageRejected("decompression_bomb", str(error)) from error
    except UnidentifiedImageError as error:
        raise ImageRejected("not_an_image", "bytes are not a format Pillow can read") from error
    except Exception as error:  # any plugin failure on hostile bytes is this file's problem
        raise ImageRejected("corrupt", f"{type(error).__name__}: {error}") from error
    width, height = image.size
    if width * height > limits.max_pixels:
        image.close()
        raise ImageRejected(
            "decompression_bomb",
            f"{width}x{height} = {width * height} pixels > "
            f"data.limits.max_pixels={limits.max_pixels}",
        )
    if min(width, height) < limits.min_side:
        image.close()
        raise ImageRejected(
            "too_small",
            f"{width}x{height}: shorter side < data.limits.min_side={limits.min_side}",
        )
    return image


def _decode(image: Image.Image) -> Image.Image:
    """Decode every pixel of the first frame now, orient it and convert it to RGB.

    Everything that can fail on bad bytes happens here, so truncation or a broken EXIF
    block is found when ``prepare`` validates, not mid-batch.
    """
    try:
        image.seek(0)
        image.load()
        return to_rgb(ImageOps.exif_transpose(image))
    except Exception as error:  # Pillow raises OSError, SyntaxError, struct.error, ...
        raise ImageRejected("corrupt", f"{type(error).__name__}: {error}") from error


def probe_image(source: Path | bytes, limits: ImageLimits) -> ProbeResult:
    """Validate an image as :func:`decode_rgb` would read it, as cheaply as possible.

    JPEGs are decoded in draft mode at 1/8 scale: the whole entropy-coded stream is still
    read, so a truncated download is caught at a fraction of the cost of a full decode.
    """
    with _open(source, limits) as image:
        info = ProbeResult(
            format=image.format or "unknown",
            mode=image.mode,
            width=image.width,
            height=image.height,
            frames=getattr(image, "n_frames", 1),
        )
        if image.format == "JPEG":
            image.draft(image.mode, (max(1, image.width // 8), max(1, image.height // 8)))
        _decode(image)
        return info


def _scale_16bit(image: Image.Image) -> Image.Image:
    """``round(p / 257)`` in integers: exact (p / 257 is never a tie, 257 being odd), and
    4 bytes a pixel instead of float64's 8 on a scan that may hold 90 million pixels."""
    wide = np.clip(np.asarray(image), 0, 65535).astype(np.uint32)
    wide += 128
    wide //= 257
    return Image.fromarray(wide.astype(np.uint8), mode="L")


def _composite(image: Image.Image) -> Image.Image:
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB by the rules in the module docstring."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I;16") or mode == "I":
        return _scale_16bit(image).convert("RGB")
    if mode == "F":
        clipped = np.clip(np.asarray(image, dtype=np.float32), 0, 255).astype(np.uint8)
        return Image.fromarray(clipped, mode="L").convert("RGB")
    if mode in ("RGBA", "LA", "La", "RGBa", "PA") or (mode == "P" and "transparency" in image.info):
        return _composite(image)
    return image.convert("RGB")


def _draft_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """The smallest size Pillow's JPEG draft may shrink to and still cover ``short_side``."""
    scale = short_side / min(width, height)
    return max(1, int(np.ceil(width * scale))), max(1, int(np.ceil(height * scale)))


def decode_rgb(
    source: Path | bytes, limits: ImageLimits, short_side: int | None = None
) -> Image.Image:
    """Decode a file (or its bytes) to an RGB image, oriented as EXIF says.

    With ``short_side`` set, a JPEG much larger than needed is decoded at a reduced DCT
    scale (Pillow's draft mode), never below ``short_side`` pixels on its shorter side:
    several times faster, and the resize that follows hides the difference.
    """
    with _open(source, limits) as image:
        if short_side is not None and image.format == "JPEG":
            image.draft("RGB", _draft_size(image.width, image.height, short_side))
        return _decode(image)
