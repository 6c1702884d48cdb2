"""Files written whole or not at all, and the checksums that prove what they hold.

The lowest layer: every module that writes a file (store shards and index, manifests,
heads, reports, plots) goes through :func:`atomic_path`, so a crash, a full disk or Ctrl-C
at any moment leaves either the old file or the complete new one, never half of either.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = [
    "TMP_PREFIX",
    "atomic_open",
    "atomic_path",
    "file_sha256",
    "fsync_path",
    "publish",
    "temporary_path",
    "write_bytes",
    "write_json",
    "write_text",
]

TMP_PREFIX = ".tmp-"  # hidden, and what recovery sweeps up after a killed writer


def fsync_path(path: Path) -> None:
    """Flush a file's data, or a directory's entries (a rename), to stable storage."""
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def publish(tmp: Path, final: Path) -> None:
    """Make a fully written temporary file durable and visible under its final name."""
    fsync_path(tmp)
    os.replace(tmp, final)
    fsync_path(final.parent)


def temporary_path(directory: Path, suffix: str) -> Path:
    """A fresh hidden name in ``directory``: same filesystem, so the rename is atomic.

    ``suffix`` is kept so that writers which pick a format from the name (matplotlib,
    joblib's compression) write the same bytes as they would to the final name.
    """
    return directory / f"{TMP_PREFIX}{secrets.token_hex(8)}{suffix}"


@contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``final`` durably.

    On any exception (Ctrl-C included) the temporary file is removed and ``final`` is
    left exactly as it was.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(final.parent, final.suffix)
    try:
        yield tmp
        publish(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_open(final: Path, mode: str = "w", **options: Any) -> Iterator[IO[Any]]:
    """``open(final, mode)``, but written to a temporary file that replaces ``final`` whole.

    The stream is closed before the rename, so what becomes visible is complete.
    """
    with atomic_path(final) as tmp, open(tmp, mode, **options) as stream:
        yield stream


def write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode())


def write_json(path: Path, data: object) -> None:
    write_text(path, json.dumps(data, indent=2) + "\n")


def file_sha256(path: Path, block: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(block):
            digest.update(chunk)
    return digest.hexdigest()
