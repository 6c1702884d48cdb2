"""Index: the last checkpoint plus one small commit record per commit since, so that a
commit costs the same whether the store holds 10 shards or 10,000.

A commit writes ``commits/<generation>.json`` (the shards and skip records it adds) under
a temporary name, fsyncs it and renames it into place: that rename is the commit point.
Readers replay the records that follow the checkpoint's generation, in order; a
checkpoint (:mod:`features.store.checkpoint`) absorbs them and then deletes them.

Records are written one after another, each durable before the next, so a crash leaves
a gapless run of them. A reader that finds a gap, or finds ``index.h5`` replaced while
it read, raced a writer folding records into a new checkpoint and reads again.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, replace
from pathlib import Path

from features.files import publish, temporary_path
from features.store.checkpoint import (
    INDEX_NAME,
    IndexState,
    fit_detail,
    read_checkpoint,
    write_checkpoint,
)
from features.store.shards import ShardRecord, SkipRecord

__all__ = [
    "COMMIT_DIR",
    "IndexState",
    "JournalGap",
    "append_commit",
    "commit_files",
    "read_index",
    "write_index",
]

COMMIT_DIR = "commits"
_RECORD = re.compile(r"^(\d{12})\.json$")
_ATTEMPTS = 5  # a reader racing a fold reads the new checkpoint


class JournalGap(ValueError):
    """A commit record is missing while later ones exist: the index was damaged."""


def commit_files(root: Path) -> dict[int, Path]:
    """Every commit record on disk, by generation."""
    try:
        names = os.listdir(root / COMMIT_DIR)
    except FileNotFoundError:
        return {}
    return {
        int(match.group(1)): root / COMMIT_DIR / name
        for name in names
        if (match := _RECORD.match(name))
    }


def append_commit(
    root: Path,
    state: IndexState,
    shards: tuple[ShardRecord, ...],
    skipped: tuple[SkipRecord, ...],
) -> IndexState:
    """Commit ``shards`` and ``skipped`` on top of ``state``; the new state.

    Writes only this commit's record: its cost does not depend on the store's size.
    """
    skipped = tuple(replace(skip, detail=fit_detail(skip.detail)) for skip in skipped)
    generation = state.generation + 1
    record = {
        "generation": generation,
        "shards": [asdict(shard) for shard in shards],
        "skipped": [asdict(skip) for skip in skipped],
    }
    directory = root / COMMIT_DIR
    tmp = temporary_path(directory, ".json")
    try:
        with open(tmp, "wb") as stream:
            stream.write(json.dumps(record).encode())
        publish(tmp, directory / f"{generation:012d}.json")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return replace(
        state,
        shards=state.shards + shards,
        skipped=state.skipped + skipped,
        generation=generation,
    )


def write_index(root: Path, state: IndexState) -> None:
    """Write ``state`` as the checkpoint, then delete the commit records it absorbed.

    The caller holds the lock and has already deleted any record beyond
    ``state.generation``, so none can be replayed on top of this checkpoint.
    """
    write_checkpoint(root, state)
    for generation, path in sorted(commit_files(root).items()):
        if generation <= state.generation:  # oldest first: a reader sees a gap, never a mix
            path.unlink(missing_ok=True)


def _replay(state: IndexState, path: Path) -> IndexState:
    record = json.loads(path.read_bytes())
    if record["generation"] != state.generation + 1:
        raise ValueError(f"{path} holds generation {record['generation']}")
    return replace(
        state,
        shards=state.shards + tuple(ShardRecord(**shard) for shard in record["shards"]),
        skipped=state.skipped + tuple(SkipRecord(**skip) for skip in record["skipped"]),
        generation=record["generation"],
    )


def _checkpoint_id(root: Path) -> tuple[int, int, int]:
    status = (root / INDEX_NAME).stat()
    return status.st_ino, status.st_mtime_ns, status.st_size


def _read_once(root: Path, strict: bool) -> IndexState:
    before = _checkpoint_id(root)
    state = read_checkpoint(root)
    records = commit_files(root)
    while (path := records.get(state.generation + 1)) is not None:
        state = _replay(state, path)
    later = [generation for generation in records if generation > state.generation]
    if _checkpoint_id(root) != before:
        raise FileNotFoundError(f"{root / INDEX_NAME} was replaced while being read")
    if later and strict:
        raise JournalGap(
            f"{root / COMMIT_DIR} lacks the record of generation {state.generation + 1} "
            f"but holds later ones ({min(later)}..{max(later)}). Run `python -m "
            f"pipeline.store repair {root}`: it keeps the commits before the gap and "
            f"re-indexes the shards of those after it."
        )
    return state


def read_index(root: Path, strict: bool = True) -> IndexState:
    """The committed state: the checkpoint, then each commit record that follows it.

    ``strict=False`` (a writer recovering under the lock) stops at a gap instead of
    refusing; the shards of the records after it are then orphans, adopted again.
    """
    for _ in range(_ATTEMPTS - 1):
        try:
            return _read_once(root, strict)
        except (FileNotFoundError, JournalGap):
            # A fold replaced the checkpoint and deleted records meanwhile: read again.
            if not (root / INDEX_NAME).exists():
                raise
    return _read_once(root, strict)
