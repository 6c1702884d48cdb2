"""Where and how the network computes: device, mixed precision, loader workers.

Resolved once from ``extract:``, as ``extract`` resolves them: fp16 autocast on CUDA
(with a gradient scaler, since fp16 gradients underflow), bf16 on CPUs that have it
natively, fp32 elsewhere. Mixed precision is a setting of the loop, not a second loop.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch

from features.compute.config import ExtractConfig
from features.compute.encoder import DTYPES, resolve_device, resolve_precision

__all__ = ["Runtime", "resolve_runtime"]


@dataclass(frozen=True)
class Runtime:
    """The device, the autocast precision and the loader settings of one run."""

    device: torch.device
    precision: str  # fp32 | fp16 | bf16: the dtype autocast computes in
    channels_last: bool
    workers: int  # decode processes

    @property
    def pin_memory(self) -> bool:
        return self.device.type == "cuda"

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed precision for the forward pass; nothing at all in fp32."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=DTYPES[self.precision])

    def scaler(self) -> torch.amp.GradScaler:
        """Loss scaling for fp16 gradients; a pass-through otherwise."""
        return torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")

    def describe(self) -> str:
        layout = ", channels_last" if self.channels_last else ""
        return f"{self.device}, {self.precision}{layout}"


def resolve_runtime(config: ExtractConfig) -> Runtime:
    """``extract:``'s device, precision and layout; decode workers feed a GPU only.

    On CPU every core already runs the forward and backward passes, so decoding stays in
    the main process there (``extract`` makes the same choice).
    """
    device = resolve_device(config.device)
    workers = config.num_workers
    if workers is None:
        workers = max(0, (os.cpu_count() or 1) - 1) if device.type == "cuda" else 0
    return Runtime(
        device, resolve_precision(config.precision, device), config.channels_last, workers
    )
