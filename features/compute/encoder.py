"""Mapper: uint8 pixel batches to codes on the chosen device and precision.

Normalisation happens here, on the device, so the loader ships uint8 (4x fewer bytes over
PCIe than float32). Results are copied back without blocking: the returned
:class:`PendingCodes` is only waited on by the writer thread, so the next batch's forward
pass is already queued while this one is being copied and committed.
"""

from __future__ import annotations

import contextlib
import ctypes
import platform
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache

import numpy as np
import torch
from torch import nn

from features.data.preprocess import Preprocessing
from features.errors import UserError

__all__ = [
    "DTYPES",
    "Encoder",
    "PendingCodes",
    "cpu_allocator_tuned",
    "cpu_has_native_bf16",
    "resolve_device",
    "resolve_precision",
]

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(setting: str) -> torch.device:
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(setting)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(
            f"extract.device={setting!r} but torch sees no CUDA device; use auto or cpu"
        )
    return device


@cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bf16 arithmetic in hardware (AVX512-BF16 or AMX) for oneDNN.

    oneDNN accepts bf16 on any AVX-512 CPU but emulates it there, which is no faster than
    fp32; only the native instructions make bf16 pay, so both must hold.
    """
    try:
        if not (
            torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
        ):
            return False
    except (AttributeError, RuntimeError):
        return False
    checks = [
        getattr(torch.cpu, name, None)
        for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    ]
    if all(callable(check) for check in checks):
        with contextlib.suppress(RuntimeError):
            return any(check() for check in checks)
    return bool(_cpuinfo_flags() & {"avx512_bf16", "amx_bf16"})


def _cpuinfo_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as stream:
            for line in stream:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def resolve_precision(setting: str, device: torch.device) -> str:
    """``auto``: fp16 on CUDA; on CPU bf16 where the CPU has it natively, else fp32.

    fp16 on CUDA: tensor cores, 9e-4 relative error. bf16 on a CPU with AVX512-BF16/AMX:
    3.6-5x fp32's forward-pass speed (channels_last both), 7e-3 relative error, and the
    logreg head's accuracy moved by 0.0 points on 200 flower images and +0.4 on 1,000
    under fixed 5-fold CV, inside the +-0.5 allowed (bench/results/extract_cpu*.json;
    random weights, the only ones available when this was measured). Other CPUs emulate
    bf16, which is no faster, so they keep fp32.
    """
    if setting != "auto":
        return setting
    if device.type == "cuda":
        return "fp16"
    return "bf16" if device.type == "cpu" and cpu_has_native_bf16() else "fp32"


_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)
_GLIBC_DEFAULTS = {_M_TRIM_THRESHOLD: 128 * 1024, _M_MMAP_MAX: 65536}


@contextlib.contextmanager
def cpu_allocator_tuned(device: torch.device) -> Iterator[None]:
    """Keep freed activation memory in the heap while CPU inference runs (glibc only).

    glibc serves every allocation above 32 MB with a fresh ``mmap`` and unmaps it on
    free, so each VGG16 forward pass page-faults its activations (hundreds of MB a
    batch) in again, and the kernel spends its time zeroing pages. Turning ``mmap`` off
    and the heap trim threshold up makes each batch reuse the previous one's memory: no
    page faults, 1.5x VGG16 bf16 throughput on the 2-core development CPU. The defaults
    are set back and the memory handed back on exit (glibc's adaptive mmap threshold
    stays frozen at its current value). A no-op off glibc and on accelerators.
    """
    libc = _glibc() if device.type == "cpu" else None
    if libc is None:
        yield
        return
    libc.mallopt(_M_MMAP_MAX, 0)
    libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
    try:
        yield
    finally:
        for parameter, value in _GLIBC_DEFAULTS.items():
            libc.mallopt(parameter, value)
        libc.malloc_trim(0)


@cache
def _glibc() -> ctypes.CDLL | None:
    if platform.system() != "Linux":
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 - glibc only: musl has mallopt as a stub
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        return libc
    except (OSError, AttributeError):
        return None


@dataclass
class PendingCodes:
    """Codes on their way to host memory; ``numpy()`` waits for the copy to land."""

    tensor: torch.Tensor
    event: torch.cuda.Event | None = None

    def numpy(self) -> np.ndarray:
        if self.event is not None:
            self.event.synchronize()
        return self.tensor.numpy()


class Encoder:
    """Runs the truncated backbone: uint8 (B, 3, H, W) in, codes (B, dim) out.

    An extractor returning several layers gives their codes side by side, in its order
    (B, sum of dims): one array flows through the finiteness check, the fp32 retry and
    the copy back, and the writer splits it into one store per layer.

    ``fp32`` builds the same network computing in fp32 from the weights as loaded (not
    rounded to this encoder's precision): a fp16/bf16 run recomputes with it the rows whose
    codes came out NaN or inf. Built only when first needed, it costs nothing otherwise.
    """

    def __init__(
        self,
        extractor: nn.Module,
        preprocessing: Preprocessing,
        device: torch.device,
        precision: str,
        store_dtype: str,
        channels_last: bool = True,
        compile_batch: int | None = None,
        fp32: Callable[[], Encoder] | None = None,
    ) -> None:
        self.device = device
        self.dtype = DTYPES[precision]
        self.store_dtype = getattr(torch, store_dtype)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        model = extractor.to(device=device, dtype=self.dtype, memory_format=self.memory_format)
        self.model = model.eval()
        scale = torch.tensor(preprocessing.std, dtype=torch.float32, device=device) * 255.0
        shift = torch.tensor(preprocessing.mean, dtype=torch.float32, device=device) * 255.0
        self._scale = scale.view(1, 3, 1, 1)
        self._shift = shift.view(1, 3, 1, 1)
        self._forward = self._run
        self._make_fp32 = fp32
        self._fp32: Encoder | None = None
        # A compiled graph is specialised to one batch shape: short batches are padded.
        self._pad_to = compile_batch
        if compile_batch is not None:
            self._forward = torch.compile(
                self._run, mode="max-autotune-no-cudagraphs", dynamic=False
            )

    def fp32(self) -> Encoder | None:
        """The same network computing in fp32, built on first use; None if not given."""
        if self._fp32 is None and self._make_fp32 is not None:
            self._fp32 = self._make_fp32()
        return self._fp32

    def _run(self, pixels: torch.Tensor) -> torch.Tensor:
        # Reorder while still uint8 (a quarter of the bytes); elementwise ops keep the layout.
        pixels = pixels.contiguous(memory_format=self.memory_format)
        normalised = (pixels.float() - self._shift) / self._scale
        batch = normalised.to(dtype=self.dtype).contiguous(memory_format=self.memory_format)
        outputs = list(self.model(batch).values())
        codes = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=1)
        return codes.to(self.store_dtype)

    @torch.inference_mode()
    def __call__(self, pixels: torch.Tensor) -> PendingCodes:
        rows = pixels.shape[0]
        pixels = pixels.to(self.device, non_blocking=True)
        if self._pad_to is not None and rows < self._pad_to:
            padding = pixels.new_zeros((self._pad_to - rows, *pixels.shape[1:]))
            pixels = torch.cat([pixels, padding])
        if self.device.type != "cuda":
            return PendingCodes(self._forward(pixels)[:rows].contiguous())
        with _cuda_settings(tf32=self.dtype != torch.float32):
            codes = self._forward(pixels)[:rows]
        host = torch.empty(codes.shape, dtype=codes.dtype, pin_memory=True)
        host.copy_(codes, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        return PendingCodes(host, event)


@contextlib.contextmanager
def _cuda_settings(tf32: bool) -> Iterator[None]:
    """cuDNN autotuning for our fixed batch shapes; no TF32 when fp32 was asked for.

    Both are process-wide switches, so they are set around each forward pass and put back.
    TF32 convolutions are cuDNN's default and carry fp16-sized errors: ``precision: fp32``
    (the reference the benchmark measures the other precisions against) must mean fp32.
    """
    saved = (
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.allow_tf32,
        torch.backends.cuda.matmul.allow_tf32,
    )
    torch.backends.cudnn.benchmark = True
    if not tf32:
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        (
            torch.backends.cudnn.benchmark,
            torch.backends.cudnn.allow_tf32,
            torch.backends.cuda.matmul.allow_tf32,
        ) = saved
