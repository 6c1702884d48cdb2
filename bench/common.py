"""What the CPU benchmark scripts share: timing, the machine and load header, the table."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence

import torch

from bench.extract.machine import machine_info


def elapsed_ms(run: Callable[[], object]) -> float:
    """Milliseconds one call of ``run`` takes."""
    started = time.perf_counter()
    run()
    return (time.perf_counter() - started) * 1000


def cpu_header(
    command: str, argv: Sequence[str], load_before: tuple[float, ...]
) -> dict[str, object]:
    """The report's first fields: the command, this CPU machine, the load before and now."""
    return {
        "command": " ".join([command, *argv]),
        "machine": machine_info(torch.device("cpu")),
        "load_average": {"before": load_before, "after": os.getloadavg()},
    }


def markdown_table(header: str, align: str, rows: Iterable[Sequence[object]]) -> str:
    """A Markdown table: ``header`` and ``align`` lines as given, one ``| a | b |`` per row."""
    lines = [header, align]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
