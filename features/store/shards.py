"""Shards: the immutable HDF5 files that hold a store's codes, each written atomically.

A store is a directory::

    index.h5          the last checkpoint of the index (:mod:`features.store.checkpoint`)
    commits/*.json    one small record per commit since then (:mod:`features.store.index`)
    shards/*.h5       immutable: ``codes`` (rows, dim) and ``hashes`` (rows,) each
    LOCK              present only while a writer runs

Every file is written under a temporary name, fsynced, renamed into place and its
directory fsynced, so a shard either exists complete or not at all. Shards are written
without any lock, so Dask workers can each write their own; only the index update is
serialised.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from features.files import file_sha256, publish, temporary_path
from features.store.fingerprint import Fingerprint

__all__ = [
    "FORMAT",
    "HASH_DTYPE",
    "SHARD_DIR",
    "Failure",
    "ShardRecord",
    "SkipRecord",
    "in_memory",
    "non_finite_rows",
    "read_shard_hashes",
    "require_finite",
    "write_shard",
]

FORMAT = "vgg-feature-store/1"  # of a shard file; the index has its own
SHARD_DIR = "shards"
HASH_DTYPE = "S64"  # hex SHA-256, readable by any HDF5 tool
CHUNK_ROWS = 64  # 512 KiB per chunk at float16: fits h5py's chunk cache, cheap random reads


@dataclass(frozen=True)
class ShardRecord:
    """One committed shard, as the index remembers it."""

    name: str
    rows: int
    sha256: str
    bytes: int


@dataclass(frozen=True)
class SkipRecord:
    """An image that failed at extraction time; kept so reruns do not retry it."""

    sha256: str
    reason: str
    detail: str


@dataclass(frozen=True)
class Failure:
    """An image that produced no pixels this run.

    ``permanent`` failures depend only on the bytes (a corrupt file) and are recorded in
    the store so reruns skip them; others (the file changed or vanished) are retried.
    """

    sha256: str
    reason: str
    detail: str
    permanent: bool


@contextmanager
def in_memory(path: Path) -> Iterator[h5py.File]:
    """An HDF5 file built in memory, then written to ``path`` with one plain ``write``.

    HDF5 defers writes to its caches, and when flushing them at close fails (a full disk)
    h5py only prints the error from a destructor: the file looks written but is short. A
    short shard would then be checksummed, renamed into place and adopted, and a short
    index would become the commit point. Writing the finished image ourselves turns ENOSPC
    into an ordinary ``OSError`` before anything is renamed.
    """
    with h5py.File(path.name, "w", driver="core", backing_store=False) as handle:
        yield handle
        handle.flush()
        image = handle.id.get_file_image()
    with open(path, "wb") as stream:
        stream.write(image)


def _write_shard_file(
    path: Path,
    hashes: list[str],
    codes: np.ndarray,
    fingerprint: Fingerprint,
    compression: str | None,
) -> None:
    rows, dim = codes.shape
    with in_memory(path) as handle:
        handle.attrs["format"] = FORMAT
        handle.attrs["fingerprint"] = fingerprint.to_json()
        handle.attrs["created"] = time.time()
        handle.create_dataset("hashes", data=np.array(hashes, dtype=HASH_DTYPE))
        handle.create_dataset(
            "codes",
            data=codes,
            chunks=(max(1, min(rows, CHUNK_ROWS)), dim),
            compression=compression,
            shuffle=compression is not None,
        )


def non_finite_rows(
    codes: h5py.Dataset | np.ndarray, block_rows: int = 16 * CHUNK_ROWS
) -> np.ndarray:
    """Positions of rows holding NaN or inf, read a block at a time so memory stays flat."""
    found = [
        start + np.flatnonzero(~np.isfinite(codes[start : start + block_rows]).all(axis=1))
        for start in range(0, len(codes), block_rows)
    ]
    return np.concatenate(found) if found else np.empty(0, dtype=np.intp)


def require_finite(codes: h5py.Dataset | np.ndarray, what: str) -> None:
    """Refuse NaN and inf: the runner skips such images, so one arriving here is a bug."""
    bad = non_finite_rows(codes)
    if len(bad):
        raise ValueError(
            f"{what}: {len(bad)} of {len(codes)} rows hold NaN or inf (first at row "
            f"{bad[0]}); a store never commits non-finite codes"
        )


def write_shard(
    shard_dir: Path,
    hashes: list[str],
    codes: np.ndarray,
    fingerprint: Fingerprint,
    compression: str | None = None,
) -> ShardRecord:
    """Write one immutable shard atomically and return its record (not yet indexed)."""
    if codes.ndim != 2 or codes.shape != (len(hashes), fingerprint.dim):
        raise ValueError(
            f"codes of shape {codes.shape} do not match {len(hashes)} hashes x "
            f"dim {fingerprint.dim}"
        )
    if codes.dtype != np.dtype(fingerprint.dtype):
        raise ValueError(f"codes are {codes.dtype}, the store holds {fingerprint.dtype}")
    require_finite(codes, "refused to write a shard")
    stamp = time.strftime("%Y%m%dT%H%M%S")
    final = shard_dir / f"shard-{stamp}-{secrets.token_hex(6)}.h5"
    tmp = temporary_path(shard_dir, ".h5")
    try:
        _write_shard_file(tmp, hashes, codes, fingerprint, compression)
        digest = file_sha256(tmp)
        size = tmp.stat().st_size
        publish(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return ShardRecord(name=final.name, rows=len(hashes), sha256=digest, bytes=size)


def read_shard_hashes(path: Path) -> list[str]:
    with h5py.File(path, "r") as handle:
        return [value.decode() for value in handle["hashes"][:]]
