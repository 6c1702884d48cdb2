"""The scan cache on disk: one SQLite file, replaced whole; the JSON of format 2 migrated.

SQLite (stdlib) because the JSON it replaces was rewritten whole through Python's
pure-Python indenting encoder: at 100k files that was most of a rerun. A save writes a
fresh database to a temporary file and renames it into place (:func:`atomic_path`), so a
crash at any moment leaves the previous cache; it keeps only this run's entries, so
deleted files leave with it. Journaling is off for that temporary file: the rename, not
SQLite, is what makes the write atomic. Text goes in as UTF-8 bytes with surrogate
escapes, as the manifest's CSVs do, so file names that are not valid UTF-8 round-trip.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path

from features.data.scan_cache import ScanCache
from features.files import atomic_path
from features.memory import gc_paused

__all__ = ["load_scan_cache", "save_scan_cache"]

SQLITE_MAGIC = b"SQLite format 3\x00"
LEGACY_JSON_FORMAT = 2
_SCHEMA = """
CREATE TABLE meta (format INTEGER NOT NULL, decoder TEXT NOT NULL);
CREATE TABLE files (
    path BLOB PRIMARY KEY, size INTEGER, mtime_ns INTEGER, inode INTEGER, sha256 TEXT
) WITHOUT ROWID;
CREATE TABLE verdicts (key TEXT PRIMARY KEY, reason TEXT, detail BLOB) WITHOUT ROWID;
"""


def _blob(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _text(blob: bytes) -> str:
    return blob.decode("utf-8", "surrogateescape")


def save_scan_cache(path: Path, cache: ScanCache) -> None:
    """Replace ``path`` with this run's entries, whole or not at all."""
    with atomic_path(path) as tmp, closing(sqlite3.connect(tmp)) as db:
        db.execute("PRAGMA journal_mode = OFF")
        db.execute("PRAGMA synchronous = OFF")  # publish() fsyncs the finished file
        db.executescript(_SCHEMA)
        db.execute("INSERT INTO meta VALUES (?, ?)", (cache.FORMAT, cache.DECODER))
        db.executemany(
            "INSERT INTO files VALUES (?, ?, ?, ?, ?)",
            ((_blob(rel), *key, sha) for rel, (key, sha) in cache.used_files().items()),
        )
        db.executemany(
            "INSERT INTO verdicts VALUES (?, ?, ?)",
            ((key, v["reason"], _blob(v["detail"])) for key, v in cache.used_verdicts().items()),
        )
        db.commit()


def _read_sqlite(path: Path) -> ScanCache:
    uri = f"{path.resolve().as_uri()}?mode=ro"  # read-only: no journal next to a DVC out
    with closing(sqlite3.connect(uri, uri=True)) as db, gc_paused():
        meta = db.execute("SELECT format, decoder FROM meta").fetchall()
        if meta != [(ScanCache.FORMAT, ScanCache.DECODER)]:
            return ScanCache(origin=f"{path} is stale ({meta}): every file is validated again")
        files = {
            _text(rel): ((size, mtime, inode), sha)
            for rel, size, mtime, inode, sha in db.execute("SELECT * FROM files")
        }
        verdicts = {
            key: {"reason": reason, "detail": _text(detail)}
            for key, reason, detail in db.execute("SELECT * FROM verdicts")
        }
    return ScanCache(verdicts, files, f"{path}: {len(files)} files, {len(verdicts)} verdicts")


def _read_legacy_json(path: Path, data: object) -> ScanCache:
    """Verdicts of the JSON cache (format 2), kept; it has no file stats, so every file
    is hashed once more, and never decoded again."""
    if (
        not isinstance(data, dict)
        or data.get("format") != LEGACY_JSON_FORMAT
        or data.get("decoder") != ScanCache.DECODER
        or not isinstance(data.get("entries"), dict)
    ):
        return ScanCache(origin=f"{path} is a stale JSON cache: every file is validated again")
    verdicts = {
        key: {"reason": verdict["reason"], "detail": verdict["detail"]}
        for key, verdict in data["entries"].items()
        if isinstance(verdict, dict) and {"reason", "detail"} <= set(verdict)
    }
    return ScanCache(
        verdicts,
        origin=f"{path}: JSON cache of {len(verdicts)} verdicts migrated; "
        f"every file is hashed once more (no stats in that format)",
    )


def load_scan_cache(path: Path) -> ScanCache:
    """The cache saved at ``path`` (SQLite, or the older JSON); an empty one, saying why,
    when it is missing, stale or damaged: a damaged cache costs a re-validation, no more."""
    path = Path(path)
    try:
        with open(path, "rb") as stream:
            magic = stream.read(len(SQLITE_MAGIC))
        if magic == SQLITE_MAGIC:
            return _read_sqlite(path)
        return _read_legacy_json(path, json.loads(path.read_bytes()))
    except FileNotFoundError:
        return ScanCache(origin=f"no cache at {path} yet: every file is hashed and validated")
    except (OSError, ValueError, sqlite3.Error) as error:
        return ScanCache(origin=f"{path} is unreadable ({error}): every file is validated again")
