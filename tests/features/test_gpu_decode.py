"""The device JPEG path, run on the CPU: same pixels as PIL, per-image fallback, pipeline.

``decode_on_device`` runs unchanged with ``device=cpu`` (torchvision's libjpeg-turbo
decoder instead of nvJPEG), which is how these tests cover the GPU branch without a GPU.

Tolerance: at most 1 grey level per pixel against the PIL path, and under 0.3 on average.
Both decoders are libjpeg-turbo here, so decoded pixels are identical; the difference is
the resize: PIL resamples in 8-bit fixed point and rounds after each of its two separable
passes, torch's antialiased ``interpolate`` works in float32 and rounds once. (nvJPEG's
IDCT and chroma upsampling differ a little more; that is measured on a GPU, not here.)
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from features.compute.backbones import BACKBONES, build_extractor
from features.compute.backend import make_fingerprint
from features.compute.encode import encode_images
from features.compute.encoder import Encoder
from features.compute.extract import _drain, extract_codes
from features.compute.gpu_decode import _resize_crop_batch, decode_on_device, resize_crop_tensor
from features.compute.loader import (
    Batch,
    ImageRef,
    decode_item,
    for_device_decoder,
    jpeg_size,
    make_loader,
)
from features.compute.prefetch import ReadyBatch, prefetch
from features.data.images import ImageLimits
from features.data.preprocess import Preprocessing
from features.store import FeatureStore, StoreWriter
from features.store.committer import Committer
from tests.conftest import LIMITS, refs_for

CPU = torch.device("cpu")
# Draft off: PIL's reduced-scale decode is a different (cheaper) picture of big images;
# the loader keeps those away from the device decoder (see test_routing_*).
NO_DRAFT = Preprocessing(resize=64, crop=56, jpeg_draft=False)


def _raw(paths: list[Path]) -> list[tuple[str, torch.Tensor]]:
    out = []
    for path in paths:
        data = path.read_bytes()
        out.append(
            (hashlib.sha256(data).hexdigest(), torch.frombuffer(bytearray(data), dtype=torch.uint8))
        )
    return out


def _pil_pixels(raw, preprocessing: Preprocessing) -> torch.Tensor:
    return torch.stack(
        [decode_item(sha, bytes(data.numpy()), preprocessing, LIMITS).pixels for sha, data in raw]
    )


def _jpeg(size: tuple[int, int], seed: int = 0, **save) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    stream = io.BytesIO()
    Image.fromarray(pixels).save(stream, format="JPEG", quality=90, **save)
    return stream.getvalue()


def _assert_within_one_level(actual: torch.Tensor, expected: torch.Tensor) -> None:
    difference = (actual.int() - expected.int()).abs()
    assert actual.shape == expected.shape and actual.dtype == torch.uint8
    assert difference.max().item() <= 1
    assert difference.float().mean().item() < 0.3


@pytest.mark.parametrize(
    "preprocessing", [NO_DRAFT, Preprocessing(resize=32, crop=32, jpeg_draft=False)]
)
def test_device_decode_on_cpu_matches_pil_within_one_level(shapes_root, preprocessing):
    raw = _raw(sorted(shapes_root.glob("*/*.jpg")))
    decoded = decode_on_device(raw, preprocessing, LIMITS, CPU)
    assert decoded.hashes == [sha for sha, _ in raw] and not decoded.failures
    _assert_within_one_level(decoded.pixels, _pil_pixels(raw, preprocessing))


def test_device_decode_matches_pil_on_real_photos(flowers):
    """Default preprocessing on flower photos (none is big enough for a draft decode)."""
    paths = sorted(flowers.glob("*/*/*.jpg"))[::150]
    raw = _raw(paths)
    preprocessing = Preprocessing()
    assert all(for_device_decoder(bytes(data.numpy()), preprocessing) for _, data in raw)
    decoded = decode_on_device(raw, preprocessing, LIMITS, CPU)
    _assert_within_one_level(decoded.pixels, _pil_pixels(raw, preprocessing))


def test_device_decode_falls_back_per_image_and_fails_only_with_pil(tmp_path):
    good = _jpeg((90, 70), seed=1)
    png = io.BytesIO()
    Image.new("RGB", (80, 80), (10, 200, 30)).save(png, format="PNG")
    truncated = _jpeg((90, 70), seed=2)[:400]
    tiny = _jpeg((8, 40), seed=3)  # decodes fine, but below data.limits.min_side
    other = _jpeg((120, 64), seed=4)
    streams = [good, png.getvalue(), truncated, tiny, other]
    raw = [
        (f"h{i}", torch.frombuffer(bytearray(data), dtype=torch.uint8))
        for i, data in enumerate(streams)
    ]
    decoded = decode_on_device(raw, NO_DRAFT, LIMITS, CPU)
    # The PNG is not a JPEG: the device decoder refuses it and PIL decodes it, in place.
    assert decoded.hashes == ["h0", "h1", "h4"]
    failures = {f.sha256: f for f in decoded.failures}
    assert set(failures) == {"h2", "h3"}
    assert failures["h2"].reason == "corrupt" and failures["h2"].permanent
    assert failures["h3"].reason == "too_small" and failures["h3"].permanent
    assert torch.equal(decoded.pixels[1], decode_item("h1", streams[1], NO_DRAFT, LIMITS).pixels)
    alone = decode_on_device([raw[0], raw[4]], NO_DRAFT, LIMITS, CPU).pixels
    assert torch.equal(decoded.pixels[[0, 2]], alone), "one bad stream changed the others"


def test_device_decode_of_nothing_decodable_is_an_empty_batch():
    raw = [("bad", torch.frombuffer(bytearray(b"\xff\xd8\xff not really"), dtype=torch.uint8))]
    decoded = decode_on_device(raw, NO_DRAFT, LIMITS, CPU)
    assert decoded.hashes == [] and decoded.pixels.shape == (0, 3, 56, 56)
    assert [f.reason for f in decoded.failures] == ["not_an_image"]  # PIL's verdict


def test_batched_resize_equals_one_image_at_a_time():
    generator = torch.Generator().manual_seed(0)
    sizes = [(70, 90), (90, 70), (70, 90), (64, 64), (200, 75), (70, 90)]
    images = [
        torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=generator) for h, w in sizes
    ]
    batch = _resize_crop_batch(images, NO_DRAFT, CPU)
    one_by_one = torch.stack([resize_crop_tensor(image, NO_DRAFT) for image in images])
    assert torch.equal(batch, one_by_one)
    assert _resize_crop_batch([], NO_DRAFT, CPU).shape == (0, 3, 56, 56)


def test_jpeg_size_reads_the_frame_header():
    assert jpeg_size(_jpeg((123, 45))) == (123, 45)
    assert jpeg_size(_jpeg((64, 200), progressive=True)) == (64, 200)
    assert jpeg_size(b"\xff\xd8\xff\xe0") is None


def test_routing_complete_full_scale_jpegs_to_the_device_decoder():
    small = Preprocessing(resize=64, crop=56)
    assert for_device_decoder(_jpeg((100, 90)), small)
    assert not for_device_decoder(_jpeg((100, 90))[:-40], small), "truncated: PIL decides"
    png = io.BytesIO()
    Image.new("RGB", (80, 80)).save(png, format="PNG")
    assert not for_device_decoder(png.getvalue(), small)
    big = _jpeg((300, 260))  # PIL would decode it at 1/2 scale in draft mode
    assert not for_device_decoder(big, small)
    assert for_device_decoder(big, replace(small, jpeg_draft=False))


def test_raw_batches_travel_as_one_buffer(shapes_root):
    refs = refs_for(shapes_root)[:6]
    loader = make_loader(refs, NO_DRAFT, LIMITS, 4, 0, pin_memory=False, raw_jpeg=True)
    batches = list(loader)
    assert [len(b) for b in batches] == [4, 2]
    first = batches[0]
    assert first.raw_bytes.dim() == 1 and first.hashes == [] and len(first.raw_sizes) == 4
    for (sha, data), ref in zip(first.raw, refs[:4], strict=True):
        assert sha == ref.sha256 and bytes(data.numpy()) == ref.path.read_bytes()


def test_batch_pin_memory_keeps_its_rows():
    batch = Batch(["a"], torch.zeros((1, 3, 4, 4), dtype=torch.uint8))
    if not torch.cuda.is_available():
        pytest.skip("page-locked memory needs CUDA")
    pinned = batch.pin_memory()
    assert pinned.pixels.is_pinned() and pinned.hashes == ["a"]


def test_prefetch_keeps_order_and_reraises_errors():
    def batches():
        yield from range(3)
        raise OSError("disk went away")

    def prepare(number):
        return ReadyBatch([str(number)], torch.zeros(0), [], 1)

    seen = []
    with pytest.raises(OSError, match="disk went away"):
        for ready in prefetch(batches(), prepare, CPU):
            seen.append(ready.hashes[0])
    assert seen == ["0", "1", "2"]


def test_device_decode_pipeline_end_to_end_on_cpu(tmp_path, shapes_root, small_config):
    """The gpu_decode branch of the runner (raw loader, prefetch, decode, encode, commit).

    ``extract_codes`` only takes it on CUDA, so this drives ``_drain`` directly with a
    raw-JPEG loader on the CPU, and compares with the normal CPU path's codes.
    """
    config = replace(
        small_config, preprocessing=Preprocessing(resize=32, crop=32, jpeg_draft=False)
    )
    refs = refs_for(shapes_root)
    broken = refs[5].path
    broken.write_bytes(broken.read_bytes()[:300])
    refs[5] = ImageRef(hashlib.sha256(broken.read_bytes()).hexdigest(), broken)
    extract_codes(refs, tmp_path / "cpu", config, LIMITS, progress=False)

    fingerprint = make_fingerprint(config, "random:0", "fp32")
    encoder = Encoder(
        build_extractor(BACKBONES["vgg16"], None, 0), config.preprocessing, CPU, "fp32", "float16"
    )
    loader = make_loader(refs, config.preprocessing, LIMITS, 4, 0, pin_memory=False, raw_jpeg=True)
    with StoreWriter(tmp_path / "device", fingerprint) as writer:
        committer = Committer(writer, commit_rows=8, commit_seconds=3600)
        stats = _drain(loader, encoder, committer, config.preprocessing, LIMITS, progress=False)
    assert (stats.rows, stats.skipped) == (len(refs) - 1, 1)

    hashes = [ref.sha256 for i, ref in enumerate(refs) if i != 5]
    with FeatureStore(tmp_path / "cpu") as cpu, FeatureStore(tmp_path / "device") as device:
        assert device.skipped[refs[5].sha256].reason == "corrupt"
        expected = cpu.get(hashes).astype(np.float32)
        actual = device.get(hashes).astype(np.float32)
    error = np.linalg.norm(actual - expected) / np.linalg.norm(expected)
    assert error < 0.02, f"codes from the two decode paths differ by {error:.3g}"


def test_encode_images_is_unaffected_by_device_decode_setting(small_config):
    data = _jpeg((80, 70))
    codes, failures = encode_images([("x", data)], replace(small_config, gpu_decode=True), LIMITS)
    assert not failures and codes["x"].shape == (4096,)


def test_store_limits_apply_to_device_path_images():
    limits = ImageLimits(min_side=100)
    raw = [("small", torch.frombuffer(bytearray(_jpeg((90, 90))), dtype=torch.uint8))]
    decoded = decode_on_device(raw, NO_DRAFT, limits, CPU)
    assert [f.reason for f in decoded.failures] == ["too_small"]


def test_decode_workers_feeding_the_prefetch_thread_give_identical_codes(
    tmp_path, shapes_root, small_config
):
    """DataLoader worker processes iterated from the prefetch thread (the CUDA default)."""
    refs = refs_for(shapes_root)[:12]
    extract_codes(refs, tmp_path / "inline", small_config, LIMITS, progress=False)
    workers = replace(small_config, num_workers=2)
    report = extract_codes(refs, tmp_path / "workers", workers, LIMITS, progress=False)
    assert report.computed == 12 and report.timings["drain"] > 0
    hashes = [ref.sha256 for ref in refs]
    with FeatureStore(tmp_path / "inline") as inline, FeatureStore(tmp_path / "workers") as other:
        assert np.array_equal(inline.get(hashes), other.get(hashes))
