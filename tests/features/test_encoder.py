"""The encoder's device, precision, layout and compile paths, all exercised on the CPU.

Tolerances are relative errors of the codes against fp32 (``||c - ref|| / ||ref||``) on
random-weight VGG16 at 64 px: bf16 keeps 8 mantissa bits (measured 6e-3 here, 7e-3 at
224 px), fp16 keeps 11 (measured 8e-4, 9e-4 on an H100). The bounds leave ~3x headroom
for other CPUs and oneDNN versions. channels_last only reorders the same fp32
arithmetic (measured 2e-6).
"""

from __future__ import annotations

import copy
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch

from features.compute import encoder as encoder_module
from features.compute.backbones import BACKBONES, build_extractor
from features.compute.config import ExtractConfig
from features.compute.encoder import (
    Encoder,
    _cuda_settings,
    cpu_allocator_tuned,
    cpu_has_native_bf16,
    resolve_device,
    resolve_precision,
)
from features.compute.extract import _workers, compile_batch
from features.data.preprocess import Preprocessing
from features.errors import UserError

CPU = torch.device("cpu")
PREPROCESSING = Preprocessing(resize=64, crop=64)


@pytest.fixture(scope="module")
def extractor() -> torch.nn.Module:
    return build_extractor(BACKBONES["vgg16"], None, seed=0)


@pytest.fixture(scope="module")
def pixels() -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (5, 3, 64, 64), dtype=torch.uint8, generator=generator)


def _codes(extractor, pixels, precision="fp32", channels_last=True, compile_batch=None):
    encoder = Encoder(
        copy.deepcopy(extractor),
        PREPROCESSING,
        CPU,
        precision,
        "float32",
        channels_last=channels_last,
        compile_batch=compile_batch,
    )
    return encoder(pixels).numpy()


def _relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.linalg.norm(actual - expected) / np.linalg.norm(expected))


@pytest.fixture(scope="module")
def fp32_codes(extractor, pixels) -> np.ndarray:
    return _codes(extractor, pixels, channels_last=False)


@pytest.mark.parametrize(("precision", "bound"), [("bf16", 2e-2), ("fp16", 3e-3)])
def test_reduced_precision_codes_are_close_to_fp32(extractor, pixels, fp32_codes, precision, bound):
    codes = _codes(extractor, pixels, precision)
    assert codes.shape == (5, 4096) and np.isfinite(codes).all()
    error = _relative_error(codes, fp32_codes)
    assert 0 < error < bound, f"{precision}: relative error {error:.2e}"


def test_channels_last_changes_nothing_but_speed(extractor, pixels, fp32_codes):
    error = _relative_error(_codes(extractor, pixels, channels_last=True), fp32_codes)
    assert error < 1e-5


def test_codes_come_back_in_the_store_dtype(extractor, pixels):
    encoder = Encoder(copy.deepcopy(extractor), PREPROCESSING, CPU, "bf16", "float16")
    pending = encoder(pixels[:2])
    assert pending.event is None  # nothing to wait for on the CPU
    assert pending.numpy().dtype == np.float16


def test_compiled_encoder_pads_short_batches_and_slices_codes(
    monkeypatch, extractor, pixels, fp32_codes
):
    """The padding logic, with torch.compile replaced by a shape check (seconds, not minutes).

    A compiled graph is specialised to one batch shape; a short last batch must be padded
    to it and its codes sliced back. The real compile runs in the slow test below.
    """
    seen: list[tuple[int, ...]] = []

    def fake_compile(function, **options):
        assert options == {"mode": "max-autotune-no-cudagraphs", "dynamic": False}

        def run(batch):
            seen.append(tuple(batch.shape))
            return function(batch)

        return run

    monkeypatch.setattr(encoder_module.torch, "compile", fake_compile)
    encoder = Encoder(
        copy.deepcopy(extractor), PREPROCESSING, CPU, "fp32", "float32", False, compile_batch=4
    )
    full = encoder(pixels[:4]).numpy()
    short = encoder(pixels[4:]).numpy()
    assert seen == [(4, 3, 64, 64), (4, 3, 64, 64)]
    assert short.shape == (1, 4096)
    np.testing.assert_allclose(np.concatenate([full, short]), fp32_codes, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(
    not (shutil.which("g++") or shutil.which("c++")), reason="inductor on CPU needs a C++ compiler"
)
def test_torch_compile_on_cpu_pads_and_matches_eager(extractor, pixels, fp32_codes):
    """The real inductor compile on the CPU: 18 s cold on the 2-core machine, 11 s cached."""
    encoder = Encoder(
        copy.deepcopy(extractor), PREPROCESSING, CPU, "fp32", "float32", False, compile_batch=4
    )
    codes = np.concatenate([encoder(pixels[:4]).numpy(), encoder(pixels[4:]).numpy()])
    assert codes.shape == (5, 4096)
    assert _relative_error(codes, fp32_codes) < 1e-4


def test_compile_threshold_rules():
    config = ExtractConfig(compile_min_images=1000, batch_size=32)
    cuda = torch.device("cuda")
    assert compile_batch(config, cuda, 1000) == 32
    assert compile_batch(config, cuda, 999) is None
    assert compile_batch(config, CPU, 10**9) is None, "auto never compiles on the CPU"
    assert compile_batch(replace(config, compile="on"), CPU, 1) == 32
    assert compile_batch(replace(config, compile="off"), cuda, 10**9) is None


def test_worker_rules(monkeypatch):
    monkeypatch.setattr("features.compute.extract.os.cpu_count", lambda: 16)
    assert _workers(ExtractConfig(), torch.device("cuda")) == 15
    assert _workers(ExtractConfig(), CPU) == 0, "on CPU the prefetch thread decodes"
    assert _workers(ExtractConfig(num_workers=3), CPU) == 3


def test_resolve_precision_rules(monkeypatch):
    cuda = torch.device("cuda")
    assert resolve_precision("auto", cuda) == "fp16"
    for explicit in ("fp32", "fp16", "bf16"):
        assert resolve_precision(explicit, CPU) == explicit
        assert resolve_precision(explicit, cuda) == explicit
    monkeypatch.setattr(encoder_module, "cpu_has_native_bf16", lambda: True)
    assert resolve_precision("auto", CPU) == "bf16"
    monkeypatch.setattr(encoder_module, "cpu_has_native_bf16", lambda: False)
    assert resolve_precision("auto", CPU) == "fp32"


def _fresh_bf16_check(monkeypatch, *, mkldnn: bool, torch_flags: dict | None, cpuinfo: set):
    cpu_has_native_bf16.cache_clear()
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: mkldnn)
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        if torch_flags is None:
            monkeypatch.delattr(torch.cpu, name, raising=False)
        else:
            monkeypatch.setattr(
                torch.cpu, name, lambda value=torch_flags[name]: value, raising=False
            )
    monkeypatch.setattr(encoder_module, "_cpuinfo_flags", lambda: cpuinfo)
    try:
        return cpu_has_native_bf16()
    finally:
        cpu_has_native_bf16.cache_clear()


def test_native_bf16_detection(monkeypatch):
    amx = {"_is_avx512_bf16_supported": False, "_is_amx_tile_supported": True}
    none = {"_is_avx512_bf16_supported": False, "_is_amx_tile_supported": False}
    assert _fresh_bf16_check(monkeypatch, mkldnn=True, torch_flags=amx, cpuinfo=set())
    assert not _fresh_bf16_check(monkeypatch, mkldnn=True, torch_flags=none, cpuinfo=set())
    # oneDNN emulates bf16 on plain AVX-512: not native, stay at fp32
    assert not _fresh_bf16_check(monkeypatch, mkldnn=False, torch_flags=amx, cpuinfo=set())
    # an older torch without the probes: /proc/cpuinfo decides
    assert _fresh_bf16_check(monkeypatch, mkldnn=True, torch_flags=None, cpuinfo={"avx512_bf16"})
    assert not _fresh_bf16_check(monkeypatch, mkldnn=True, torch_flags=None, cpuinfo={"avx512f"})


def test_resolve_device_rules(monkeypatch):
    assert resolve_device("cpu") == CPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == CPU
    with pytest.raises(UserError, match="no CUDA device"):
        resolve_device("cuda")
    with pytest.raises(UserError, match="no CUDA device"):
        resolve_device("cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)


class _FakeLibc:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def mallopt(self, parameter: int, value: int) -> int:
        self.calls.append(("mallopt", parameter, value))
        return 1

    def malloc_trim(self, pad: int) -> int:
        self.calls.append(("malloc_trim", pad))
        return 1


def test_cpu_allocator_tuning_is_scoped(monkeypatch):
    libc = _FakeLibc()
    monkeypatch.setattr(encoder_module, "_glibc", lambda: libc)
    with cpu_allocator_tuned(CPU):
        assert libc.calls == [("mallopt", -4, 0), ("mallopt", -1, 2**31 - 1)]
    assert libc.calls[2:] == [
        ("mallopt", -1, 128 * 1024),
        ("mallopt", -4, 65536),
        ("malloc_trim", 0),
    ]
    libc.calls.clear()
    with pytest.raises(KeyError), cpu_allocator_tuned(CPU):
        raise KeyError("restored on errors too")
    assert libc.calls[-1] == ("malloc_trim", 0)
    libc.calls.clear()
    with cpu_allocator_tuned(torch.device("cuda")):
        pass
    assert libc.calls == [], "GPU memory has its own caching allocator"


def test_cpu_allocator_tuning_runs_for_real(extractor, pixels, fp32_codes):
    with cpu_allocator_tuned(CPU):
        codes = _codes(extractor, pixels, channels_last=False)
    np.testing.assert_array_equal(codes, fp32_codes)


def test_cuda_settings_are_scoped_and_fp32_means_fp32():
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    before = (cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32)
    with _cuda_settings(tf32=False):
        assert cudnn.benchmark and not cudnn.allow_tf32 and not matmul.allow_tf32
    assert (cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32) == before
    with _cuda_settings(tf32=True):
        assert cudnn.benchmark and cudnn.allow_tf32 == before[1]
    assert (cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32) == before
