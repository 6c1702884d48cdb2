"""Mapper: uint8 pixel batches to codes on the chosen device and precision.

Normalisation happens here, on the device, so the loader ships uint8 (4x fewer bytes over
PCIe than float32). Results are copied back without blocking: the returned
:class:`PendingCodes` is only waited on by the writer thread, so the next batch's forward
pass is already queued while this one is being copied and committed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from features.preprocess import Preprocessing

__all__ = ["DTYPES", "Encoder", "PendingCodes", "resolve_device", "resolve_precision"]

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(setting: str) -> torch.device:
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(setting)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"extract.device={setting!r} but torch sees no CUDA device")
    return device


def resolve_precision(setting: str, device: torch.device) -> str:
    """``auto`` is fp16 on CUDA (tensor cores, 9e-4 relative error) and fp32 on CPU."""
    if setting != "auto":
        return setting
    return "fp16" if device.type == "cuda" else "fp32"


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
    """Runs the truncated backbone: uint8 (B, 3, H, W) in, codes (B, dim) out."""

    def __init__(
        self,
        extractor: nn.Module,
        preprocessing: Preprocessing,
        device: torch.device,
        precision: str,
        store_dtype: str,
        channels_last: bool = True,
        compile_batch: int | None = None,
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
        # A compiled graph is specialised to one batch shape: short batches are padded.
        self._pad_to = compile_batch
        if compile_batch is not None:
            self._forward = torch.compile(
                self._run, mode="max-autotune-no-cudagraphs", dynamic=False
            )

    def _run(self, pixels: torch.Tensor) -> torch.Tensor:
        normalised = (pixels.float() - self._shift) / self._scale
        batch = normalised.to(dtype=self.dtype).contiguous(memory_format=self.memory_format)
        return self.model(batch)["codes"].to(self.store_dtype)

    @torch.inference_mode()
    def __call__(self, pixels: torch.Tensor) -> PendingCodes:
        rows = pixels.shape[0]
        pixels = pixels.to(self.device, non_blocking=True)
        if self._pad_to is not None and rows < self._pad_to:
            padding = pixels.new_zeros((self._pad_to - rows, *pixels.shape[1:]))
            pixels = torch.cat([pixels, padding])
        codes = self._forward(pixels)[:rows]
        if self.device.type != "cuda":
            return PendingCodes(codes.contiguous())
        host = torch.empty(codes.shape, dtype=codes.dtype, pin_memory=True)
        host.copy_(codes, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        return PendingCodes(host, event)
