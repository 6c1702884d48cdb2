"""Verify, repair, compact and describe a store: the tools for when something went wrong.

``verify`` trusts nothing: it re-hashes every shard against the checksum the index
recorded, reopens it, and checks fingerprint, shape, dtype, hash uniqueness and that every
code is finite. ``repair`` drops whatever verify found bad, so the next extract recomputes
exactly those rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from features.files import TMP_PREFIX, file_sha256
from features.store.checkpoint import INDEX_NAME
from features.store.errors import StoreError
from features.store.fingerprint import Fingerprint
from features.store.hashindex import HashIndex
from features.store.index import COMMIT_DIR, IndexState, read_index
from features.store.reader import FeatureStore
from features.store.shards import (
    HASH_DTYPE,
    SHARD_DIR,
    ShardRecord,
    non_finite_rows,
    read_shard_hashes,
    write_shard,
)
from features.store.writer import StoreWriter

__all__ = ["Problem", "VerifyReport", "compact", "info", "repair", "verify"]


@dataclass(frozen=True)
class Problem:
    """One finding; ``shard`` is None for store-wide findings."""

    kind: str  # missing, truncated, corrupt, unreadable, fingerprint, shape, non_finite, ...
    shard: str | None
    detail: str

    def __str__(self) -> str:
        where = f"{self.shard}: " if self.shard else ""
        return f"[{self.kind}] {where}{self.detail}"


@dataclass
class VerifyReport:
    """Problems make the store lie or fail; notices (orphans, temp files) do not."""

    rows: int = 0  # in shards without problems: what readers can be served
    shards: int = 0
    indexed_rows: int = 0  # what the index lists, damaged shards included
    problems: list[Problem] = field(default_factory=list)
    notices: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        """One line: what the index lists, and how much of it is healthy."""
        if self.ok:
            return f"{self.rows} rows in {self.shards} shards: OK"
        return (
            f"the index lists {self.indexed_rows} rows in {self.shards} shards, "
            f"{self.rows} of them healthy: {len(self.problems)} problem(s)"
        )

    def bad_shards(self) -> set[str]:
        return {p.shard for p in self.problems if p.shard is not None}


def _check_shard(
    root: Path, record: ShardRecord, fingerprint: Fingerprint, full: bool
) -> tuple[list[Problem], np.ndarray | None]:
    path = root / SHARD_DIR / record.name
    if not path.exists():
        return [Problem("missing", record.name, "listed in the index but not on disk")], None
    size = path.stat().st_size
    if size != record.bytes:
        kind = "truncated" if size < record.bytes else "corrupt"
        return [
            Problem(kind, record.name, f"{size} bytes on disk, index recorded {record.bytes}")
        ], None
    if full and file_sha256(path) != record.sha256:
        return [Problem("corrupt", record.name, "SHA-256 differs from the index")], None
    try:
        with h5py.File(path, "r") as handle:
            stored = Fingerprint.from_json(handle.attrs["fingerprint"])
            codes, hashes = handle["codes"], handle["hashes"]
            problems = []
            if stored != fingerprint:
                problems.append(
                    Problem("fingerprint", record.name, "; ".join(stored.differences(fingerprint)))
                )
            if codes.shape != (record.rows, fingerprint.dim) or hashes.shape != (record.rows,):
                problems.append(
                    Problem(
                        "shape",
                        record.name,
                        f"codes {codes.shape}, hashes {hashes.shape}, index says "
                        f"({record.rows}, {fingerprint.dim})",
                    )
                )
            if codes.dtype != np.dtype(fingerprint.dtype):
                problems.append(
                    Problem("dtype", record.name, f"{codes.dtype}, expected {fingerprint.dtype}")
                )
            broken = non_finite_rows(codes) if full else ()  # every chunk decodes
            if len(broken):
                detail = f"{len(broken)} of {record.rows} rows hold NaN or inf"
                problems.append(Problem("non_finite", record.name, detail))
            return problems, hashes[:]
    except (OSError, KeyError, ValueError) as error:
        return [Problem("unreadable", record.name, str(error))], None


def _read_state(root: Path, strict: bool = True) -> IndexState:
    """The committed index, or a :class:`StoreError` that says what to do instead;
    ``strict=False`` stops at a missing commit record (repair heals it) instead."""
    if not (root / INDEX_NAME).is_file():
        raise StoreError(f"no feature store at {root}: run the extract stage first")
    try:
        return read_index(root, strict)
    except (OSError, KeyError, ValueError) as error:
        raise StoreError(
            f"cannot read {root / INDEX_NAME} ({error}); without it no shard can be trusted. "
            f"Move the store aside and run the extract stage again."
        ) from error


def _duplicates(hashes: np.ndarray, starts: list[int], names: list[str]) -> list[Problem]:
    """One problem per hash stored more than once, found by sorting, not a dict of all;
    shard ``names[i]`` holds ``hashes[starts[i]:]`` up to the next start."""
    problems = []
    for sha in HashIndex(hashes).duplicates():
        where = np.flatnonzero(hashes == sha)
        first = names[int(np.searchsorted(starts, where[0], side="right")) - 1]
        detail = f"{sha.decode()} stored {len(where)} times (first in {first})"
        problems.append(Problem("duplicate", None, detail))
    return problems


def verify(root: Path, full: bool = True) -> VerifyReport:
    """Check every shard against the index; ``full`` re-hashes and decodes all bytes."""
    root = Path(root)
    report = VerifyReport()
    try:
        state = read_index(root)
    except (OSError, KeyError, ValueError) as error:
        report.problems.append(Problem("index", None, f"{root / INDEX_NAME}: {error}"))
        return report
    report.shards = len(state.shards)
    report.indexed_rows = state.rows
    healthy = np.empty(state.rows, dtype=HASH_DTYPE)  # filled shard by shard: one copy
    starts: list[int] = []
    names: list[str] = []
    for record in state.shards:
        problems, hashes = _check_shard(root, record, state.fingerprint, full)
        report.problems.extend(problems)
        if not problems and hashes is not None:
            starts.append(report.rows)
            names.append(record.name)
            healthy[report.rows : report.rows + record.rows] = hashes
            report.rows += record.rows
    report.problems.extend(_duplicates(healthy[: report.rows], starts, names))
    indexed = {record.name for record in state.shards}
    for path in sorted((root / SHARD_DIR).glob("shard-*.h5")):
        if path.name not in indexed:
            report.notices.append(
                Problem("orphan", path.name, "on disk but not in the index (not served)")
            )
    for directory in (root, root / SHARD_DIR, root / COMMIT_DIR):
        for path in sorted(directory.glob(f"{TMP_PREFIX}*")):
            report.notices.append(
                Problem("temporary", path.name, "left by an interrupted write (not served)")
            )
    return report


def repair(root: Path, log=print) -> VerifyReport:
    """Drop bad shards and stray files; the next extract recomputes the dropped rows."""
    root = Path(root)
    state = _read_state(root, strict=False)
    report = verify(root)
    bad = report.bad_shards()
    duplicates = [p for p in report.problems if p.kind == "duplicate"]
    with StoreWriter(root, state.fingerprint, log=log, ignore=bad) as writer:
        # Opening removed temporaries and adopted or removed orphans.
        if bad:
            writer.replace_shards(removed=sorted(bad), added=[])
            for name in sorted(bad):
                (root / SHARD_DIR / name).unlink(missing_ok=True)
                log(f"store: dropped {name}; its rows will be recomputed")
        if duplicates:
            _rewrite_without_duplicates(writer, log)
    return verify(root)


def _rewrite_without_duplicates(writer: StoreWriter, log) -> None:
    """Keep each hash's first occurrence; rewrite later shards that repeat it."""
    assert writer.state is not None
    seen: set[str] = set()
    root = writer.root
    for record in list(writer.state.shards):
        path = root / SHARD_DIR / record.name
        with h5py.File(path, "r") as handle:
            hashes = [value.decode() for value in handle["hashes"][:]]
            keep = [i for i, sha in enumerate(hashes) if sha not in seen]
            seen.update(hashes)
            if len(keep) == len(hashes):
                continue
            codes = handle["codes"][:][keep]
        added = (
            [
                write_shard(
                    root / SHARD_DIR,
                    [hashes[i] for i in keep],
                    codes,
                    writer.fingerprint,
                    writer.compression,
                )
            ]
            if keep
            else []
        )
        writer.replace_shards(removed=[record.name], added=added)
        path.unlink()
        log(f"store: rewrote {record.name} without {len(hashes) - len(keep)} duplicate rows")


def compact(root: Path, target_rows: int = 16384, log=print) -> tuple[int, int]:
    """Merge shards smaller than ``target_rows`` into as few as possible, atomically.

    The merged shards are published before the old ones are removed, so a crash at any
    point leaves either the old or the new set indexed; the next writer deletes the
    leftovers because their rows are already indexed.
    """
    root = Path(root)
    state = _read_state(root)
    with StoreWriter(root, state.fingerprint, log=log) as writer, FeatureStore(root) as reader:
        assert writer.state is not None
        small = [s for s in writer.state.shards if s.rows < target_rows]
        before = len(writer.state.shards)
        if len(small) < 2:
            return before, before
        hashes: list[str] = []
        for record in small:
            hashes.extend(read_shard_hashes(root / SHARD_DIR / record.name))
        added = []
        for start in range(0, len(hashes), target_rows):
            block = hashes[start : start + target_rows]
            added.append(
                write_shard(
                    root / SHARD_DIR,
                    block,
                    reader.get(block),
                    writer.fingerprint,
                    writer.compression,
                )
            )
        writer.replace_shards(removed=[s.name for s in small], added=added)
        for record in small:
            (root / SHARD_DIR / record.name).unlink(missing_ok=True)
        log(f"store: merged {len(small)} shards into {len(added)}")
        return before, len(writer.state.shards)


def info(root: Path) -> dict[str, object]:
    """What a person wants to know about a store at a glance."""
    root = Path(root)
    state = _read_state(root)
    shard_bytes = sum(s.bytes for s in state.shards)
    raw = state.rows * state.fingerprint.dim * np.dtype(state.fingerprint.dtype).itemsize
    return {
        "path": str(root),
        "fingerprint": {k: v for k, v in vars(state.fingerprint).items()},
        "random_weights": state.fingerprint.is_random,
        "rows": state.rows,
        "shards": len(state.shards),
        "skipped": len(state.skipped),
        "generation": state.generation,
        "bytes_on_disk": shard_bytes,
        "bytes_per_image": round(shard_bytes / state.rows, 1) if state.rows else None,
        "raw_bytes_per_image": raw / state.rows if state.rows else None,
    }
