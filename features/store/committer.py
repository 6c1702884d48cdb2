"""Writer thread: buffer finished batches and commit them to the store in the background.

HDF5 writes, checksums and fsyncs overlap the next forward passes instead of stalling
them. A commit happens every ``commit_rows`` codes or ``commit_seconds``, whichever comes
first, and always at whole-batch boundaries, so a resumed run forms exactly the batches
an uninterrupted run would have formed (which keeps CPU results bit-identical).
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from features.store.shards import Failure, SkipRecord

__all__ = ["CommitStats", "Commits", "Committer", "HostCodes"]


class Commits(Protocol):
    """Where a commit goes: one store (:class:`StoreWriter`) or several (``StoreFanout``)."""

    def commit(self, hashes: list[str], codes: np.ndarray, skips: list[SkipRecord]) -> object:
        """Commit ``codes`` for ``hashes`` and the skip records, atomically per store."""


class HostCodes(Protocol):
    """A batch of codes that may still be on its way to host memory."""

    def numpy(self) -> np.ndarray:
        """The codes, array of shape (n_images, dim), once they have landed."""


_STOP = object()


@dataclass
class CommitStats:
    """What the writer thread has made durable so far."""

    rows: int = 0
    commits: int = 0
    skipped: int = 0
    transient_failures: list[Failure] = field(default_factory=list)


class Committer:
    """Background committer; ``close()`` flushes and re-raises any writer error."""

    def __init__(
        self,
        writer: Commits,
        commit_rows: int,
        commit_seconds: float,
        max_pending_batches: int = 8,
    ) -> None:
        self.writer = writer
        self.commit_rows = commit_rows
        self.commit_seconds = commit_seconds
        self.stats = CommitStats()
        self._queue: queue.Queue = queue.Queue(maxsize=max_pending_batches)
        self._error: BaseException | None = None
        self._done = threading.Event()  # set by the thread itself as its very last step
        self._thread = threading.Thread(target=self._run, name="store-committer", daemon=True)
        self._thread.start()

    def submit(self, hashes: list[str], codes: HostCodes | None, failures: list[Failure]) -> None:
        self._raise_if_failed()
        self._queue.put((hashes, codes, failures))

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        hashes: list[str] = []
        blocks: list[np.ndarray] = []
        skips: list[SkipRecord] = []
        last_commit = time.monotonic()
        try:
            while True:
                item = self._queue.get()
                if item is _STOP:
                    break
                batch_hashes, codes, failures = item
                if batch_hashes:
                    hashes.extend(batch_hashes)
                    blocks.append(codes.numpy())
                for failure in failures:
                    if failure.permanent:
                        skips.append(SkipRecord(failure.sha256, failure.reason, failure.detail))
                    else:
                        self.stats.transient_failures.append(failure)
                due = time.monotonic() - last_commit >= self.commit_seconds
                if len(hashes) >= self.commit_rows or (due and (hashes or skips)):
                    self._commit(hashes, blocks, skips)
                    hashes, blocks, skips = [], [], []
                    last_commit = time.monotonic()
            if hashes or skips:
                self._commit(hashes, blocks, skips)
        except BaseException as error:  # surfaced to the main thread by close()/submit()
            self._error = error
            while True:  # unblock a producer waiting on a full queue
                try:
                    if self._queue.get_nowait() is _STOP:
                        break
                except queue.Empty:
                    break
        finally:
            self._done.set()

    def _commit(self, hashes: list[str], blocks: list[np.ndarray], skips: list[SkipRecord]) -> None:
        codes = np.concatenate(blocks) if blocks else np.empty((0, 0), np.float32)
        self.writer.commit(hashes, codes, skips)
        self.stats.rows += len(hashes)
        self.stats.skipped += len(skips)
        self.stats.commits += 1

    def close(self) -> CommitStats:
        """Commit everything submitted so far, stop the thread, raise its error if any.

        Waits for the thread even through Ctrl-C and re-raises the interrupt afterwards:
        returning early would let the caller release the store's lock and exit while the
        last commit is still being written, losing finished batches and leaving temporary
        files. SIGKILL remains the way out, and it is safe. The wait is on an event of our
        own: Python 3.11 marks a thread stopped when Ctrl-C interrupts ``join()`` on it.
        """
        interrupted = False
        stop_sent = self._error is not None  # a failed thread drains the queue and exits
        while not self._done.is_set():
            try:
                if not stop_sent:
                    self._queue.put(_STOP)
                    stop_sent = True
                self._done.wait()
            except KeyboardInterrupt:
                interrupted = True
        self._thread.join()
        self._raise_if_failed()
        if interrupted:
            raise KeyboardInterrupt
        return self.stats
