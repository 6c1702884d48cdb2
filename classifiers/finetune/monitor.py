"""What a person running the loop sees and can do: the measured speed with an estimate
of the whole run, and Ctrl-C taken at a batch boundary.

A step interrupted halfway (weights partly updated, momentum not) could not be saved
consistently, so the first Ctrl-C is only noted: the loop checks it between batches,
saves, and raises ``KeyboardInterrupt`` itself. A second Ctrl-C stops at once.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["REPORT_BATCHES", "REPORT_SECONDS", "Speed", "deferred_interrupt", "duration"]

REPORT_BATCHES = 3  # timed batches after the warm-up one before the speed is reported...
REPORT_SECONDS = 10.0  # ...or this long, whichever comes first


@contextmanager
def deferred_interrupt(log: Callable[[str], None]) -> Iterator[Callable[[], bool]]:
    """Note the first Ctrl-C instead of raising it mid-step; yields 'was it pressed?'.

    The previous handler is back on exit, and after the first Ctrl-C.
    """
    pressed = False

    def note(signum: int, frame: object) -> None:
        nonlocal pressed
        pressed = True
        signal.signal(signal.SIGINT, previous)
        log("interrupted: saving a checkpoint after this batch (Ctrl-C again: stop now)")

    try:
        previous = signal.signal(signal.SIGINT, note)
    except ValueError:  # not the main thread: Ctrl-C is not ours to handle
        yield lambda: False
        return
    try:
        yield lambda: pressed
    finally:
        signal.signal(signal.SIGINT, previous)


def duration(seconds: float) -> str:
    """``42 s``, ``7 min``, ``2.5 h``: as precise as an estimate deserves."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class Speed:
    """Training throughput after the warm-up batch (which pays for allocation and
    autotuning), reported once, early, with the time the rest of the run should take."""

    def __init__(self) -> None:
        self.batches = self.images = 0
        self.seconds = 0.0
        self.reported = False

    def add(self, images: int, seconds: float) -> None:
        self.batches += 1
        if self.batches > 1:
            self.images += images
            self.seconds += seconds

    def due(self) -> bool:
        timed = self.batches - 1
        return (
            not self.reported
            and timed > 0
            and (timed >= REPORT_BATCHES or self.seconds >= REPORT_SECONDS)
        )

    def report(self, images_left: int, epochs_left: int, where: str) -> str:
        """The line to print; ``images_left`` counts train and val images still to pass."""
        self.reported = True
        rate = self.images / self.seconds
        return (
            f"finetune: {rate:.1f} images/s on {where}; about {duration(images_left / rate)} "
            f"for the {epochs_left} epoch(s) left (less if val stops improving)"
        )
