"""Reader: turn image bytes into RGB pixels, with every conversion explicit.

Each decision here changes the codes, so each one is deliberate and tested:

- the format comes from the bytes, never the extension (a PNG named ``.jpg`` is a PNG);
- EXIF orientation is applied, so a phone photo looks as its owner saw it;
- an animated image contributes its first frame;
- CMYK, L, P, 1 and YCbCr go through Pillow's ``convert("RGB")`` (no ICC colour management);
- anything with an alpha channel (RGBA, LA, PA, or a palette with a transparent index) is
  composited onto the fixed background :data:`BACKGROUND`, so transparent pixels do not
  turn into whatever colour the encoder left under them;
- 16-bit greyscale (I;16 and friends) is scaled to 8 bits by ``/ 257`` (65535 -> 255),
  never clipped, so a 16-bit scan keeps its contrast;
- 32-bit integer ("I") images are read as 16-bit data (Pillow's mode for many 16-bit PNGs)
  and scaled the same way; float ("F") images are clipped to 0..255.

Bad files raise :class:`ImageRejected` with a reason from :data:`SKIP_REASONS`; callers
record the reason, they never substitute another image.
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
    max_pixels: int = field(default=89_478_485, metadata={"min": 1})  # Pillow's bomb limit


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
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageRejected("corrupt", f"{type(error).__name__}: {error}") from error
    width, height = image.size
    if width * height > limits.max_pixels:
        image.close()
        raise ImageRejected(
            "decompression_bomb",
            f"{width}x{height} = {width * height} pixels > data.max_pixels={limits.max_pixels}",
        )
    if min(width, height) < limits.min_side:
        image.close()
        raise ImageRejected(
            "too_small", f"{width}x{height}: shorter side < data.min_side={limits.min_side}"
        )
    return image


def _load(image: Image.Image) -> None:
    """Decode every pixel now, so truncation is found here and not mid-batch."""
    try:
        image.seek(0)
        image.load()
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as error:
        raise ImageRejected("corrupt", f"{type(error).__name__}: {error}") from error


def probe_image(source: Path | bytes, limits: ImageLimits) -> ProbeResult:
    """Validate an image fully (every byte decoded) as cheaply as possible.

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
        _load(image)
        return info


def _scale_16bit(image: Image.Image) -> Image.Image:
    pixels = np.asarray(image, dtype=np.float64)
    scaled = np.clip(np.rint(pixels / 257.0), 0, 255).astype(np.uint8)
    return Image.fromarray(scaled, mode="L")


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
        _load(image)
        try:
            oriented = ImageOps.exif_transpose(image)
        except (OSError, SyntaxError, ValueError, TypeError) as error:
            raise ImageRejected("corrupt", f"bad EXIF block: {error}") from error
        return to_rgb(oriented)
