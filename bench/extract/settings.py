"""What the flags come to on this machine: device, extract config, precision, rounds."""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import torch

from bench.extract.naive import NAIVE_BATCH

if TYPE_CHECKING:
    from features.compute.config import ExtractConfig
    from features.data.images import ImageLimits


@dataclass(frozen=True)
class Setup:
    device: torch.device
    config: ExtractConfig
    precision: str  # resolved: what "auto" means here
    rounds: int
    limits: ImageLimits

    def record(self) -> dict[str, object]:
        """The JSON's settings: our config as resolved, and what the naive loop fixes."""
        settings = asdict(self.config)
        settings.update(
            resolved_precision=self.precision,
            rounds=self.rounds,
            round_order="odd rounds naive, ours, model; even rounds model, ours, naive",
            naive_batch_size=NAIVE_BATCH,
            naive_num_workers=0,
            naive_precision="fp32",
        )
        return settings


def resolve_setup(args: argparse.Namespace) -> Setup:
    from features.compute.config import ExtractConfig
    from features.compute.encoder import resolve_device, resolve_precision
    from features.data.images import ImageLimits
    from features.data.preprocess import Preprocessing

    device = resolve_device(args.device)
    config = ExtractConfig(
        weights=args.weights,
        seed=0,
        device=str(device),
        precision=args.precision,
        batch_size=args.batch_size or (256 if device.type == "cuda" else 64),
        num_workers=args.num_workers,
        channels_last=not args.no_channels_last,
        compile=args.compile,
        gpu_decode=args.gpu_decode,
        preprocessing=Preprocessing(),
    )
    precision = resolve_precision(config.precision, device)
    rounds = args.rounds or (1 if device.type == "cuda" else 3)
    return Setup(device, config, precision, rounds, ImageLimits())
