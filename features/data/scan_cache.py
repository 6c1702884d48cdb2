"""The scan's memory, kept across runs of ``prepare``: content hashes by file, verdicts by hash.

Two maps, because they answer two questions. ``files`` says whether a file must be read
again: its relative path, size, mtime (ns) and inode, as DVC's state database keeps them,
give the sha256 of its bytes without reading them. ``verdicts`` says whether those bytes
must be decoded again: keyed by the sha256, the limits and the decoder, so identity stays
content (a file moved or copied is hashed again, and its verdict is found by its hash).

A file whose mtime is within :data:`RACY_NS` of the scan's start is hashed but not
remembered (git's "racy" rule): a second write in the same timestamp tick, with the same
size, would otherwise go unseen. What this cannot see, as neither DVC nor git can: bytes
rewritten in place with size and mtime set back by hand (``cp -p`` over an existing file).
"""

from __future__ import annotations

import os
import stat
import time

import PIL

from features.data.images import ImageLimits

__all__ = ["RACY_NS", "FileKey", "ScanCache", "Verdict", "file_key"]

RACY_NS = 2_000_000_000  # 2 s: far beyond any filesystem's timestamp tick, and clock drift

FileKey = tuple[int, int, int]  # (size, mtime_ns, inode)
Verdict = dict[str, str]  # {"reason": ..., "detail": ...}; reason "" for a usable image


def file_key(info: os.stat_result) -> FileKey | None:
    """What says a file is unchanged; None for anything but a regular file."""
    if not stat.S_ISREG(info.st_mode):
        return None
    return info.st_size, info.st_mtime_ns, info.st_ino


class ScanCache:
    """Content hashes by file and validation verdicts by content, for one scan.

    A verdict depends on the bytes, the limits and the decoder, so it is keyed by all
    three: a file that was skipped stays skipped until its bytes (hence its hash) change.
    Only entries used in this run are saved, so the cache never outgrows the data.
    Bump :attr:`FORMAT` whenever the validation rules change, to drop stale verdicts.
    """

    FORMAT = 3
    DECODER = f"Pillow {PIL.__version__}"

    def __init__(
        self,
        verdicts: dict[str, Verdict] | None = None,
        files: dict[str, tuple[FileKey, str]] | None = None,
        origin: str = "new",
    ) -> None:
        self.entries = dict(verdicts or {})  # "sha256:min_side:max_pixels" -> verdict
        self.files = dict(files or {})  # relative path -> ((size, mtime_ns, inode), sha256)
        self.origin = origin  # what was loaded, or why nothing was: for the stage's log
        self._used: set[str] = set()
        self._seen: dict[str, tuple[FileKey, str]] = {}
        self._racy_after = time.time_ns() - RACY_NS

    @staticmethod
    def _key(sha256: str, limits: ImageLimits) -> str:
        return f"{sha256}:{limits.min_side}:{limits.max_pixels}"

    def get(self, sha256: str, limits: ImageLimits) -> Verdict | None:
        key = self._key(sha256, limits)
        self._used.add(key)
        return self.entries.get(key)

    def put(self, sha256: str, limits: ImageLimits, verdict: Verdict) -> None:
        key = self._key(sha256, limits)
        self._used.add(key)
        self.entries[key] = verdict

    def known_hash(self, relative: str, key: FileKey) -> str | None:
        """The sha256 of an unchanged file (same path, size, mtime and inode), else None."""
        known = self.files.get(relative)
        if known is None or known[0] != key:
            return None
        self._seen[relative] = known
        return known[1]

    def remember_hash(self, relative: str, before: FileKey, after: FileKey, sha256: str) -> None:
        """Keep ``sha256`` for the file unless it changed while it was read, or may change
        again unseen within its timestamp tick."""
        if before == after and before[1] < self._racy_after:
            self._seen[relative] = (before, sha256)

    def used_verdicts(self) -> dict[str, Verdict]:
        """The verdicts this run looked up or made, by key: what a save keeps."""
        return {key: self.entries[key] for key in sorted(self._used & set(self.entries))}

    def used_files(self) -> dict[str, tuple[FileKey, str]]:
        """The files this run recognised or hashed, by path: what a save keeps."""
        return dict(sorted(self._seen.items()))
