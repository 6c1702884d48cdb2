"""Extraction: equivalence with a plain forward pass, resume, and skip accounting."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import numpy as np
import pytest
import torch
from torchvision import models

from features.compute.backbones import BACKBONES, build_extractor
from features.compute.encode import encode_images
from features.compute.encoder import Encoder
from features.compute.extract import extract_codes
from features.compute.loader import ImageRef
from features.data.preprocess import Preprocessing
from features.store import FeatureStore
from features.store.fingerprint import FingerprintMismatch
from tests.conftest import LIMITS, refs_for


def _plain_fc6_relu(model: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
    features = torch.flatten(model.avgpool(model.features(batch)), 1)
    return model.classifier[1](model.classifier[0](features))


def test_extractor_matches_plain_vgg16_forward_pass():
    torch.manual_seed(0)
    reference = models.vgg16(weights=None).eval()
    extractor = build_extractor(BACKBONES["vgg16"], reference.state_dict(), seed=123)
    batch = torch.randn(3, 3, 64, 64)
    with torch.inference_mode():
        expected = _plain_fc6_relu(reference, batch)
        actual = extractor(batch)["codes"]
    assert actual.shape == (3, 4096)
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=0)
    assert (actual >= 0).all(), "classifier.1 is the ReLU after fc6"


def test_encoder_normalises_uint8_like_torchvision():
    preprocessing = Preprocessing(resize=32, crop=32)
    extractor = build_extractor(BACKBONES["vgg16"], None, seed=0)
    encoder = Encoder(
        extractor, preprocessing, torch.device("cpu"), "fp32", "float32", channels_last=False
    )
    pixels = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    mean = torch.tensor(preprocessing.mean).view(1, 3, 1, 1)
    std = torch.tensor(preprocessing.std).view(1, 3, 1, 1)
    with torch.inference_mode():
        expected = extractor((pixels.float() / 255 - mean) / std)["codes"]
    torch.testing.assert_close(
        torch.from_numpy(encoder(pixels).numpy()), expected, atol=1e-4, rtol=1e-4
    )


def test_random_weights_are_seeded_and_deterministic():
    first = build_extractor(BACKBONES["vgg16"], None, seed=7).state_dict()
    again = build_extractor(BACKBONES["vgg16"], None, seed=7).state_dict()
    other = build_extractor(BACKBONES["vgg16"], None, seed=8).state_dict()
    name = "classifier.0.weight"
    assert torch.equal(first[name], again[name])
    assert not torch.equal(first[name], other[name])


def test_extract_then_resume_computes_only_new_images(tmp_path, shapes_root, small_config):
    refs = refs_for(shapes_root)
    store = tmp_path / "store"
    first = extract_codes(refs[:10], store, small_config, LIMITS, progress=False)
    assert (first.reused, first.computed, first.skipped) == (0, 10, 0)
    second = extract_codes(refs, store, small_config, LIMITS, progress=False)
    assert (second.reused, second.computed, second.skipped) == (10, len(refs) - 10, 0)
    third = extract_codes(refs, store, small_config, LIMITS, progress=False)
    assert (third.reused, third.computed) == (len(refs), 0)
    with FeatureStore(store) as reader:
        codes = reader.get([ref.sha256 for ref in refs])
    assert codes.shape == (len(refs), 4096) and codes.dtype == np.float16
    assert np.isfinite(codes).all()


def test_resumed_codes_equal_a_single_run_bit_for_bit(tmp_path, shapes_root, small_config):
    refs = refs_for(shapes_root)
    extract_codes(refs, tmp_path / "once", small_config, LIMITS, progress=False)
    extract_codes(refs[:8], tmp_path / "twice", small_config, LIMITS, progress=False)
    extract_codes(refs, tmp_path / "twice", small_config, LIMITS, progress=False)
    hashes = [ref.sha256 for ref in refs]
    with FeatureStore(tmp_path / "once") as once, FeatureStore(tmp_path / "twice") as twice:
        assert np.array_equal(once.get(hashes), twice.get(hashes))


def test_undecodable_image_is_recorded_and_not_retried(tmp_path, shapes_root, small_config):
    refs = refs_for(shapes_root)
    broken = refs[3].path
    broken.write_bytes(broken.read_bytes()[:300])  # a truncated download
    refs[3] = ImageRef(hashlib.sha256(broken.read_bytes()).hexdigest(), broken)
    report = extract_codes(refs, tmp_path / "store", small_config, LIMITS, progress=False)
    assert (report.computed, report.skipped) == (len(refs) - 1, 1)
    again = extract_codes(refs, tmp_path / "store", small_config, LIMITS, progress=False)
    assert (again.reused, again.computed, again.skipped) == (len(refs) - 1, 0, 1)
    with FeatureStore(tmp_path / "store") as reader:
        assert reader.skipped[refs[3].sha256].reason == "corrupt"


def test_fingerprint_mismatch_is_refused(tmp_path, shapes_root, small_config):
    refs = refs_for(shapes_root)[:4]
    extract_codes(refs, tmp_path / "store", small_config, LIMITS, progress=False)
    other = replace(small_config, seed=1)
    with pytest.raises(FingerprintMismatch, match=r"random:0.*random:1"):
        extract_codes(refs, tmp_path / "store", other, LIMITS, progress=False)


def test_encode_images_computes_what_the_store_holds(tmp_path, shapes_root, small_config):
    refs = refs_for(shapes_root)[:6]
    extract_codes(refs, tmp_path / "store", small_config, LIMITS, progress=False)
    blobs = [(ref.sha256, ref.path.read_bytes()) for ref in refs]
    with FeatureStore(tmp_path / "store") as reader:
        codes, failures = encode_images(blobs, small_config, LIMITS, expected=reader.fingerprint)
        stored = reader.get([ref.sha256 for ref in refs]).astype(np.float32)
    assert failures == []
    computed = np.stack([codes[ref.sha256] for ref in refs]).astype(np.float32)
    np.testing.assert_allclose(computed, stored, rtol=2e-3, atol=2e-3)
    with pytest.raises(FingerprintMismatch):
        other = replace(reader.fingerprint, weights="random:9")
        encode_images(blobs, small_config, LIMITS, expected=other)
