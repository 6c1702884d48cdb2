"""Recovery: take over a store from a writer that died, losing nothing it finished.

Runs once per writer, under the lock, before the first commit, in this order:

1. take the lock (the kernel released a dead holder's ``flock``; we only say who it was);
2. remove temporary files: writes that never reached their rename;
3. read the index (checkpoint and commit records), or create an empty one, and refuse a
   different fingerprint;
4. fold the commit records a killed writer left into a new checkpoint (deleting any that
   follow a missing one: their shards are orphans below), and rewrite a format-1 index;
5. collect the hashes already indexed;
6. adopt orphans: complete shards renamed into place whose index commit never happened.

The commit path (:mod:`features.store.writer`) starts from what this returns.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

import h5py

from features.files import TMP_PREFIX, file_sha256, fsync_path
from features.store.checkpoint import FORMAT, INDEX_NAME, checkpoint_format
from features.store.errors import StoreError
from features.store.fingerprint import Fingerprint
from features.store.index import (
    COMMIT_DIR,
    IndexState,
    commit_files,
    read_index,
    write_index,
)
from features.store.lock import StoreLock
from features.store.shards import SHARD_DIR, ShardRecord, non_finite_rows, read_shard_hashes

__all__ = ["Recovered", "adopt_orphans", "indexed_hashes", "recover", "remove_temporaries"]

Log = Callable[[str], None]


@dataclass
class Recovered:
    """The last commit as found, the hashes it holds, and orphans still to be indexed."""

    state: IndexState
    known: set[str]
    adopted: tuple[ShardRecord, ...]


def recover(
    root: Path, fingerprint: Fingerprint, lock: StoreLock, ignore: Collection[str], log: Log
) -> Recovered:
    """Take ``lock`` and bring ``root`` back to a state the writer can commit on.

    ``ignore`` names indexed shards not to read (repair is about to drop them). On any
    error the lock is released again.
    """
    (root / SHARD_DIR).mkdir(parents=True, exist_ok=True)
    _make_commit_dir(root)
    lock.acquire()
    try:
        if message := lock.stale_message():
            log(f"store: {message}")
        remove_temporaries(root, log)
        if (root / INDEX_NAME).exists():
            state = read_index(root, strict=False)
            state.fingerprint.require_same(fingerprint, f"store {root}")
            _fold(root, state, log)
        else:
            state = IndexState(fingerprint, (), (), 0)
            write_index(root, state)
        known: set[str] = set()
        for shard in state.shards:
            if shard.name not in ignore:
                known.update(indexed_hashes(root, shard))
        adopted = adopt_orphans(root, state, known, log)
    except BaseException:
        lock.release()
        raise
    return Recovered(state, known, adopted)


def _make_commit_dir(root: Path) -> None:
    """``commits/``, durably: DVC does not restore an empty folder, and records renamed
    into a folder whose own entry was lost would vanish with it."""
    if not (root / COMMIT_DIR).is_dir():
        (root / COMMIT_DIR).mkdir()
        fsync_path(root)


def _fold(root: Path, state: IndexState, log: Log) -> None:
    """Checkpoint ``state`` if commit records or an old format remain; it stays the same
    generation, as it holds the same commits."""
    records = commit_files(root)
    stray = [path for generation, path in records.items() if generation > state.generation]
    for path in stray:
        path.unlink()
        log(
            f"store: removed {path.name}, a commit record after a missing one; "
            f"its shards are adopted again below"
        )
    if stray:  # durably gone before a checkpoint could make them look next in line
        fsync_path(root / COMMIT_DIR)
    if records or checkpoint_format(root) != FORMAT:
        write_index(root, state)


def remove_temporaries(root: Path, log: Log) -> None:
    for directory in (root, root / SHARD_DIR, root / COMMIT_DIR):
        for leftover in directory.glob(f"{TMP_PREFIX}*"):
            leftover.unlink(missing_ok=True)
            log(f"store: removed {leftover.name}, left by an interrupted write")


def indexed_hashes(root: Path, shard: ShardRecord) -> list[str]:
    """Hashes of an indexed shard; a damaged one stops the writer and names the fix."""
    try:
        return read_shard_hashes(root / SHARD_DIR / shard.name)
    except (OSError, KeyError) as error:
        raise StoreError(
            f"shard {shard.name} of store {root} cannot be read ({error}). Run "
            f"`python -m pipeline.store repair {root}`: it drops the shard, and the "
            f"next extract recomputes only its rows."
        ) from error


def adopt_orphans(
    root: Path, state: IndexState, known: set[str], log: Log
) -> tuple[ShardRecord, ...]:
    """Records for unindexed shards worth keeping; their hashes are added to ``known``.

    A shard is kept only if it has the store's fingerprint, only finite codes, and adds
    rows nobody holds yet; others are deleted, and unreadable ones left for ``repair``.
    """
    indexed = {shard.name for shard in state.shards}
    adopted: list[ShardRecord] = []
    for path in sorted((root / SHARD_DIR).glob("shard-*.h5")):
        if path.name in indexed:
            continue
        try:
            with h5py.File(path, "r") as handle:
                same = handle.attrs["fingerprint"] == state.fingerprint.to_json()
                hashes = [value.decode() for value in handle["hashes"][:]]
                finite = not len(non_finite_rows(handle["codes"]))
        except (OSError, KeyError):
            log(
                f"store: {path.name} is unreadable and not indexed; "
                f"`pipeline.store repair` removes it"
            )
            continue
        if not finite or not same or known.intersection(hashes) or len(set(hashes)) != len(hashes):
            path.unlink()
            log(
                f"store: removed {path.name}, a shard whose rows are already indexed, "
                f"hold NaN or inf, or were computed differently"
            )
            continue
        adopted.append(ShardRecord(path.name, len(hashes), file_sha256(path), path.stat().st_size))
        known.update(hashes)
        log(
            f"store: recovered {len(hashes)} rows from {path.name}, "
            f"committed just before an interruption"
        )
    return tuple(adopted)
