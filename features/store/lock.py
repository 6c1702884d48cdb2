"""One writer per store: an advisory ``flock`` that dies with its holder.

The kernel releases a ``flock`` when its process dies, even under SIGKILL, so a lock can
never be truly stale; the file only remembers who held it last. A second writer fails
fast with that holder's pid, host and command, and a writer that finds a lock file from a
dead process says it is taking over. The file is removed on release, so a finished store
directory (which DVC hashes and caches) never contains it.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

from features.errors import UserError

__all__ = ["LOCK_NAME", "LockError", "StoreLock"]

LOCK_NAME = "LOCK"  # in the store directory, present only while a writer runs


class LockError(UserError):
    """Another live process is writing to the store."""


def _describe(holder: dict[str, object]) -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(holder.get("since", 0))))
    return (
        f"pid {holder.get('pid')} on {holder.get('host')} since {started} "
        f"({holder.get('command', '?')})"
    )


def _read_holder(handle: int) -> dict[str, object]:
    os.lseek(handle, 0, os.SEEK_SET)
    raw = os.read(handle, 4096)
    try:
        holder = json.loads(raw.decode())
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return holder if isinstance(holder, dict) else {}


class StoreLock:
    """Exclusive, non-blocking writer lock on ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: int | None = None
        self.took_over: dict[str, object] | None = None

    def acquire(self) -> None:
        while True:
            handle = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise self._held(handle) from None
            # The previous holder may have unlinked the file between our open and flock.
            try:
                same = os.fstat(handle).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(handle)
        # Holding the flock proves the last holder is gone; a clean release removes the
        # file, so anything still written in it was left by a writer that was killed.
        self.took_over = _read_holder(handle) or None
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.time(),
            "command": " ".join(sys.argv)[:200],
        }
        self._handle = handle
        try:
            os.ftruncate(handle, 0)
            os.lseek(handle, 0, os.SEEK_SET)
            os.write(handle, json.dumps(me).encode())
            os.fsync(handle)
        except BaseException:  # a full disk: do not keep the store locked by a leaked fd
            self.release()
            raise

    def _held(self, handle: int) -> LockError:
        """The refusal naming the live holder; closes ``handle``."""
        holder = _read_holder(handle)
        os.close(handle)
        return LockError(
            f"store {self.path.parent} is being written by {_describe(holder)}. "
            f"Wait for it to finish or stop it; readers are not affected."
        )

    def check_free(self) -> None:
        """Refuse now if a live writer holds the lock, without taking it or creating files.

        Lets a run fail in a fraction of a second instead of after importing torch and
        building the network; :meth:`acquire` still decides for real.
        """
        try:
            handle = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise self._held(handle) from None
        fcntl.flock(handle, fcntl.LOCK_UN)
        os.close(handle)

    def stale_message(self) -> str | None:
        if self.took_over is None:
            return None
        return f"took over a stale lock left by {_describe(self.took_over)}, no longer running"

    def release(self) -> None:
        if self._handle is None:
            return
        self.path.unlink(missing_ok=True)
        fcntl.flock(self._handle, fcntl.LOCK_UN)
        os.close(self._handle)
        self._handle = None

    def __enter__(self) -> StoreLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
