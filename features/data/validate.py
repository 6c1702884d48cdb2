"""One candidate image's content hash and verdict: recalled when unchanged, else computed.

Kept apart from the walk (:mod:`features.data.scan`), which decides what is a candidate,
and from the cache (:mod:`features.data.scan_cache`), which only remembers. A verdict's
reason is empty for a usable image, else why it is skipped.
"""

from __future__ import annotations

import os
from pathlib import Path

from features.data.images import ImageLimits, ImageRejected, probe_image
from features.data.scan_cache import ScanCache, Verdict, file_key
from features.files import file_sha256

__all__ = ["recall", "validate"]

NOT_REGULAR = "not a regular file (a FIFO, socket or device); never opened"


def recall(
    path: Path, relative: str, limits: ImageLimits, cache: ScanCache
) -> tuple[str, Verdict] | None:
    """``(sha256, verdict)`` of a file unchanged since a cached run, without reading it;
    None when it must be validated (new, changed, moved, or its verdict unknown)."""
    try:
        key = file_key(os.stat(path))
    except OSError:
        return None
    sha = cache.known_hash(relative, key) if key else None
    verdict = cache.get(sha, limits) if sha else None
    return None if verdict is None else (sha, verdict)


def validate(
    path: Path, relative: str, limits: ImageLimits, cache: ScanCache
) -> tuple[str, Verdict]:
    """``(sha256, verdict)`` from the bytes: hashed, then decoded unless the cache already
    judged that content; ``("", unreadable)`` for a file that cannot be read."""
    try:
        before = file_key(os.stat(path))
        if before is None:
            return "", {"reason": "unreadable", "detail": NOT_REGULAR}
        sha = file_sha256(path)
        cache.remember_hash(relative, before, file_key(os.stat(path)), sha)
    except OSError as error:
        return "", {"reason": "unreadable", "detail": str(error.strerror)}
    verdict = cache.get(sha, limits)
    if verdict is None:
        try:
            probe = probe_image(path, limits)
            verdict = {
                "reason": "",
                "detail": f"{probe.format} {probe.mode} {probe.width}x{probe.height}",
            }
        except ImageRejected as rejected:
            verdict = {"reason": rejected.reason, "detail": rejected.detail}
        cache.put(sha, limits, verdict)
    return sha, verdict
