"""The feature store: codes keyed by image SHA-256, read as one array, written in commits.

:class:`FeatureStore` reads a snapshot (the index as it was when opened) without any lock,
so heads train while extraction runs. :class:`StoreWriter` holds the writer lock and turns
each batch of codes into one atomic commit: a new immutable shard, then a new index.
See :mod:`features.shards` for the on-disk layout and why it survives ``kill -9``.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np

from features.errors import UserError
from features.fingerprint import Fingerprint
from features.lock import StoreLock
from features.shards import (
    INDEX_NAME,
    SHARD_DIR,
    TMP_PREFIX,
    IndexState,
    ShardRecord,
    SkipRecord,
    read_index,
    read_shard_hashes,
    write_index,
    write_shard,
)
from features.weights import file_sha256

__all__ = ["FeatureStore", "StoreError", "StoreFullError", "StoreWriter"]

_CHUNK_CACHE_BYTES = 16 << 20
_LOAD_ATTEMPTS = 3  # a reader racing a compaction or repair reads the new index


class StoreError(UserError):
    """The store is missing, unreadable or asked for codes it does not hold."""


class StoreFullError(StoreError):
    """The disk filled up during a commit; the previous commit is intact."""


def _open_shard(path: Path) -> h5py.File:
    return h5py.File(path, "r", rdcc_nbytes=_CHUNK_CACHE_BYTES)


def _read_rows(dataset: h5py.Dataset, rows: np.ndarray) -> np.ndarray:
    """Rows ``rows`` (sorted, unique) of ``dataset``: one slab read when they are dense."""
    first, last = int(rows[0]), int(rows[-1]) + 1
    if len(rows) * 4 >= last - first:
        return dataset[first:last][rows - first]
    return dataset[rows]


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
        self._handles: dict[str, h5py.File] = {}
        self._load()
        if expected is not None:
            self.fingerprint.require_same(expected, f"store {self.root}")

    def _load(self) -> None:
        """Read the index and open every shard it lists.

        Compaction and repair delete shards right after publishing an index without them,
        so a shard missing between our reading the index and opening it means a newer
        index exists: read again. Only a shard missing every time is damage.
        """
        for attempt in range(_LOAD_ATTEMPTS):
            self.close()
            try:
                self.state = read_index(self.root)
                per_shard = [self._shard(s.name)["hashes"][:] for s in self.state.shards]
                break
            except FileNotFoundError as error:
                if attempt + 1 < _LOAD_ATTEMPTS:
                    continue
                raise self._unreadable(error) from error
            except (OSError, KeyError, ValueError) as error:
                raise self._unreadable(error) from error
        sizes = [len(hashes) for hashes in per_shard]
        self._offsets = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
        self._hashes = np.concatenate(per_shard) if per_shard else np.empty(0, dtype="S64")
        self._sorted = np.argsort(self._hashes, kind="stable")

    def _unreadable(self, error: Exception) -> StoreError:
        return StoreError(
            f"cannot read store {self.root}: {error}. "
            f"Run `python -m pipeline.store verify {self.root}`."
        )

    def _shard(self, name: str) -> h5py.File:
        handle = self._handles.get(name)
        if handle is None:
            handle = self._handles[name] = _open_shard(self.root / SHARD_DIR / name)
        return handle

    @property
    def fingerprint(self) -> Fingerprint:
        return self.state.fingerprint

    @property
    def dim(self) -> int:
        return self.fingerprint.dim

    def __len__(self) -> int:
        return len(self._hashes)

    @property
    def hashes(self) -> list[str]:
        """Every stored hash, in store order."""
        return [value.decode() for value in self._hashes]

    @property
    def skipped(self) -> dict[str, SkipRecord]:
        return {record.sha256: record for record in self.state.skipped}

    def _positions(self, hashes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        keys = np.array(list(hashes), dtype="S64")
        if len(self._hashes) == 0:
            return np.zeros(len(keys), dtype=np.int64), np.zeros(len(keys), dtype=bool)
        slots = np.searchsorted(self._hashes, keys, sorter=self._sorted)
        slots = np.minimum(slots, len(self._hashes) - 1)
        rows = self._sorted[slots]
        return rows, self._hashes[rows] == keys

    def contains(self, hashes: Sequence[str]) -> np.ndarray:
        """Boolean mask: which of ``hashes`` have codes."""
        return self._positions(hashes)[1]

    def get(self, hashes: Sequence[str]) -> np.ndarray:
        """Codes for ``hashes``, in that order: array of shape (len(hashes), dim)."""
        rows, found = self._positions(hashes)
        if not found.all():
            missing = [h for h, ok in zip(hashes, found, strict=True) if not ok]
            raise StoreError(
                f"{len(missing)} of {len(hashes)} images have no codes in {self.root} "
                f"(first: {missing[0]}); rerun the extract stage"
            )
        try:
            return self._gather(rows)
        except FileNotFoundError:
            # A compaction replaced shards since we opened: same codes, new files.
            self._load()
            return self._gather(self._positions(hashes)[0])

    def _gather(self, rows: np.ndarray) -> np.ndarray:
        out = np.empty((len(rows), self.dim), dtype=np.dtype(self.fingerprint.dtype))
        shard_of = np.searchsorted(self._offsets, rows, side="right") - 1
        for shard_index in np.unique(shard_of):
            where = np.flatnonzero(shard_of == shard_index)
            local = rows[where] - self._offsets[shard_index]
            unique, inverse = np.unique(local, return_inverse=True)
            name = self.state.shards[shard_index].name
            out[where] = _read_rows(self._shard(name)["codes"], unique)[inverse]
        return out

    def iter_chunks(
        self, hashes: Sequence[str], chunk_rows: int = 4096
    ) -> Iterator[tuple[Sequence[str], np.ndarray]]:
        """Yield ``(hashes, codes)`` blocks of at most ``chunk_rows``: memory stays flat."""
        for start in range(0, len(hashes), chunk_rows):
            block = hashes[start : start + chunk_rows]
            yield block, self.get(block)

    def to_dask(self, chunk_rows: int = 4096):
        """All codes, in store order, as a lazy ``dask.array`` (one block per shard slice)."""
        import dask.array as da

        if len(self) == 0:
            return da.zeros((0, self.dim), dtype=self.fingerprint.dtype)
        parts = [
            da.from_array(self._shard(s.name)["codes"], chunks=(chunk_rows, self.dim))
            for s in self.state.shards
        ]
        return da.concatenate(parts, axis=0)

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles = {}

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _is_disk_full(error: OSError) -> bool:
    return error.errno in (errno.ENOSPC, errno.EDQUOT) or "No space left" in str(error)


@contextmanager
def _disk_full_is(message: str) -> Iterator[None]:
    """Re-raise ENOSPC/EDQUOT inside the block as :class:`StoreFullError` with ``message``."""
    try:
        yield
    except OSError as error:
        if _is_disk_full(error):
            raise StoreFullError(message) from error
        raise


class StoreWriter:
    """The single writer of a store: lock, recover, then commit batches atomically.

    Opening removes temporary files left by a killed writer and adopts complete shards
    that were renamed into place but not yet indexed, so no finished work is lost.
    """

    def __init__(
        self,
        root: Path,
        fingerprint: Fingerprint,
        compression: str | None = None,
        log: Callable[[str], None] = print,
        ignore: Collection[str] = (),
    ) -> None:
        self.root = Path(root)
        self.fingerprint = fingerprint
        self.compression = compression
        self.log = log
        self._ignore = frozenset(ignore)  # indexed shards not to read: repair drops them
        self._lock = StoreLock(self.root / "LOCK")
        self._known: set[str] = set()
        self.state: IndexState | None = None

    def __enter__(self) -> StoreWriter:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        with _disk_full_is(f"disk full while opening {self.root}; free space and rerun"):
            self._open()

    def _open(self) -> None:
        (self.root / SHARD_DIR).mkdir(parents=True, exist_ok=True)
        self._lock.acquire()
        try:
            if message := self._lock.stale_message():
                self.log(f"store: {message}")
            self._remove_temporaries()
            if (self.root / INDEX_NAME).exists():
                state = read_index(self.root)
                state.fingerprint.require_same(self.fingerprint, f"store {self.root}")
            else:
                state = IndexState(self.fingerprint, (), (), 0)
                write_index(self.root, state)
            self.state = state
            for shard in state.shards:
                if shard.name not in self._ignore:
                    self._known.update(self._indexed_hashes(shard))
            self._adopt_orphans()
        except BaseException:
            self._lock.release()
            raise

    def close(self) -> None:
        self._lock.release()

    def _indexed_hashes(self, shard: ShardRecord) -> list[str]:
        """Hashes of an indexed shard; a damaged one stops the writer and names the fix."""
        try:
            return read_shard_hashes(self.root / SHARD_DIR / shard.name)
        except (OSError, KeyError) as error:
            raise StoreError(
                f"shard {shard.name} of store {self.root} cannot be read ({error}). Run "
                f"`python -m pipeline.store repair {self.root}`: it drops the shard, and the "
                f"next extract recomputes only its rows."
            ) from error

    @property
    def known(self) -> frozenset[str]:
        return frozenset(self._known)

    @property
    def skipped(self) -> dict[str, SkipRecord]:
        assert self.state is not None
        return {record.sha256: record for record in self.state.skipped}

    def _remove_temporaries(self) -> None:
        for directory in (self.root, self.root / SHARD_DIR):
            for leftover in directory.glob(f"{TMP_PREFIX}*"):
                leftover.unlink(missing_ok=True)
                self.log(f"store: removed {leftover.name}, left by an interrupted write")

    def _adopt_orphans(self) -> None:
        assert self.state is not None
        indexed = {shard.name for shard in self.state.shards}
        adopted: list[ShardRecord] = []
        for path in sorted((self.root / SHARD_DIR).glob("shard-*.h5")):
            if path.name in indexed:
                continue
            try:
                with h5py.File(path, "r") as handle:
                    same = handle.attrs["fingerprint"] == self.fingerprint.to_json()
                    hashes = [value.decode() for value in handle["hashes"][:]]
            except (OSError, KeyError):
                self.log(
                    f"store: {path.name} is unreadable and not indexed; "
                    f"`pipeline.store repair` removes it"
                )
                continue
            if not same or self._known.intersection(hashes) or len(set(hashes)) != len(hashes):
                path.unlink()
                self.log(
                    f"store: removed {path.name}, a shard whose rows are already indexed "
                    f"or that was computed differently"
                )
                continue
            adopted.append(
                ShardRecord(path.name, len(hashes), file_sha256(path), path.stat().st_size)
            )
            self._known.update(hashes)
            self.log(
                f"store: recovered {len(hashes)} rows from {path.name}, "
                f"committed just before an interruption"
            )
        if adopted:
            self._publish(replace(self.state, shards=self.state.shards + tuple(adopted)))

    def _publish(self, state: IndexState) -> None:
        state = replace(state, generation=state.generation + 1)
        write_index(self.root, state)
        self.state = state

    def commit(
        self, hashes: Sequence[str], codes: np.ndarray, skips: Iterable[SkipRecord] = ()
    ) -> ShardRecord | None:
        """Commit codes for ``hashes`` (rows of ``codes``) and skip records, all or nothing.

        Hashes already in the store, or repeated within the batch, are dropped, so a
        commit is idempotent and every hash is stored exactly once.
        """
        assert self.state is not None, "open() the writer first"
        keep: list[int] = []
        seen: set[str] = set()
        for position, sha in enumerate(hashes):
            if sha not in self._known and sha not in seen:
                keep.append(position)
                seen.add(sha)
        new_skips = self._new_skips(skips, seen)
        if not keep and not new_skips:
            return None
        kept_hashes = [hashes[i] for i in keep]
        record = None
        full = (
            f"disk full while committing {len(keep)} rows to {self.root}; the store still "
            f"holds its previous {self.state.rows} rows intact. Free space and rerun: only "
            f"the missing images will be computed."
        )
        with _disk_full_is(full):
            if keep:
                record = write_shard(
                    self.root / SHARD_DIR,
                    kept_hashes,
                    np.ascontiguousarray(codes[keep], dtype=self.fingerprint.dtype),
                    self.fingerprint,
                    self.compression,
                )
            shards = self.state.shards + ((record,) if record else ())
            self._publish(
                replace(self.state, shards=shards, skipped=self.state.skipped + new_skips)
            )
        self._known.update(kept_hashes)
        return record

    def _new_skips(self, skips: Iterable[SkipRecord], arriving: set[str]) -> tuple[SkipRecord, ...]:
        """Skip records not yet known, for images that have no codes and get none now."""
        recorded = {s.sha256 for s in self.state.skipped} if self.state else set()
        fresh: dict[str, SkipRecord] = {}
        for skip in skips:
            sha = skip.sha256
            if sha not in self._known and sha not in arriving and sha not in recorded:
                fresh.setdefault(sha, skip)
        return tuple(fresh.values())

    def commit_shards(
        self, records: Sequence[ShardRecord], skips: Iterable[SkipRecord] = ()
    ) -> int:
        """Index shards that other processes wrote (Dask workers) in one atomic commit.

        Each file must match its record's SHA-256 and add only new hashes; a shard that
        would duplicate indexed rows is deleted instead. Returns the number of rows added.
        """
        assert self.state is not None, "open() the writer first"
        accepted: list[ShardRecord] = []
        arriving: set[str] = set()
        for record in records:
            path = self.root / SHARD_DIR / record.name
            hashes = read_shard_hashes(path)
            clash = self._known.intersection(hashes) or arriving.intersection(hashes)
            if clash or file_sha256(path) != record.sha256 or len(set(hashes)) != len(hashes):
                path.unlink(missing_ok=True)
                self.log(f"store: refused {record.name}: duplicate rows or checksum mismatch")
                continue
            accepted.append(record)
            arriving.update(hashes)
        new_skips = self._new_skips(skips, arriving)
        if not accepted and not new_skips:
            return 0
        with _disk_full_is(f"disk full while indexing shards in {self.root}; rerun to adopt"):
            self._publish(
                replace(
                    self.state,
                    shards=self.state.shards + tuple(accepted),
                    skipped=self.state.skipped + new_skips,
                )
            )
        self._known.update(arriving)
        return len(arriving)

    def replace_shards(
        self, removed: Sequence[str], added: Sequence[ShardRecord], drop_skips: Iterable[str] = ()
    ) -> None:
        """Swap shard records in one commit (compaction, repair); files are not touched."""
        assert self.state is not None
        gone = set(removed)
        dropped = set(drop_skips)
        kept = tuple(s for s in self.state.shards if s.name not in gone)
        self._publish(
            replace(
                self.state,
                shards=kept + tuple(added),
                skipped=tuple(s for s in self.state.skipped if s.sha256 not in dropped),
            )
        )
        self._known = set()
        for shard in self.state.shards:
            self._known.update(self._indexed_hashes(shard))
