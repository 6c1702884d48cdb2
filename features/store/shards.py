"""Writer: immutable HDF5 shards and the index that lists them, each replaced atomically.

A store is a directory::

    index.h5          the commit point: fingerprint, shard table, skip records, and
                      virtual datasets ``codes`` (n, dim) and ``hashes`` (n,) spanning
                      every shard, so any HDF5 tool reads the whole store as one array
    shards/*.h5       immutable: ``codes`` (rows, dim) and ``hashes`` (rows,) each
    LOCK              present only while a writer runs

Every file is written under a temporary name, fsynced, renamed into place and its
directory fsynced. A reader therefore sees the old index or the new one, never half of
one, and a shard either exists complete or not at all. Shards are written without any
lock, so Dask workers can each write their own; only the index update is serialised.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from features.files import file_sha256, publish, temporary_path
from features.store.fingerprint import Fingerprint

__all__ = [
    "FORMAT",
    "INDEX_NAME",
    "SHARD_DIR",
    "Failure",
    "IndexState",
    "ShardRecord",
    "SkipRecord",
    "non_finite_rows",
    "read_index",
    "read_shard_hashes",
    "require_finite",
    "write_index",
    "write_shard",
]

FORMAT = "vgg-feature-store/1"
INDEX_NAME = "index.h5"
SHARD_DIR = "shards"
HASH_DTYPE = "S64"  # hex SHA-256, readable by any HDF5 tool
CHUNK_ROWS = 64  # 512 KiB per chunk at float16: fits h5py's chunk cache, cheap random reads

_SHARD_TABLE = np.dtype([("name", "S80"), ("rows", "<i8"), ("sha256", "S64"), ("bytes", "<i8")])
_SKIP_TABLE = np.dtype([("sha256", HASH_DTYPE), ("reason", "S32"), ("detail", "S256")])


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


@dataclass(frozen=True)
class IndexState:
    """The whole committed state of a store."""

    fingerprint: Fingerprint
    shards: tuple[ShardRecord, ...]
    skipped: tuple[SkipRecord, ...]
    generation: int

    @property
    def rows(self) -> int:
        return sum(shard.rows for shard in self.shards)


@contextmanager
def _in_memory(path: Path) -> Iterator[h5py.File]:
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
    with _in_memory(path) as handle:
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


def _virtual(
    handle: h5py.File,
    name: str,
    shards: Iterable[ShardRecord],
    dtype: np.dtype,
    row_shape: tuple[int, ...],
) -> None:
    shards = list(shards)
    total = sum(shard.rows for shard in shards)
    if total == 0:
        handle.create_dataset(name, shape=(0, *row_shape), dtype=dtype)
        return
    layout = h5py.VirtualLayout(shape=(total, *row_shape), dtype=dtype)
    start = 0
    for shard in shards:
        source = h5py.VirtualSource(
            f"{SHARD_DIR}/{shard.name}", name, shape=(shard.rows, *row_shape), dtype=dtype
        )
        layout[start : start + shard.rows] = source
        start += shard.rows
    handle.create_virtual_dataset(name, layout)


def _write_index_file(path: Path, state: IndexState) -> None:
    fingerprint = state.fingerprint
    with _in_memory(path) as handle:
        handle.attrs["format"] = FORMAT
        handle.attrs["fingerprint"] = fingerprint.to_json()
        handle.attrs["generation"] = state.generation
        handle.attrs["rows"] = state.rows
        handle.create_dataset(
            "shards",
            data=np.array(
                [(s.name, s.rows, s.sha256, s.bytes) for s in state.shards], dtype=_SHARD_TABLE
            ),
        )
        handle.create_dataset(
            "skipped",
            data=np.array(
                [
                    (s.sha256, s.reason, s.detail.encode("utf-8", "replace")[:256])
                    for s in state.skipped
                ],
                dtype=_SKIP_TABLE,
            ),
        )
        _virtual(handle, "codes", state.shards, np.dtype(fingerprint.dtype), (fingerprint.dim,))
        _virtual(handle, "hashes", state.shards, np.dtype(HASH_DTYPE), ())


def write_index(root: Path, state: IndexState) -> None:
    """Replace the index atomically: this rename is the store's commit point."""
    tmp = temporary_path(root, ".h5")
    try:
        _write_index_file(tmp, state)
        publish(tmp, root / INDEX_NAME)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_index(root: Path) -> IndexState:
    with h5py.File(root / INDEX_NAME, "r") as handle:
        if handle.attrs.get("format") != FORMAT:
            raise ValueError(
                f"{root / INDEX_NAME} has format {handle.attrs.get('format')!r}, "
                f"expected {FORMAT!r}"
            )
        fingerprint = Fingerprint.from_json(handle.attrs["fingerprint"])
        shards = tuple(
            ShardRecord(
                row["name"].decode(), int(row["rows"]), row["sha256"].decode(), int(row["bytes"])
            )
            for row in handle["shards"][:]
        )
        skipped = tuple(
            SkipRecord(
                row["sha256"].decode(),
                row["reason"].decode(),
                row["detail"].decode("utf-8", "replace"),
            )
            for row in handle["skipped"][:]
        )
        return IndexState(fingerprint, shards, skipped, int(handle.attrs["generation"]))
