"""Reader: codes keyed by image SHA-256, read from one committed generation of a store.

:class:`FeatureStore` reads a snapshot (the index as it was when opened) without any lock,
so heads train while extraction runs. Opening reads only the index; the hashes are read
from the shards on the first lookup, so a process that streams rows in store order never
pays for them. See :mod:`features.store.shards` for the on-disk layout and why it
survives ``kill -9``.
"""

from __future__ import annotations

import resource
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path

import h5py
import numpy as np

from features.store.checkpoint import INDEX_NAME
from features.store.errors import StoreError
from features.store.fingerprint import Fingerprint
from features.store.hashindex import HashIndex
from features.store.index import read_index
from features.store.shards import HASH_DTYPE, SHARD_DIR, SkipRecord

__all__ = ["FeatureStore"]

# HDF5 keeps a chunk cache per open file, filled by reads: 16 MiB a shard made a reader
# grow by 4 KiB per stored row (5 GB at ImageNet size). Reads here take whole 64-row
# chunks or scattered rows, neither of which a cache helps (without one, measured equal or
# faster), so there is none; an open shard still holds ~0.4 MiB of HDF5 metadata. A
# shuffled pass takes its pieces from every shard: with 64 open of 98 shards it reread
# files at 705 MB/s, with all open 1,050 MB/s (400k rows, bench/scale_bench.py's reads).
_CHUNK_CACHE_BYTES = 0


def _open_shard_limit() -> int:
    """Shards a reader keeps open (least recently used closed first): a quarter of the
    process's file descriptors, at most 512 (2M rows at extract's commit size, ~200 MiB)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(16, min(512, soft // 4))


_OPEN_SHARDS = _open_shard_limit()
_LOAD_ATTEMPTS = 3  # a reader racing a compaction or repair reads the new index


def _open_shard(path: Path) -> h5py.File:
    return h5py.File(path, "r", rdcc_nbytes=_CHUNK_CACHE_BYTES)


def _is_run(indices: np.ndarray) -> bool:
    """True when ``indices`` are consecutive and ascending."""
    return int(indices[-1]) - int(indices[0]) == len(indices) - 1 and bool(
        np.all(np.diff(indices) == 1)
    )


def _read_rows(dataset: h5py.Dataset, rows: np.ndarray) -> np.ndarray:
    """Rows ``rows`` (sorted, unique) of ``dataset``: one slab read when they are dense,
    one slab per run when they come in runs (a shuffled pass's 64-row pieces: h5py's
    point selection costs ~45 ms for a few hundred rows), else a point selection."""
    first, last = int(rows[0]), int(rows[-1]) + 1
    if len(rows) * 4 >= last - first:
        return dataset[first:last][rows - first]
    starts = np.flatnonzero(np.diff(rows, prepend=-2) != 1)
    if len(starts) * 8 <= len(rows):
        ends = np.r_[starts[1:], len(rows)]
        return np.concatenate(
            [
                dataset[int(rows[a]) : int(rows[b - 1]) + 1]
                for a, b in zip(starts, ends, strict=True)
            ]
        )
    return dataset[rows]


class ShardCodes:
    """One shard's codes as an array Dask can slice in any process: it keeps the path and
    opens the file for each read."""

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.path, self.shape, self.dtype = path, tuple(shape), np.dtype(dtype)
        self.ndim = len(self.shape)

    def __getitem__(self, key: object) -> np.ndarray:
        with h5py.File(self.path, "r") as handle:
            return handle["codes"][key]


class FeatureStore:
    """Read-only view of one committed generation of a store.

    Parameters
    ----------
    root : path of the store directory.
    expected : fingerprint the caller's codes must match; a mismatch is refused.
    """

    def __init__(self, root: Path, expected: Fingerprint | None = None) -> None:
        self.root = Path(root)
        if not (self.root / INDEX_NAME).is_file():
            raise StoreError(f"no feature store at {self.root}: run the extract stage first")
        self._handles: OrderedDict[str, h5py.File] = OrderedDict()
        self._index: HashIndex | None = None
        self._load()
        if expected is not None:
            self.fingerprint.require_same(expected, f"store {self.root}")

    def _load(self) -> None:
        """Read the index and check that every shard it lists is there.

        Compaction and repair delete shards right after publishing an index without them,
        so a shard missing between our reading the index and looking for it means a newer
        index exists: read again. Only a shard missing every time is damage.
        """
        for attempt in range(_LOAD_ATTEMPTS):
            self.close()
            self._index = None
            try:
                self.state = read_index(self.root)
            except (OSError, KeyError, ValueError) as error:
                raise self._unreadable(error) from error
            shard_dir = self.root / SHARD_DIR
            missing = [s.name for s in self.state.shards if not (shard_dir / s.name).is_file()]
            if not missing:
                break
            if attempt + 1 == _LOAD_ATTEMPTS:
                error = FileNotFoundError(f"{shard_dir / missing[0]} is listed but missing")
                raise self._unreadable(error)
        sizes = [shard.rows for shard in self.state.shards]
        self._offsets = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])

    def _lookup(self) -> HashIndex:
        """Every hash, read from the shards on first use (a shard compacted away since we
        opened means a newer index: read it again)."""
        if self._index is None:
            for attempt in range(_LOAD_ATTEMPTS):
                try:
                    hashes = self._read_hashes()
                    break
                except FileNotFoundError as error:
                    if attempt + 1 == _LOAD_ATTEMPTS:
                        raise self._unreadable(error) from error
                    self._load()
                except (OSError, KeyError, ValueError, TypeError) as error:
                    raise self._unreadable(error) from error
            self._index = HashIndex(hashes)
        return self._index

    def _read_hashes(self) -> np.ndarray:
        """Every shard's hashes read straight into one array (no second copy to join)."""
        hashes = np.empty(len(self), dtype=HASH_DTYPE)
        for shard, start in zip(self.state.shards, self._offsets[:-1], strict=False):
            target = np.s_[int(start) : int(start) + shard.rows]
            self._shard(shard.name)["hashes"].read_direct(hashes, dest_sel=target)
        return hashes

    def _unreadable(self, error: Exception) -> StoreError:
        return StoreError(
            f"cannot read store {self.root}: {error}. "
            f"Run `python -m pipeline.store verify {self.root}`."
        )

    def _shard(self, name: str) -> h5py.File:
        """An open shard; a damaged one is a :class:`StoreError` naming the fix (opening
        no longer opens every shard, so damage shows at the first read of it)."""
        handle = self._handles.get(name)
        if handle is None:
            if len(self._handles) >= _OPEN_SHARDS:
                self._handles.popitem(last=False)[1].close()
            try:
                handle = _open_shard(self.root / SHARD_DIR / name)
            except FileNotFoundError:
                raise  # compacted away since we read the index: callers read it again
            except OSError as error:
                raise self._unreadable(error) from error
            self._handles[name] = handle
        self._handles.move_to_end(name)
        return handle

    @property
    def fingerprint(self) -> Fingerprint:
        return self.state.fingerprint

    @property
    def dim(self) -> int:
        return self.fingerprint.dim

    def __len__(self) -> int:
        return int(self._offsets[-1])

    @property
    def hashes(self) -> list[str]:
        """Every stored hash, in store order."""
        return [value.decode() for value in self._lookup().hashes]

    @property
    def skipped(self) -> dict[str, SkipRecord]:
        return {record.sha256: record for record in self.state.skipped}

    def _positions(self, hashes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        return self._lookup().find(hashes)

    def contains(self, hashes: Sequence[str]) -> np.ndarray:
        """Boolean mask: which of ``hashes`` have codes."""
        return self._positions(hashes)[1]

    def positions(self, hashes: Sequence[str]) -> np.ndarray:
        """Row of each of ``hashes`` in the store (the rows of :meth:`to_dask`); reading
        rows in ascending order is sequential, shard by shard."""
        rows, found = self._positions(hashes)
        if not found.all():
            raise StoreError(
                f"{int((~found).sum())} of {len(hashes)} images have no codes in {self.root}"
            )
        return rows

    def read_rows(self, rows: np.ndarray) -> np.ndarray:
        """Codes at store rows ``rows`` (from :meth:`positions` on this open store), in that
        order: a pass that located its images once reads without looking hashes up."""
        try:
            return self._gather(np.asarray(rows, dtype=np.int64))
        except FileNotFoundError as error:
            raise StoreError(
                f"{self.root} was compacted while it was being read: rerun the stage"
            ) from error

    def get(self, hashes: Sequence[str], out: np.ndarray | None = None) -> np.ndarray:
        """Codes for ``hashes``, in that order: array of shape (len(hashes), dim). Given
        ``out`` (at least that many rows, the store's dtype), they are read into its head,
        which is returned: a reader of many blocks reuses one buffer instead of faulting a
        fresh one in for each."""
        rows, found = self._positions(hashes)
        if not found.all():
            missing = [h for h, ok in zip(hashes, found, strict=True) if not ok]
            raise StoreError(
                f"{len(missing)} of {len(hashes)} images have no codes in {self.root} "
                f"(first: {missing[0]}); rerun the extract stage"
            )
        try:
            return self._gather(rows, out)
        except FileNotFoundError:
            # A compaction replaced shards since we opened: same codes, new files.
            self._load()
            return self._gather(self._positions(hashes)[0], out)

    def _gather(self, rows: np.ndarray, buffer: np.ndarray | None = None) -> np.ndarray:
        shape, dtype = (len(rows), self.dim), np.dtype(self.fingerprint.dtype)
        if buffer is None:
            out = np.empty(shape, dtype=dtype)
        elif buffer.dtype != dtype or buffer.shape[1:] != shape[1:] or len(buffer) < len(rows):
            raise ValueError(f"out must hold {shape} {dtype}, not {buffer.shape} {buffer.dtype}")
        else:
            out = buffer[: len(rows)]
        shard_of = np.searchsorted(self._offsets, rows, side="right") - 1
        for shard_index in np.unique(shard_of):
            where = np.flatnonzero(shard_of == shard_index)
            local = rows[where] - self._offsets[shard_index]
            codes = self._shard(self.state.shards[shard_index].name)["codes"]
            if _is_run(where) and bool(np.all(np.diff(local) > 0)):  # in store order
                target = np.s_[where[0] : where[-1] + 1]
                if _is_run(local):  # straight into ``out``
                    codes.read_direct(out, np.s_[local[0] : local[-1] + 1], target)
                else:
                    out[target] = _read_rows(codes, local)
                continue
            unique, inverse = np.unique(local, return_inverse=True)
            out[where] = _read_rows(codes, unique)[inverse]
        return out

    def iter_chunks(
        self, hashes: Sequence[str], chunk_rows: int = 4096, *, reuse: bool = False
    ) -> Iterator[tuple[Sequence[str], np.ndarray]]:
        """Yield ``(hashes, codes)`` blocks of at most ``chunk_rows``: memory stays flat.
        With ``reuse``, every block is read into one buffer, so each is valid only until
        the next: for a consumer done with a block before asking for the next, which then
        allocates nothing per block."""
        buffer = None
        if reuse and len(hashes):
            dtype = np.dtype(self.fingerprint.dtype)
            buffer = np.empty((min(chunk_rows, len(hashes)), self.dim), dtype=dtype)
        for start in range(0, len(hashes), chunk_rows):
            block = hashes[start : start + chunk_rows]
            yield block, self.get(block, buffer)

    def to_dask(self, chunk_rows: int = 4096):
        """All codes, in store order, as a lazy ``dask.array`` (one block per shard slice)
        that any Dask scheduler can run, a cluster's included: its tasks hold shard paths,
        not open HDF5 handles (which do not pickle), and each read opens and closes its
        file, so nothing stays cached after ``compute()``."""
        import dask.array as da

        if len(self) == 0:
            return da.zeros((0, self.dim), dtype=self.fingerprint.dtype)
        dtype = np.dtype(self.fingerprint.dtype)
        parts = []
        for shard in self.state.shards:
            path = self.root / SHARD_DIR / shard.name
            source = ShardCodes(path, (shard.rows, self.dim), dtype)
            parts.append(
                da.from_array(source, chunks=(chunk_rows, self.dim), meta=np.empty((0, 0), dtype))
            )
        return da.concatenate(parts, axis=0)

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles = OrderedDict()

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
