"""Geometry: the same pixels as torchvision's Resize + CenterCrop, without its memory spikes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from features.data.preprocess import BAND_ASPECT, Preprocessing, resize_crop, to_uint8_chw


def _photo(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(height // 4 + 1, width // 4 + 1, 3), dtype=np.uint8)
    return Image.fromarray(base).resize((width, height), Image.Resampling.BICUBIC)


@pytest.mark.parametrize("size", [(500, 375), (240, 320), (224, 224), (1024, 683), (300, 1000)])
def test_geometry_equals_torchvision_resize_and_center_crop(size):
    image = _photo(*size)
    preprocessing = Preprocessing()
    reference = transforms.Compose(
        [transforms.Resize(256), transforms.CenterCrop(224), transforms.PILToTensor()]
    )
    ours = to_uint8_chw(resize_crop(image, preprocessing))
    assert ours.shape == (3, 224, 224) and ours.dtype == torch.uint8
    assert torch.equal(ours, reference(image))


def test_extreme_strips_resize_only_the_band_the_crop_keeps():
    strip = Image.new("RGB", (65_000, 16), (10, 200, 30))
    out = resize_crop(strip, Preprocessing())
    assert out.size == (224, 224)
    assert np.asarray(out).reshape(-1, 3).tolist()[0] == [10, 200, 30]


def test_band_path_matches_the_full_resize_closely():
    image = _photo(2000, 100)  # resized to 640 x 32: past the 8:1 threshold at resize 32
    preprocessing = Preprocessing(resize=32, crop=32)
    assert 640 > BAND_ASPECT * preprocessing.resize
    band = np.asarray(resize_crop(image, preprocessing), dtype=np.int16)
    full = np.asarray(image.resize((640, 32), Image.Resampling.BILINEAR), dtype=np.int16)
    assert np.abs(band - full[:, 304:336]).max() <= 3


def test_crop_larger_than_resize_is_refused():
    with pytest.raises(ValueError, match=r"extract\.resize >= extract\.crop"):
        resize_crop(_photo(100, 100), Preprocessing(resize=64, crop=96))
