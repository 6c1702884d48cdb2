"""Progress for long passes: a live bar on a terminal, plain lines in a log file.

Under DVC, or any redirect, stderr is a file. There tqdm's carriage-return redraws pile up
on one line that reads 0 % until the end, and the next error message is glued onto it.
So off a terminal we print a whole line every so often instead, e.g.
``extract: 1,200/3,666 img (33%), 50.1 img/s, about 49 s left``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

from tqdm import tqdm

__all__ = ["LineProgress", "progress"]

LOG_EVERY_SECONDS = 30.0  # often enough to see a run is alive, rare enough to read a log


class LineProgress:
    """tqdm's ``update``/``close`` surface, writing one finished line per report."""

    def __init__(
        self,
        total: int | None,
        description: str,
        unit: str = "img",
        every: float = LOG_EVERY_SECONDS,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = total
        self.description = description
        self.unit = unit
        self.every = every
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock
        self.done = 0
        self._start = self._last = clock()
        self._closed = False

    def update(self, count: int = 1) -> None:
        self.done += count
        if self.clock() - self._last >= self.every:
            self._report()

    def _report(self) -> None:
        self._last = self.clock()
        elapsed = max(self._last - self._start, 1e-9)
        rate = self.done / elapsed
        line = f"{self.description}: {self.done:,}"
        if self.total:
            line += f"/{self.total:,} {self.unit} ({100 * self.done / self.total:.0f}%)"
        else:
            line += f" {self.unit}"
        line += f", {rate:.1f} {self.unit}/s"
        if self.total and rate > 0 and self.done < self.total:
            line += f", about {(self.total - self.done) / rate:.0f} s left"
        print(line, file=self.stream, flush=True)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._report()

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress(
    total: int | None, description: str, enabled: bool = True, unit: str = "img"
) -> tqdm | LineProgress:
    """A bar on a terminal, lines in a log, nothing at all when ``enabled`` is false."""
    if enabled and not sys.stderr.isatty():
        return LineProgress(total, description, unit)
    return tqdm(
        total=total,
        unit=unit,
        unit_scale=unit == "B",
        desc=description,
        disable=not enabled,
        smoothing=0.1,
        mininterval=0.1,
    )
