"""Runner: wire reader, mapper and writer together for the images the store lacks.

Only images whose hash is neither stored nor recorded as a permanent failure are
computed, so a rerun after a crash, a grown dataset or a relabelling does only new work.
Every batch's codes are checked for NaN and inf before they reach the store
(:class:`FiniteGuard`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torchvision
from torch.utils.data import DataLoader

from features.compute.backbones import BACKBONES, BackboneSpec, build_extractor, get_backbone
from features.compute.encoder import (
    DTYPES,
    Encoder,
    PendingCodes,
    cpu_allocator_tuned,
    resolve_device,
    resolve_precision,
)
from features.compute.loader import Batch, Failure, ImageRef, decode_item, make_loader
from features.compute.prefetch import ReadyBatch, prefetch, prepare_batch
from features.compute.weights import ResolvedWeights, identify_weights
from features.data.images import ImageLimits
from features.data.preprocess import Preprocessing
from features.errors import UserError
from features.progress import progress as show_progress
from features.store import StoreWriter
from features.store.committer import CommitStats, Committer
from features.store.fingerprint import Fingerprint

__all__ = [
    "NON_FINITE",
    "Backend",
    "CheckedBatch",
    "DaskConfig",
    "ExtractConfig",
    "ExtractReport",
    "FiniteGuard",
    "FiniteStats",
    "encode_files",
    "encode_images",
    "extract_codes",
    "make_fingerprint",
    "open_run",
    "random_weights_banner",
    "resolve_backend",
]


@dataclass(frozen=True)
class DaskConfig:
    """Where extraction scales out to when ``extract.scheduler`` is ``dask``."""

    address: str | None = None  # a running scheduler (tcp://host:8786); None: a local cluster
    workers: int = field(default=2, metadata={"min": 1})  # processes of the local cluster
    partition_rows: int = field(default=2048, metadata={"min": 1})  # images per task and shard


@dataclass(frozen=True)
class ExtractConfig:
    """How codes are computed and committed (``extract:`` in params.yaml)."""

    backbone: str = field(default="vgg16", metadata={"choices": tuple(BACKBONES)})
    weights: str = "imagenet"  # imagenet | random | path to a state-dict file
    weights_sha256: str | None = None  # pin for a local weights file
    seed: int = 0  # random weights only
    device: str = "auto"  # auto picks CUDA when present; or cpu, cuda, cuda:1
    precision: str = field(default="auto", metadata={"choices": ("auto", *DTYPES)})
    batch_size: int = field(default=64, metadata={"min": 1})
    num_workers: int | None = field(default=None, metadata={"min": 0})  # None: see _workers
    channels_last: bool = True  # 1.6x on CPU, and what fast fp16 convolutions want on GPU
    compile: str = field(default="auto", metadata={"choices": ("auto", "on", "off")})
    compile_min_images: int = field(default=1_000_000, metadata={"min": 0})  # ~80 s to repay
    gpu_decode: bool = False  # nvJPEG on the device, PIL fallback for anything else
    dtype: str = field(default="float16", metadata={"choices": ("float16", "float32")})
    compression: str | None = field(default=None, metadata={"choices": (None, "lzf", "gzip")})
    commit_rows: int = field(default=4096, metadata={"min": 1})
    commit_seconds: float = field(default=60.0, metadata={"min_exclusive": 0})  # max loss
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    scheduler: str = field(default="local", metadata={"choices": ("local", "dask")})
    dask: DaskConfig = field(default_factory=DaskConfig)


NON_FINITE = "non_finite"  # skip reason: the image's codes hold NaN or inf, even in fp32


@dataclass
class FiniteStats:
    """What the finiteness check did: rows kept from an fp32 retry, images skipped."""

    recomputed: int = 0
    skipped: int = 0


@dataclass
class ExtractReport:
    """What one extract run did; ``reused + computed + skipped`` covers every unique image."""

    images: int
    reused: int
    computed: int
    skipped: int
    retry_later: int
    seconds: float
    device: str
    precision: str
    random_weights: bool
    fingerprint: Fingerprint
    failures: list[dict[str, str]] = field(default_factory=list)
    non_finite: int = 0  # of ``skipped``: found this run with NaN or inf codes, fp32 too
    recomputed_fp32: int = 0  # of ``computed``: NaN or inf in fp16/bf16, finite in fp32
    # Where the seconds went: "setup" (weights, model, store, loader), "first_batch" (until
    # the first pixels reached the encoder), "warm_up" (its forward pass: compile, cuDNN
    # autotuning), "drain" (the whole loop, last commit included).
    timings: dict[str, float] = field(default_factory=dict)
    warm_rows: int = 0  # codes computed after the warm-up batch

    @property
    def steady_images_per_second(self) -> float:
        """Throughput once the first batch's forward pass is done: no setup, no compile."""
        steady = self.timings.get("drain", 0.0) - self.timings.get("warm_up_done", 0.0)
        return self.warm_rows / steady if steady > 0 else 0.0

    @property
    def images_per_second(self) -> float:
        return self.computed / self.seconds if self.seconds > 0 else 0.0

    def record(
        self, rows: int, skipped: int, retry: Sequence[Failure], finite: FiniteStats
    ) -> None:
        """Add what a drain (or a Dask partition) committed."""
        self.computed += rows
        self.skipped += skipped
        self.non_finite += finite.skipped
        self.recomputed_fp32 += finite.recomputed
        self.retry_later += len(retry)
        self.failures.extend(
            {"sha256": f.sha256, "reason": f.reason, "detail": f.detail} for f in retry
        )

    def summary(self) -> str:
        weights = "RANDOM WEIGHTS" if self.random_weights else self.fingerprint.weights[:19]
        return (
            f"extract: reused {self.reused}, computed {self.computed}"
            + (f" ({self.recomputed_fp32} in fp32)" if self.recomputed_fp32 else "")
            + f", skipped {self.skipped}"
            + (f" ({self.non_finite} with NaN or inf codes)" if self.non_finite else "")
            + (f", retry later {self.retry_later}" if self.retry_later else "")
            + f" ({self.images_per_second:.1f} images/s on {self.device}, {self.precision}, "
            f"{weights})"
        )


def random_weights_banner(identity: str) -> str:
    return (
        f"NOTE: {identity} - codes come from RANDOM weights, not ImageNet. They exercise the "
        f"pipeline; any accuracy built on them says nothing about transfer learning."
    )


def make_fingerprint(config: ExtractConfig, weights_identity: str, precision: str) -> Fingerprint:
    spec = get_backbone(config.backbone)
    return Fingerprint(
        backbone=spec.name,
        layer=spec.node,
        dim=spec.dim,
        weights=weights_identity,
        preprocessing=json.dumps(config.preprocessing.describe(), sort_keys=True),
        precision=precision,
        dtype=config.dtype,
        torch=torch.__version__.split("+")[0],
        torchvision=torchvision.__version__.split("+")[0],
    )


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


def _loader(
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


def _compile_batch(config: ExtractConfig, device: torch.device, pending: int) -> int | None:
    wanted = config.compile == "on" or (
        config.compile == "auto" and device.type == "cuda" and pending >= config.compile_min_images
    )
    return config.batch_size if wanted else None


@dataclass(frozen=True)
class Backend:
    """What a run computes with, resolved once: network, device, precision and weights."""

    spec: BackboneSpec
    device: torch.device
    precision: str
    weights: ResolvedWeights
    fingerprint: Fingerprint

    def encoder(self, config: ExtractConfig, compile_batch: int | None = None) -> Encoder:
        """The network on the device; in fp16/bf16 it can build its fp32 twin for retries."""
        extractor = build_extractor(self.spec, self.weights.state_dict, config.seed)
        twin = replace(self, precision="fp32")
        return Encoder(
            extractor,
            config.preprocessing,
            self.device,
            self.precision,
            config.dtype,
            config.channels_last,
            compile_batch,
            fp32=None if self.precision == "fp32" else partial(twin.encoder, config),
        )


def resolve_backend(config: ExtractConfig) -> Backend:
    """Fetch and verify weights, pick device and precision, and fingerprint the result.

    Nothing heavy happens here: the tensors load, and the network is built, only in
    :meth:`Backend.encoder`, after the store has accepted the lock and the fingerprint.
    """
    spec = get_backbone(config.backbone)
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    weights = identify_weights(spec, config.weights, config.seed, config.weights_sha256)
    fingerprint = make_fingerprint(config, weights.identity, precision)
    return Backend(spec, device, precision, weights, fingerprint)


@dataclass
class Run:
    """A locked store, the images it still lacks, and the report being filled in."""

    writer: StoreWriter
    pending: list[ImageRef]
    report: ExtractReport


@contextmanager
def open_run(
    refs: Sequence[ImageRef],
    store_root: Path,
    config: ExtractConfig,
    backend: Backend,
    log: Callable[[str], None],
) -> Iterator[Run]:
    """Take the writer lock and work out what is pending; times the run on exit."""
    started = time.perf_counter()
    if backend.weights.is_random:
        log(random_weights_banner(backend.weights.identity))
    unique = list({ref.sha256: ref for ref in reversed(refs)}.values())[::-1]
    with StoreWriter(store_root, backend.fingerprint, config.compression, log=log) as writer:
        known, skipped = writer.known, writer.skipped
        pending = [ref for ref in unique if ref.sha256 not in known and ref.sha256 not in skipped]
        report = ExtractReport(
            images=len(unique),
            reused=sum(ref.sha256 in known for ref in unique),
            computed=0,
            skipped=sum(ref.sha256 in skipped for ref in unique),
            retry_later=0,
            seconds=0.0,
            device=str(backend.device),
            precision=backend.precision,
            random_weights=backend.weights.is_random,
            fingerprint=backend.fingerprint,
        )
        try:
            yield Run(writer, pending, report)
        finally:
            report.seconds = time.perf_counter() - started


class CheckedBatch(NamedTuple):
    """A batch's finite codes, ready to commit, and every image of it that got none."""

    hashes: list[str]
    codes: PendingCodes | None
    failures: list[Failure]


def _finite_rows(codes: np.ndarray) -> np.ndarray:
    return np.isfinite(codes).all(axis=1)


class FiniteGuard:
    """Keeps NaN and inf out of the store, one batch at a time, right after its forward pass.

    Rows are checked in the store's dtype, so a value past float16's range counts as inf.
    Under fp16/bf16 a non-finite row is recomputed once in fp32 (a narrow range or mantissa
    is the usual cause) and kept if finite now; otherwise its image becomes a permanent
    ``non_finite`` skip, as the same bytes and fingerprint give the same codes again.
    Finite rows are never recomputed, so they equal a clean run's bit for bit. A batch
    without a single finite row points at the settings rather than the images: the run
    stops; a lone image in a batch of one, after finite batches, is only skipped.
    """

    def __init__(self, encoder: Encoder) -> None:
        self.encoder = encoder
        self.stats = FiniteStats()
        self._finite_seen = False

    def __call__(self, ready: ReadyBatch, codes: PendingCodes | None) -> CheckedBatch:
        if codes is None:
            return CheckedBatch(ready.hashes, None, ready.failures)
        rows = codes.numpy()
        finite = _finite_rows(rows)
        if finite.all():
            self._finite_seen = True
            return CheckedBatch(ready.hashes, codes, ready.failures)
        fp32 = self.encoder.fp32()
        if fp32 is not None:
            rows, finite = self._recompute(fp32, ready.pixels, rows, finite)
        if not finite.any() and (len(rows) > 1 or not self._finite_seen):
            raise UserError(
                f"every image of a batch gave NaN or inf codes"
                f"{' (also recomputed in fp32)' if fp32 else ''}: check extract.preprocessing "
                f"(std must be > 0) and the weights. What was computed before is committed."
            )
        detail = "codes hold NaN or inf" + (", also recomputed in fp32" if fp32 else "")
        skips = [
            Failure(ready.hashes[i], NON_FINITE, detail, permanent=True)
            for i in np.flatnonzero(~finite)
        ]
        self.stats.skipped += len(skips)
        self._finite_seen = self._finite_seen or bool(finite.any())
        kept = np.flatnonzero(finite)
        return CheckedBatch(
            [ready.hashes[i] for i in kept],
            PendingCodes(torch.from_numpy(rows[kept])),
            ready.failures + skips,
        )

    def _recompute(
        self, fp32: Encoder, pixels: torch.Tensor, rows: np.ndarray, finite: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Rows and their finiteness once the non-finite ones are recomputed in fp32."""
        bad = np.flatnonzero(~finite)
        again = fp32(pixels[bad.tolist()]).numpy()
        now_finite = _finite_rows(again)
        rows, finite = rows.copy(), finite.copy()
        rows[bad[now_finite]] = again[now_finite]
        finite[bad[now_finite]] = True
        self.stats.recomputed += int(now_finite.sum())
        return rows, finite


def extract_codes(
    refs: Sequence[ImageRef],
    store_root: Path,
    config: ExtractConfig,
    limits: ImageLimits,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> ExtractReport:
    """Compute codes for every image in ``refs`` that the store does not hold yet."""
    started = time.perf_counter()
    backend = resolve_backend(config)
    with open_run(refs, store_root, config, backend, log) as run:
        report = run.report
        if run.pending:
            device = backend.device
            encoder = backend.encoder(config, _compile_batch(config, device, len(run.pending)))
            loader = _loader(run.pending, config, limits, device)
            committer = Committer(run.writer, config.commit_rows, config.commit_seconds)
            guard = FiniteGuard(encoder)
            report.timings["setup"] = time.perf_counter() - started
            with cpu_allocator_tuned(device):
                stats = _drain(
                    loader,
                    encoder,
                    committer,
                    config.preprocessing,
                    limits,
                    progress,
                    report.timings,
                    guard,
                )
            report.warm_rows = stats.rows - int(report.timings.pop("warm_up_rows", 0))
            report.record(stats.rows, stats.skipped, stats.transient_failures, guard.stats)
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


def _checked_backend(config: ExtractConfig, expected: Fingerprint | None) -> Backend:
    """The backend, refused unless it computes codes as ``expected`` says.

    A head applied to codes computed any other way gives meaningless answers.
    """
    backend = resolve_backend(config)
    if expected is not None:
        expected.require_same(
            backend.fingerprint,
            "the head",
            ours="it was trained on",
            theirs="extract params now compute",
            fix="Set extract back to what the head was trained with, or retrain the head.",
        )
    return backend


def _checked_batches(batches: Iterable[ReadyBatch], encoder: Encoder) -> Iterator[CheckedBatch]:
    """Each batch's forward pass, checked by :class:`FiniteGuard` as ``extract`` checks it."""
    guard = FiniteGuard(encoder)
    with cpu_allocator_tuned(encoder.device):
        for ready in batches:
            yield guard(ready, encoder(ready.pixels) if ready.hashes else None)


def _decoded_batch(
    images: Sequence[tuple[str, bytes]], preprocessing: Preprocessing, limits: ImageLimits
) -> ReadyBatch:
    items = [decode_item(sha, data, preprocessing, limits) for sha, data in images]
    decoded = [item for item in items if item.pixels is not None]
    pixels = (
        torch.stack([item.pixels for item in decoded])
        if decoded
        else torch.empty((0, 3, 0, 0), dtype=torch.uint8)
    )
    failures = [item.failure for item in items if item.failure is not None]
    return ReadyBatch([item.sha256 for item in decoded], pixels, failures, len(items))


def encode_images(
    images: Sequence[tuple[str, bytes]],
    config: ExtractConfig,
    limits: ImageLimits,
    expected: Fingerprint | None = None,
) -> tuple[dict[str, np.ndarray], list[Failure]]:
    """Codes for images already in memory, ``batch_size`` at a time, bypassing the store.

    With ``expected`` set, refuses to compute codes any other way than the fingerprint
    says. An image whose codes hold NaN or inf is a ``non_finite`` failure, as in the store.
    """
    backend = _checked_backend(config, expected)
    size = config.batch_size
    batches = (
        _decoded_batch(images[start : start + size], config.preprocessing, limits)
        for start in range(0, len(images), size)
    )
    codes: dict[str, np.ndarray] = {}
    failures: list[Failure] = []
    for checked in _checked_batches(batches, backend.encoder(config)):
        failures.extend(checked.failures)
        if checked.codes is not None:
            codes.update(zip(checked.hashes, checked.codes.numpy(), strict=True))
    return codes, failures


def encode_files(
    refs: Sequence[ImageRef],
    config: ExtractConfig,
    limits: ImageLimits,
    expected: Fingerprint | None = None,
) -> Iterator[CheckedBatch]:
    """Codes for image files, one checked batch at a time, bypassing the store (``predict``).

    Files are read, re-hashed and decoded as ``extract`` does (ahead of the forward pass,
    one batch's bytes in memory at a time), so many files cost what ``extract`` costs.
    The fingerprint check happens on the call, before any file is read.
    """
    backend = _checked_backend(config, expected)
    device = backend.device
    prepare = partial(
        prepare_batch, preprocessing=config.preprocessing, limits=limits, device=device
    )
    batches = prefetch(_loader(refs, config, limits, device), prepare, device)
    encoder = backend.encoder(config, _compile_batch(config, device, len(refs)))
    return _checked_batches(batches, encoder)
