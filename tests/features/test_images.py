"""Reader: every conversion the module docstring promises, and every rejection reason."""

from __future__ import annotations

import io
import zlib

import numpy as np
import pytest
from PIL import Image

from features.data.images import (
    BACKGROUND,
    ImageLimits,
    ImageRejected,
    decode_rgb,
    probe_image,
)

LIMITS = ImageLimits()


def _encode(image: Image.Image, format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def _pixels(data: bytes, limits: ImageLimits = LIMITS) -> np.ndarray:
    image = decode_rgb(data, limits)
    assert image.mode == "RGB"
    return np.asarray(image)


def _noise(width: int = 40, height: int = 24, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8))


def _solid(mode: str, colour, size: tuple[int, int] = (20, 20)) -> Image.Image:
    return Image.new(mode, size, colour)


def test_cmyk_becomes_rgb_by_plain_conversion():
    cmyk = Image.new("CMYK", (20, 20))
    cmyk.paste((255, 0, 0, 0), (0, 0, 10, 20))  # pure cyan
    cmyk.paste((0, 0, 255, 0), (10, 0, 20, 20))  # pure yellow
    pixels = _pixels(_encode(cmyk, "TIFF"))
    assert tuple(pixels[5, 2]) == (0, 255, 255)
    assert tuple(pixels[5, 15]) == (255, 255, 0)


def test_cmyk_jpeg_decodes_to_rgb():
    data = _encode(_noise().convert("CMYK"), "JPEG", quality=95)
    assert probe_image(data, LIMITS).mode == "CMYK"
    assert _pixels(data).shape == (24, 40, 3)


def test_greyscale_is_replicated_to_three_channels():
    pixels = _pixels(_encode(_solid("L", 77), "PNG"))
    assert (pixels == 77).all()


def test_greyscale_with_alpha_is_composited_on_the_background():
    image = Image.new("LA", (20, 20), (77, 255))
    image.paste((200, 0), (0, 0, 10, 20))  # transparent: its grey must not show
    pixels = _pixels(_encode(image, "PNG"))
    assert tuple(pixels[5, 2]) == BACKGROUND
    assert tuple(pixels[5, 15]) == (77, 77, 77)


def test_rgba_is_composited_on_the_fixed_white_background():
    image = Image.new("RGBA", (30, 20), (10, 20, 30, 255))
    image.paste((255, 0, 0, 0), (0, 0, 10, 20))  # fully transparent red
    image.paste((0, 0, 0, 128), (10, 0, 20, 20))  # half-transparent black
    pixels = _pixels(_encode(image, "PNG"))
    assert tuple(pixels[5, 5]) == (255, 255, 255), "transparent colour must not leak"
    assert tuple(pixels[5, 15]) == (127, 127, 127)
    assert tuple(pixels[5, 25]) == (10, 20, 30)


def test_palette_gif_transparency_is_composited_on_the_background():
    image = Image.new("P", (20, 20), 1)
    image.putpalette([0, 255, 0, 200, 30, 30] + [0] * (256 * 3 - 6))
    image.paste(0, (0, 0, 10, 20))  # index 0 (green) is the transparent one
    data = _encode(image, "GIF", transparency=0)
    assert probe_image(data, LIMITS).mode == "P"
    pixels = _pixels(data)
    assert tuple(pixels[5, 2]) == BACKGROUND, "transparent green must not leak"
    assert tuple(pixels[5, 15]) == (200, 30, 30)


def test_palette_without_transparency_keeps_its_colours():
    image = Image.new("P", (20, 20), 1)
    image.putpalette([0, 255, 0, 200, 30, 30] + [0] * (256 * 3 - 6))
    pixels = _pixels(_encode(image, "PNG"))
    assert (pixels == (200, 30, 30)).all()


def test_16_bit_greyscale_is_scaled_by_257_not_clipped():
    values = np.array([[65535, 32896, 1000, 0]], dtype=np.uint16).repeat(16, axis=0)
    data = _encode(Image.fromarray(values.repeat(16, axis=1)), "PNG")
    assert probe_image(data, LIMITS).mode.startswith("I")
    row = _pixels(data)[0, ::16, 0]
    # clipping would map 1000 to 255; scaling keeps it dark
    assert row.tolist() == [255, 128, 4, 0]


def test_32_bit_integer_images_are_read_as_16_bit_data():
    values = np.array([[-5, 257, 65535, 70000]], dtype=np.int32).repeat(16, axis=0)
    data = _encode(Image.fromarray(values.repeat(16, axis=1)), "TIFF")
    assert probe_image(data, LIMITS).mode == "I"
    assert _pixels(data)[0, ::16, 0].tolist() == [0, 1, 255, 255]


def test_animated_gif_uses_its_first_frame():
    frames = [_solid("RGB", colour) for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    data = _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)
    probe = probe_image(data, LIMITS)
    assert probe.frames == 3
    assert (_pixels(data) == (255, 0, 0)).all()


def _with_orientation(image: Image.Image, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _encode(image, "JPEG", quality=95, exif=exif)


def test_exif_orientation_6_equals_a_physically_rotated_copy():
    photo = _noise(40, 24)
    plain = _encode(photo, "JPEG", quality=95)
    tagged = _with_orientation(photo, 6)  # same scan data, only the EXIF tag differs
    rotated = _encode(Image.fromarray(_pixels(plain)).transpose(Image.Transpose.ROTATE_270), "PNG")
    assert _pixels(plain).shape == (24, 40, 3)
    assert _pixels(tagged).shape == (40, 24, 3), "orientation 6 is displayed rotated 90° CW"
    assert np.array_equal(_pixels(tagged), _pixels(rotated))


def test_orientation_is_applied_when_the_jpeg_is_drafted():
    photo = _noise(400, 240)
    tagged = _with_orientation(photo, 6)
    image = decode_rgb(tagged, LIMITS, short_side=32)
    assert image.height > image.width >= 32


def test_format_comes_from_the_bytes_not_the_extension(tmp_path):
    data = _encode(_noise(), "PNG")
    png, renamed = tmp_path / "picture.png", tmp_path / "picture.jpg"
    png.write_bytes(data)
    renamed.write_bytes(data)
    assert probe_image(renamed, LIMITS).format == "PNG"
    assert np.array_equal(_pixels(png.read_bytes()), np.asarray(decode_rgb(renamed, LIMITS)))
    assert np.array_equal(_pixels(data), np.asarray(_noise()))


def _truncated_jpeg() -> bytes:
    data = _encode(_noise(64, 64), "JPEG", quality=90)
    return data[: len(data) // 2]


def _corrupt_png() -> bytes:
    data = bytearray(_encode(_noise(64, 64), "PNG"))
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(64)  # zeroed compressed data: CRC and zlib both fail
    return bytes(data)


@pytest.mark.parametrize(
    ("make", "limits", "reason", "detail"),
    [
        (lambda: b"", LIMITS, "empty", "0 bytes"),
        (lambda: b"this is a text file named .jpg\n", LIMITS, "not_an_image", "not a format"),
        (_truncated_jpeg, LIMITS, "corrupt", "truncated"),
        (_corrupt_png, LIMITS, "corrupt", ""),
        (lambda: _encode(_solid("RGB", 0, (1, 1)), "PNG"), LIMITS, "too_small", "min_side=16"),
        (lambda: _encode(_solid("RGB", 0, (4000, 8)), "PNG"), LIMITS, "too_small", "4000x8"),
        (
            lambda: _encode(_noise(64, 64), "PNG"),
            ImageLimits(max_pixels=64 * 64 - 1),
            "decompression_bomb",
            "data.limits.max_pixels=4095",
        ),
    ],
    ids=["zero-byte", "text", "truncated-jpeg", "corrupt-png", "1x1", "4000x8", "bomb"],
)
def test_bad_input_is_rejected_with_its_reason(make, limits, reason, detail):
    data = make()
    for check in (probe_image, decode_rgb):  # prepare and extraction agree
        with pytest.raises(ImageRejected) as rejected:
            check(data, limits)
        assert rejected.value.reason == reason
        assert detail in rejected.value.detail


def test_pillow_refuses_a_bomb_beyond_its_own_limit_as_a_bomb():
    # A PNG header claiming 20000 x 20000 pixels: no pixel data is needed to be refused.
    forged = bytearray(_encode(_solid("L", 0, (1, 1)), "PNG"))
    start = forged.index(b"IHDR")
    forged[start + 4 : start + 12] = (20000).to_bytes(4, "big") * 2
    forged[start + 17 : start + 21] = zlib.crc32(forged[start : start + 17]).to_bytes(4, "big")
    with pytest.raises(ImageRejected) as rejected:
        probe_image(bytes(forged), ImageLimits(max_pixels=2 * 89_478_485))
    assert rejected.value.reason == "decompression_bomb"


def test_a_long_strip_is_usable_once_min_side_allows_it():
    strip = _encode(_noise(4000, 8), "PNG")
    probe = probe_image(strip, ImageLimits(min_side=8))
    assert (probe.width, probe.height) == (4000, 8)


def test_unknown_skip_reason_is_a_programming_error():
    with pytest.raises(ValueError, match="unknown skip reason"):
        ImageRejected("bad_vibes", "")


def test_unreadable_path_is_rejected(tmp_path):
    with pytest.raises(ImageRejected) as rejected:
        probe_image(tmp_path / "missing.jpg", LIMITS)
    assert rejected.value.reason == "unreadable"
