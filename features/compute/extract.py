"""Runner: wire reader, mapper and writer together for the images the stores lack.

One run is one backbone: every layer asked of it comes out of the same forward pass and
goes to its own store. Only (image, layer) pairs a store neither holds nor records as a
permanent failure are computed, so a rerun after a crash, a grown dataset, a new layer or
a relabelling does only new work: images are grouped by the layers they lack, and each
group runs with an extractor for those layers only.
Every batch's codes are checked for NaN and inf before they reach the store
(:class:`FiniteGuard`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from features.compute.backend import Backend, random_weights_banner, resolve_backend
from features.compute.config import ExtractConfig, ExtractReport
from features.compute.encoder import (
    Encoder,
    PendingCodes,
    cpu_allocator_tuned,
)
from features.compute.finite import FiniteGuard
from features.compute.loader import Batch, ImageRef, make_loader
from features.compute.prefetch import ReadyBatch, prefetch, prepare_batch
from features.data.images import ImageLimits
from features.data.preprocess import Preprocessing
from features.progress import progress as show_progress
from features.store import StoreWriter
from features.store.committer import CommitStats, Committer
from features.store.fanout import StoreFanout

__all__ = ["compile_batch", "extract_codes", "open_run", "run_loader", "store_roots"]


def _workers(config: ExtractConfig, device: torch.device) -> int:
    """Decode processes: all cores but one feed a GPU; on CPU the prefetch thread decodes.

    On CPU every core already runs the forward pass, so a decode process only competes
    with it; decoding in the prefetch thread (PIL releases the GIL) costs the same CPU
    time without the process start and the pickling (7% faster end to end, 2 cores).
    """
    if config.num_workers is not None:
        return config.num_workers
    cores = os.cpu_count() or 1
    return max(0, cores - 1) if device.type == "cuda" else 0


def run_loader(
    refs: Sequence[ImageRef], config: ExtractConfig, limits: ImageLimits, device: torch.device
) -> DataLoader:
    """Batches of ``refs`` as ``config`` asks: size, decode workers, decode on the device."""
    return make_loader(
        refs,
        config.preprocessing,
        limits,
        config.batch_size,
        _workers(config, device),
        pin_memory=device.type == "cuda",
        raw_jpeg=config.gpu_decode and device.type == "cuda",
    )


def compile_batch(config: ExtractConfig, device: torch.device, pending: int) -> int | None:
    wanted = config.compile == "on" or (
        config.compile == "auto" and device.type == "cuda" and pending >= config.compile_min_images
    )
    return config.batch_size if wanted else None


@dataclass
class Run:
    """Locked stores, the images each group of layers still lacks, and the report."""

    stores: StoreFanout
    groups: list[tuple[tuple[str, ...], list[ImageRef]]]  # (layers lacking, images), in order
    report: ExtractReport

    @property
    def pending(self) -> list[ImageRef]:
        return [ref for _, refs in self.groups for ref in refs]


def _group_by_missing(
    unique: Sequence[ImageRef], stores: StoreFanout
) -> list[tuple[tuple[str, ...], list[ImageRef]]]:
    """Images by the layers they lack, manifest order kept within each group, so each
    group forms the batches a clean run forms (runs at whole-commit boundaries)."""
    groups: dict[tuple[str, ...], list[ImageRef]] = {}
    for ref in unique:
        missing = stores.missing(ref.sha256)
        if missing:
            groups.setdefault(missing, []).append(ref)
    return list(groups.items())


def store_roots(stores: Path | Mapping[str, Path], backend: Backend) -> dict[str, Path]:
    """``{layer: store root}``; a bare path is the store of a one-layer run."""
    if isinstance(stores, Mapping):
        return dict(stores)
    return {backend.layers[0]: Path(stores)} if len(backend.layers) == 1 else {}


@contextmanager
def open_run(
    refs: Sequence[ImageRef],
    stores: Mapping[str, Path],
    config: ExtractConfig,
    backend: Backend,
    log: Callable[[str], None],
) -> Iterator[Run]:
    """Take every store's writer lock and work out what is pending; times the run on exit."""
    started = time.perf_counter()
    if backend.weights.is_random:
        log(random_weights_banner(backend.weights.identity))
    unique = list({ref.sha256: ref for ref in reversed(refs)}.values())[::-1]
    writers = {
        layer: StoreWriter(stores[layer], fingerprint, config.compression, log=log)
        for layer, fingerprint in backend.fingerprints.items()
    }
    with StoreFanout(writers, backend.columns()) as fanout:
        groups = _group_by_missing(unique, fanout)
        lacking = {ref.sha256 for _, group in groups for ref in group}
        skipped_everywhere = sum(
            all(ref.sha256 in writer.skipped for writer in writers.values()) for ref in unique
        )
        report = ExtractReport(
            images=len(unique),
            reused=sum(ref.sha256 not in lacking for ref in unique) - skipped_everywhere,
            computed=0,
            skipped=skipped_everywhere,
            retry_later=0,
            seconds=0.0,
            device=str(backend.device),
            precision=backend.precision,
            random_weights=backend.weights.is_random,
            fingerprints=dict(backend.fingerprints),
        )
        try:
            yield Run(fanout, groups, report)
        finally:
            report.seconds = time.perf_counter() - started


def extract_codes(
    refs: Sequence[ImageRef],
    stores: Path | Mapping[str, Path],
    config: ExtractConfig,
    limits: ImageLimits,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> ExtractReport:
    """Compute codes for every image in ``refs`` that a store does not hold yet.

    ``stores`` maps layer names of ``config.backbone`` to store roots, all filled from one
    forward pass; a bare path is one store of the backbone's default layer.
    """
    started = time.perf_counter()
    layers = list(stores) if isinstance(stores, Mapping) else None
    backend = resolve_backend(config, layers)
    with open_run(refs, store_roots(stores, backend), config, backend, log) as run:
        report = run.report
        for layers_lacking, pending in run.groups:
            group = backend.with_layers(layers_lacking)
            device = backend.device
            encoder = group.encoder(config, compile_batch(config, device, len(pending)))
            loader = run_loader(pending, config, limits, device)
            committer = Committer(
                run.stores.subset(layers_lacking), config.commit_rows, config.commit_seconds
            )
            guard = FiniteGuard(encoder)
            timings: dict[str, float] = {}
            report.timings.setdefault("setup", time.perf_counter() - started)
            with cpu_allocator_tuned(device):
                stats = _drain(
                    loader,
                    encoder,
                    committer,
                    config.preprocessing,
                    limits,
                    progress,
                    timings,
                    guard,
                )
            report.add_timings(timings, stats.rows)
            report.record(
                layers_lacking, stats.rows, stats.skipped, stats.transient_failures, guard.stats
            )
    return report


def _drain(
    loader: Iterable[Batch],
    encoder: Encoder,
    committer: Committer,
    preprocessing: Preprocessing,
    limits: ImageLimits,
    progress: bool,
    timings: dict[str, float] | None = None,
    guard: FiniteGuard | None = None,
) -> CommitStats:
    """Encode every batch, check it and hand it to the committer; commit what is done on exit.

    Three things overlap: the loader (and any device decode) runs ahead in a prefetch
    thread, the forward pass runs here, and the committer thread writes finished codes.
    A batch is checked (``guard``) only once the next one's forward pass is queued, so on
    CUDA reading its codes back never leaves the device idle. Batches are submitted in
    order, so what is committed is always the same first batches an uninterrupted run
    forms (which keeps a resumed CPU run bit-identical).
    """
    guard = FiniteGuard(encoder) if guard is None else guard
    timings = {} if timings is None else timings
    total = len(loader.dataset) if hasattr(loader, "dataset") else None
    bar = show_progress(total, "extract", enabled=progress)

    def prepare(batch: Batch) -> ReadyBatch:
        return prepare_batch(batch, preprocessing, limits, encoder.device)

    started = time.perf_counter()
    held: tuple[ReadyBatch, PendingCodes | None] | None = None  # computed, not yet checked
    try:
        for ready in prefetch(loader, prepare, encoder.device):
            codes = _forward(encoder, ready, timings, started)
            if held is not None:
                committer.submit(*guard(*held))
            held = ready, codes
            bar.update(ready.images)
    except Exception:
        held = None  # a failed run commits the batches checked before the failure only
        raise
    finally:
        try:
            if held is not None:  # the last batch; on Ctrl-C, the last one computed
                committer.submit(*guard(*held))
        finally:
            # Runs on Ctrl-C too: every batch already computed is committed before exiting.
            bar.close()
            stats = committer.close()
            timings["drain"] = time.perf_counter() - started
    return stats


def _forward(
    encoder: Encoder, ready: ReadyBatch, timings: dict[str, float], started: float
) -> PendingCodes | None:
    """The batch's forward pass; the first one is timed apart (compile, autotuning)."""
    if not ready.hashes:
        return None
    if "warm_up_done" in timings:
        return encoder(ready.pixels)
    timings["first_batch"] = time.perf_counter() - started
    codes = encoder(ready.pixels)  # compiles, autotunes: returns when done
    timings["warm_up_done"] = time.perf_counter() - started
    timings["warm_up"] = timings["warm_up_done"] - timings["first_batch"]
    timings["warm_up_rows"] = len(ready.hashes)
    return codes
