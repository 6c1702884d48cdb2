"""Peak resident memory of this process, torch-free so reader-only measurements can use it."""

from __future__ import annotations

import resource
from pathlib import Path

__all__ = ["peak_rss_mib"]


def peak_rss_mib() -> float:
    """This process's peak RSS in MiB. Linux's VmHWM, not ``ru_maxrss``: a child started by
    ``subprocess`` inherits its parent's ``ru_maxrss`` across exec, so a benchmark whose
    parent held gigabytes would report them as the child's peak."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
