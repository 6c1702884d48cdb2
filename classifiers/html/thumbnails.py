"""Small images as ``data:`` URIs, so the page is one file that opens offline.

Only the images a page shows are encoded, each once, and a file that cannot be read or
decoded becomes a placeholder with a note instead of stopping the report.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

__all__ = ["PLACEHOLDER", "THUMB_SIDE", "Thumb", "file_uri", "thumbnail"]

THUMB_SIDE = 112  # px, longest side: enough to recognise a photo, ~4 KB as JPEG
JPEG_QUALITY = 70  # thumbnails are looked at, not measured
# A grey square with a question mark: SVG, so the browser decodes it like any image.
PLACEHOLDER = (
    "data:image/svg+xml;base64,"
    + base64.b64encode(
        (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{THUMB_SIDE}" height="{THUMB_SIDE}">'
            '<rect width="100%" height="100%" fill="#ddd"/>'
            '<text x="50%" y="58%" font-size="40" text-anchor="middle" fill="#888">?</text></svg>'
        ).encode()
    ).decode()
)


@dataclass(frozen=True)
class Thumb:
    """What an ``<img>`` shows: a data URI, and why it is a placeholder when it is one."""

    uri: str
    note: str = ""


def _data_uri(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def thumbnail(path: Path, side: int = THUMB_SIDE) -> Thumb:
    """A JPEG thumbnail of the image at ``path``, its longest side at most ``side`` px.

    ``Image.draft`` lets the JPEG decoder skip to a reduced scale (1/2 to 1/8), so a
    large photo costs a fraction of a full decode.
    """
    try:
        with Image.open(path) as image:
            image.draft("RGB", (side, side))
            small = image.convert("RGB")
            small.thumbnail((side, side))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        # OSError covers missing files, unknown formats and truncated data.
        # The error's own text repeats the absolute path; its kind is what the note needs.
        return Thumb(PLACEHOLDER, f"cannot show {path.name} ({type(error).__name__})")
    buffer = io.BytesIO()
    small.save(buffer, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    return Thumb(_data_uri("image/jpeg", buffer.getvalue()))


def file_uri(path: Path, mime: str = "image/png") -> str:
    """A file embedded whole, as for plots, which are already small PNGs."""
    return _data_uri(mime, Path(path).read_bytes())
