"""Our side: extract_codes end to end, the encoder alone, and our loader alone."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch

from bench.extract.machine import GpuSampler, sync


def build_model(config) -> torch.nn.Module:
    """The truncated backbone with the configured weights (random unless --weights says)."""
    from features.compute.backbones import build_extractor, get_backbone
    from features.compute.weights import resolve_weights

    spec = get_backbone(config.backbone)
    weights = resolve_weights(spec, config.weights, config.seed, config.weights_sha256)
    return build_extractor(spec, weights.state_dict, config.seed)


def run_ours(refs, config, limits, store: Path, device: torch.device) -> dict[str, object]:
    from features.compute.extract import extract_codes

    messages: list[str] = []
    with GpuSampler(device) as sampler:
        started = time.perf_counter()
        report = extract_codes(refs, store, config, limits, progress=False, log=messages.append)
        seconds = time.perf_counter() - started
    if report.computed + report.skipped != len({ref.sha256 for ref in refs}):
        raise RuntimeError(f"extract did not cover every image: {report.summary()}")
    return {
        "seconds": seconds,
        "images": report.computed,
        "skipped": report.skipped,
        "precision": report.precision,
        "random_weights": report.random_weights,
        "timings": {name: round(value, 3) for name, value in report.timings.items()},
        "steady_images_per_s": report.steady_images_per_second or None,  # None: one batch
        "gpu_utilisation": sampler.summary(),
    }


def measure_decode(refs, config, limits, device: torch.device, keep: set[str]):
    """Our loader alone (CPU workers), and the device decode path when asked for."""
    from features.compute.extract import _workers
    from features.compute.loader import make_loader
    from features.compute.prefetch import prefetch, prepare_batch

    workers = _workers(config, device)
    loader = make_loader(
        refs, config.preprocessing, limits, config.batch_size, workers, pin_memory=False
    )
    pixels: dict[str, torch.Tensor] = {}
    started = time.perf_counter()
    count = 0
    for batch in loader:
        count += len(batch.hashes)
        for sha, row in zip(batch.hashes, batch.pixels, strict=True):
            if sha in keep:
                pixels[sha] = row.clone()
    seconds = time.perf_counter() - started
    result: dict[str, object] = {
        "pil_loader": {
            "images_per_s": count / seconds,
            "seconds": seconds,
            "workers": workers,
            "what": "read + sha256 check + PIL decode (draft) + resize/crop to uint8, collated",
        }
    }
    if config.gpu_decode:
        loader = make_loader(
            refs,
            config.preprocessing,
            limits,
            config.batch_size,
            workers,
            pin_memory=device.type == "cuda",
            raw_jpeg=True,
        )

        def prepare(batch):
            return prepare_batch(batch, config.preprocessing, limits, device)

        prepare(next(iter(loader)))  # warm-up: nvJPEG handles, CUDA kernels
        sync(device)
        started = time.perf_counter()
        count = 0
        for ready in prefetch(loader, prepare, device):
            count += len(ready.hashes)
        sync(device)
        seconds = time.perf_counter() - started
        where = "" if device.type == "cuda" else " (extract uses it on CUDA only)"
        result["device_decoder"] = {
            "images_per_s": count / seconds,
            "seconds": seconds,
            "workers": workers,
            "what": f"workers read bytes; torchvision decode_jpeg on {device} + batched "
            f"resize/crop: the --gpu-decode path{where}",
        }
    return result, pixels


class ModelProbe:
    """Our encoder on uint8 batches already in host memory: the forward-pass ceiling.

    Built once (it compiles exactly when extract would for a run of ``images`` images)
    and timed once per round, so a busy spell on a shared machine shows as spread.
    """

    def __init__(self, config, device: torch.device, images: int) -> None:
        from features.compute.encoder import Encoder, cpu_allocator_tuned, resolve_precision
        from features.compute.extract import compile_batch

        self.device = device
        self.batch_size = config.batch_size
        self.precision = resolve_precision(config.precision, device)
        self.compiled = compile_batch(config, device, images) is not None
        self.encoder = Encoder(
            build_model(config),
            config.preprocessing,
            device,
            self.precision,
            config.dtype,
            config.channels_last,
            config.batch_size if self.compiled else None,
        )
        self.channels_last = config.channels_last
        crop = config.preprocessing.crop
        generator = torch.Generator().manual_seed(0)
        self.pixels = torch.randint(
            0, 256, (config.batch_size, 3, crop, crop), dtype=torch.uint8, generator=generator
        )
        if device.type == "cuda":
            self.pixels = self.pixels.pin_memory()
        self._tuned = lambda: cpu_allocator_tuned(device)
        started = time.perf_counter()
        with self._tuned():
            for _ in range(2):  # compile, cuDNN autotuning, allocator warm-up
                self.encoder(self.pixels).numpy()
        self.warm_up_seconds = time.perf_counter() - started
        self.rates: list[float] = []

    def measure(self, seconds: float) -> float:
        in_flight: list = []
        batches = 0
        with self._tuned():
            started = time.perf_counter()
            while batches < 2 or time.perf_counter() - started < seconds:
                in_flight.append(self.encoder(self.pixels))
                batches += 1
                if len(in_flight) > 4:  # keep the host at most a few batches ahead
                    in_flight.pop(0).numpy()
            for pending in in_flight:
                pending.numpy()
            sync(self.device)
            elapsed = time.perf_counter() - started
        self.rates.append(batches * self.batch_size / elapsed)
        return self.rates[-1]

    def summary(self) -> dict[str, object]:
        return {
            "images_per_s": statistics.median(self.rates),
            "per_round": self.rates,
            "batch_size": self.batch_size,
            "precision": self.precision,
            "channels_last": self.channels_last,
            "compiled": self.compiled,
            "warm_up_seconds": self.warm_up_seconds,
            "what": "Encoder.__call__ on a uint8 batch in (pinned) host memory: copy to the "
            "device, normalise, forward, codes back to the host",
        }
