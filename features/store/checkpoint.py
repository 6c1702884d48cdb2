"""Checkpoint: ``index.h5``, the whole index as of one generation, replaced atomically.

A writer writes it when it opens (folding in the commit records a killed writer left),
when it closes, and when it swaps shards (compaction, repair): never per commit, since
its cost grows with the number of shards. Besides the shard and skip tables it holds
virtual datasets ``codes`` (n, dim) and ``hashes`` (n,) spanning the checkpoint's shards,
so any HDF5 tool reads a finished store as one array.

Format 2 means "commit records in ``commits/`` may follow"; format 1 (no records) is
still read, and a writer rewrites it as format 2 before its first commit, so a reader
that knows only format 1 refuses the store instead of missing rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from features.files import publish, temporary_path
from features.store.fingerprint import Fingerprint
from features.store.shards import HASH_DTYPE, SHARD_DIR, ShardRecord, SkipRecord, in_memory

__all__ = [
    "FORMAT",
    "INDEX_NAME",
    "IndexState",
    "checkpoint_format",
    "fit_detail",
    "read_checkpoint",
    "write_checkpoint",
]

FORMAT = "vgg-feature-store/2"
_READABLE = ("vgg-feature-store/1", FORMAT)
INDEX_NAME = "index.h5"
_DETAIL_BYTES = 256

_SHARD_TABLE = np.dtype([("name", "S80"), ("rows", "<i8"), ("sha256", "S64"), ("bytes", "<i8")])
_SKIP_TABLE = np.dtype([("sha256", HASH_DTYPE), ("reason", "S32"), ("detail", f"S{_DETAIL_BYTES}")])


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


def fit_detail(detail: str) -> str:
    """A skip's detail as the checkpoint table keeps it (256 bytes of UTF-8), so a record
    reads back the same from a commit record and from a checkpoint."""
    return detail.encode("utf-8", "replace")[:_DETAIL_BYTES].decode("utf-8", "replace")


def _virtual(
    handle: h5py.File,
    name: str,
    shards: Sequence[ShardRecord],
    dtype: np.dtype,
    row_shape: tuple[int, ...],
) -> None:
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


def _write_file(path: Path, state: IndexState) -> None:
    fingerprint = state.fingerprint
    with in_memory(path) as handle:
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
                    (s.sha256, s.reason, s.detail.encode("utf-8", "replace")[:_DETAIL_BYTES])
                    for s in state.skipped
                ],
                dtype=_SKIP_TABLE,
            ),
        )
        _virtual(handle, "codes", state.shards, np.dtype(fingerprint.dtype), (fingerprint.dim,))
        _virtual(handle, "hashes", state.shards, np.dtype(HASH_DTYPE), ())


def write_checkpoint(root: Path, state: IndexState) -> None:
    """Replace ``index.h5`` atomically with ``state``."""
    tmp = temporary_path(root, ".h5")
    try:
        _write_file(tmp, state)
        publish(tmp, root / INDEX_NAME)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def checkpoint_format(root: Path) -> str:
    with h5py.File(root / INDEX_NAME, "r") as handle:
        return str(handle.attrs.get("format"))


def read_checkpoint(root: Path) -> IndexState:
    with h5py.File(root / INDEX_NAME, "r") as handle:
        if handle.attrs.get("format") not in _READABLE:
            raise ValueError(
                f"{root / INDEX_NAME} has format {handle.attrs.get('format')!r}, "
                f"expected one of {_READABLE}"
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
