"""Scale-out: extract partitions on Dask workers, each writing one immutable shard per layer.

Shards need no lock: each is written under a temporary name and renamed complete, so any
number of workers write into the store at once. The coordinator holds the writer lock and
indexes each finished shard in one atomic commit as it arrives. If the coordinator dies,
the next writer adopts every complete shard a worker left behind, so no finished partition
is computed twice. Each worker recomputes the fingerprint from its own torch, weights and
settings and refuses to write if it differs from the coordinator's: a heterogeneous
cluster cannot silently mix codes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from features.compute.backend import Backend, resolve_backend
from features.compute.config import DaskConfig, ExtractConfig, ExtractReport
from features.compute.encoder import Encoder, cpu_allocator_tuned
from features.compute.extract import Run, open_run, store_roots
from features.compute.finite import FiniteGuard, FiniteStats
from features.compute.loader import Failure, ImageRef, make_loader
from features.compute.prefetch import prepare_batch
from features.data.images import ImageLimits
from features.progress import LineProgress
from features.progress import progress as show_progress
from features.store.fingerprint import Fingerprint
from features.store.shards import SHARD_DIR, ShardRecord, SkipRecord, write_shard

if TYPE_CHECKING:
    from distributed import Client
    from tqdm import tqdm

__all__ = ["PartitionResult", "dask_client", "extract_partition", "extract_with_dask"]

_WORKER_STATE: dict[str, tuple[Backend, Encoder]] = {}  # per worker process, by settings


@dataclass(frozen=True)
class PartitionResult:
    """One task's output: a shard per layer (not yet indexed), the images it could not use."""

    records: dict[str, ShardRecord]
    skips: tuple[SkipRecord, ...]
    retry: tuple[Failure, ...]
    finite: FiniteStats
    seconds: float


def _worker_encoder(
    config: ExtractConfig, expected: Mapping[str, Fingerprint]
) -> tuple[Backend, Encoder]:
    """Build the network once per worker process and check it computes what we expect."""
    key = repr((config, tuple(expected)))
    if key not in _WORKER_STATE:
        backend = resolve_backend(config, list(expected))
        _WORKER_STATE[key] = backend, backend.encoder(config)
    backend, encoder = _WORKER_STATE[key]
    for layer, fingerprint in expected.items():
        fingerprint.require_same(
            backend.fingerprints[layer], f"{layer} codes this Dask worker would compute"
        )
    return backend, encoder


def extract_partition(
    refs: Sequence[ImageRef],
    stores: Mapping[str, str],
    config: ExtractConfig,
    limits: ImageLimits,
    expected: Mapping[str, Fingerprint],
    threads: int | None = None,
) -> PartitionResult:
    """Runs on a worker: decode and encode ``refs``, and write one shard per layer's store.

    ``stores`` and ``expected`` map the same layers, in column order, to store roots and
    fingerprints.
    """
    started = time.perf_counter()
    if threads is not None:
        torch.set_num_threads(threads)
    backend, encoder = _worker_encoder(config, expected)
    loader = make_loader(
        refs,
        config.preprocessing,
        limits,
        config.batch_size,
        num_workers=0,
        pin_memory=backend.device.type == "cuda",
        raw_jpeg=config.gpu_decode and backend.device.type == "cuda",
    )
    hashes: list[str] = []
    blocks: list[np.ndarray] = []
    failures: list[Failure] = []
    guard = FiniteGuard(encoder)
    with cpu_allocator_tuned(backend.device):
        for batch in loader:
            ready = prepare_batch(batch, config.preprocessing, limits, backend.device)
            checked = guard(ready, encoder(ready.pixels) if ready.hashes else None)
            failures.extend(checked.failures)
            if checked.codes is not None:
                hashes.extend(checked.hashes)
                blocks.append(checked.codes.numpy())
    records = {}
    if hashes:
        codes = np.concatenate(blocks)
        for layer, columns in backend.columns().items():
            records[layer] = write_shard(
                Path(stores[layer]) / SHARD_DIR,
                hashes,
                np.ascontiguousarray(codes[:, columns]),
                expected[layer],
                config.compression,
            )
    return PartitionResult(
        records=records,
        skips=tuple(SkipRecord(f.sha256, f.reason, f.detail) for f in failures if f.permanent),
        retry=tuple(f for f in failures if not f.permanent),
        finite=guard.stats,
        seconds=time.perf_counter() - started,
    )


@contextmanager
def dask_client(options: DaskConfig) -> Iterator[Client]:
    """A client of ``options.address``, or of a local cluster of ``options.workers``
    single-threaded processes, closed (with the cluster) on exit."""
    from distributed import Client, LocalCluster

    if options.address is not None:
        with Client(options.address) as client:
            yield client
        return
    with (
        LocalCluster(
            n_workers=options.workers, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def extract_with_dask(
    refs: Sequence[ImageRef],
    stores: Path | Mapping[str, Path],
    config: ExtractConfig,
    limits: ImageLimits,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> ExtractReport:
    """Like :func:`features.compute.extract.extract_codes`, with one Dask task per partition."""
    options = config.dask
    backend = resolve_backend(config, list(stores) if isinstance(stores, Mapping) else None)
    roots = store_roots(stores, backend)
    with open_run(refs, roots, config, backend, log) as run:
        if not run.pending:
            return run.report
        bar = show_progress(len(run.pending), "extract (dask)", enabled=progress)
        partitions = 0
        try:
            with dask_client(options) as client:
                for layers, pending in run.groups:
                    partitions += _run_group(
                        client,
                        run,
                        backend.with_layers(layers),
                        pending,
                        {layer: str(roots[layer]) for layer in layers},
                        config,
                        limits,
                        bar,
                    )
        finally:
            bar.close()
        run.stores.settle_orphans()  # a dead worker's shard of a partition Dask reran
        log(
            f"extract: {partitions} partitions on "
            f"{options.address or f'a local cluster of {options.workers} workers'}"
        )
    return run.report


def _run_group(
    client: Client,
    run: Run,
    backend: Backend,
    pending: Sequence[ImageRef],
    roots: dict[str, str],
    config: ExtractConfig,
    limits: ImageLimits,
    bar: tqdm | LineProgress,
) -> int:
    """One task per partition of ``pending``, each shard indexed as its task finishes."""
    from distributed import as_completed

    options = config.dask
    size = options.partition_rows
    partitions = [pending[start : start + size] for start in range(0, len(pending), size)]
    local_threads = (
        max(1, (os.cpu_count() or 1) // options.workers) if options.address is None else None
    )
    stores = run.stores.subset(backend.layers)
    futures = client.map(
        extract_partition,
        partitions,
        stores=roots,
        config=config,
        limits=limits,
        expected=backend.fingerprints,
        threads=local_threads,
        pure=False,
    )
    sizes = {future.key: len(part) for future, part in zip(futures, partitions, strict=True)}
    try:
        for future in as_completed(futures):
            result: PartitionResult = future.result()
            rows = stores.commit_shards(result.records, result.skips)
            run.report.record(backend.layers, rows, len(result.skips), result.retry, result.finite)
            bar.update(sizes[future.key])
    finally:
        client.cancel(futures)
    return len(partitions)
