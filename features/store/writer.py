"""Writer: the single writer of a store, turning each batch into one atomic commit.

A commit is a new immutable shard, then a commit record that lists it (the commit point,
:mod:`features.store.index`), so a reader sees the previous commit or this one, never
half, and a commit costs the same at any store size. Opening hands over to
:mod:`features.store.recovery` first, so every commit starts from a clean store; closing
folds the session's records into one checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType

import h5py
import numpy as np

from features.files import file_sha256
from features.store.errors import disk_full_is
from features.store.fingerprint import Fingerprint
from features.store.index import IndexState, append_commit, write_index
from features.store.lock import LOCK_NAME, StoreLock
from features.store.recovery import adopt_orphans, indexed_hashes, recover, remove_temporaries
from features.store.shards import (
    SHARD_DIR,
    ShardRecord,
    SkipRecord,
    read_shard_hashes,
    require_finite,
    write_shard,
)

__all__ = ["StoreWriter"]


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
        self._lock = StoreLock(self.root / LOCK_NAME)
        self._known: set[str] = set()
        self._skipped: dict[str, SkipRecord] = {}
        self._unfolded = False  # commit records written since the last checkpoint
        self.state: IndexState | None = None

    def __enter__(self) -> StoreWriter:
        self.open()
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        if kind is None:
            self.close()
        else:  # the records stay valid; the next writer folds them
            self._lock.release()

    def open(self) -> None:
        with disk_full_is(f"disk full while opening {self.root}; free space and rerun"):
            found = recover(self.root, self.fingerprint, self._lock, self._ignore, self.log)
            self.state, self._known = found.state, found.known
            self._skipped = {record.sha256: record for record in self.state.skipped}
            try:
                if found.adopted:
                    self._checkpoint(
                        replace(
                            self.state,
                            shards=self.state.shards + found.adopted,
                            generation=self.state.generation + 1,
                        )
                    )
            except BaseException:
                self._lock.release()
                raise

    def close(self) -> None:
        """Fold this session's commit records into one checkpoint, then unlock, so a
        finished store is ``index.h5`` and its shards, as any HDF5 tool reads it."""
        try:
            if self._unfolded and self.state is not None:
                with disk_full_is(f"disk full while closing {self.root}; its commits are kept"):
                    self._checkpoint(self.state)
        finally:
            self._lock.release()

    @property
    def known(self) -> AbstractSet[str]:
        """Hashes with codes: a read-only view (asked once per image, so never copied)."""
        return self._known

    @property
    def skipped(self) -> Mapping[str, SkipRecord]:
        """Skip records by hash: a read-only view, kept up to date commit by commit."""
        return MappingProxyType(self._skipped)

    def _checkpoint(self, state: IndexState) -> None:
        write_index(self.root, state)
        self.state = state
        self._skipped = {record.sha256: record for record in state.skipped}
        self._unfolded = False

    def _append(self, shards: tuple[ShardRecord, ...], skips: tuple[SkipRecord, ...]) -> None:
        assert self.state is not None
        before = len(self.state.skipped)
        self.state = append_commit(self.root, self.state, shards, skips)
        self._skipped.update((record.sha256, record) for record in self.state.skipped[before:])
        self._unfolded = True

    def commit(
        self, hashes: Sequence[str], codes: np.ndarray, skips: Iterable[SkipRecord] = ()
    ) -> ShardRecord | None:
        """Commit codes for ``hashes`` (rows of ``codes``) and skip records, all or nothing.

        Hashes already in the store, or repeated within the batch, are dropped, so a
        commit is idempotent and every hash is stored exactly once. Codes holding NaN or
        inf are refused with ``ValueError`` (by ``write_shard``), before anything is written.
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
        with disk_full_is(full):
            if keep:
                record = write_shard(
                    self.root / SHARD_DIR,
                    kept_hashes,
                    np.ascontiguousarray(codes[keep], dtype=self.fingerprint.dtype),
                    self.fingerprint,
                    self.compression,
                )
            self._append((record,) if record else (), new_skips)
        self._known.update(kept_hashes)
        return record

    def _new_skips(self, skips: Iterable[SkipRecord], arriving: set[str]) -> tuple[SkipRecord, ...]:
        """Skip records not yet known, for images that have no codes and get none now."""
        fresh: dict[str, SkipRecord] = {}
        for skip in skips:
            sha = skip.sha256
            if sha not in self._known and sha not in arriving and sha not in self._skipped:
                fresh.setdefault(sha, skip)
        return tuple(fresh.values())

    def commit_shards(
        self, records: Sequence[ShardRecord], skips: Iterable[SkipRecord] = ()
    ) -> int:
        """Index shards that other processes wrote (Dask workers) in one atomic commit.

        Each file must match its record's SHA-256 and add only new hashes; a shard that
        would duplicate indexed rows is deleted instead. A shard holding NaN or inf is
        deleted and refused with ``ValueError``. Returns the number of rows added.
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
            _require_finite_shard(path)
            accepted.append(record)
            arriving.update(hashes)
        new_skips = self._new_skips(skips, arriving)
        if not accepted and not new_skips:
            return 0
        with disk_full_is(f"disk full while indexing shards in {self.root}; rerun to adopt"):
            self._append(tuple(accepted), new_skips)
        self._known.update(arriving)
        return len(arriving)

    def settle_orphans(self) -> int:
        """Clean up after other processes that wrote into the store (Dask workers): remove
        their temporaries, delete unindexed shards whose rows are indexed already (a dead
        worker's first attempt at a partition Dask then ran again), and index any that add
        rows. Call only once every writer has finished; returns the rows indexed."""
        assert self.state is not None, "open() the writer first"
        remove_temporaries(self.root, self.log)
        before = len(self._known)
        adopted = adopt_orphans(self.root, self.state, self._known, self.log)
        if adopted:
            self._append(adopted, ())
        return len(self._known) - before

    def replace_shards(
        self, removed: Sequence[str], added: Sequence[ShardRecord], drop_skips: Iterable[str] = ()
    ) -> None:
        """Swap shard records in one commit (compaction, repair); files are not touched."""
        assert self.state is not None
        gone = set(removed)
        dropped = set(drop_skips)
        kept = tuple(s for s in self.state.shards if s.name not in gone)
        self._checkpoint(
            replace(
                self.state,
                shards=kept + tuple(added),
                skipped=tuple(s for s in self.state.skipped if s.sha256 not in dropped),
                generation=self.state.generation + 1,
            )
        )
        self._known = set()
        for shard in self.state.shards:
            self._known.update(indexed_hashes(self.root, shard))


def _require_finite_shard(path: Path) -> None:
    """Refuse a worker's shard holding NaN or inf, deleting it: else the next writer adopts it."""
    try:
        with h5py.File(path, "r") as handle:
            require_finite(handle["codes"], f"refused {path.name}")
    except ValueError:
        path.unlink(missing_ok=True)
        raise
