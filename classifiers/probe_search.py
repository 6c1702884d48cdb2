"""Coarse-to-fine search of a log-spaced C grid: the sweep's answer for a few fits.

Every fit on a large store costs full passes over the codes, so fitting all 45 points of a
fine grid is most of the protocol's time. Validation accuracy along the C path rises to
one peak and falls as the heads overfit, so the search fits every ``step``-th grid point
from the strongest regularisation up, stops ``patience`` coarse points past the best (the
largest Cs, which take the most iterations, are never fitted when they cannot win), then
halves the step around the best point until it has tried both grid neighbours. Each fit
starts from the nearest point already fitted.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["Visit", "best", "coarse_to_fine"]


@dataclass(frozen=True)
class Visit:
    """One fitted grid point and how it scored on val."""

    index: int
    C: float
    val_accuracy: float
    val_log_loss: float | None  # None where the estimator has no probabilities
    iterations: int | None


# Fit grid point ``index``, warm-started from the already fitted point ``warm`` (None:
# from zero); its (val accuracy, val log-loss) and the solver's iterations.
Fit = Callable[[int, int | None], tuple[float, float | None, int | None]]


def best(visits: Sequence[Visit]) -> Visit:
    """The best val accuracy; ties go to the lower val log-loss, then the smaller C."""
    return min(
        visits,
        key=lambda v: (
            -v.val_accuracy,
            math.inf if v.val_log_loss is None else v.val_log_loss,
            v.C,
        ),
    )


def coarse_to_fine(grid: Sequence[float], fit: Fit, step: int, patience: int | None) -> list[Visit]:
    """The grid points fitted, ascending; ``step`` 1 with ``patience`` None fits them all."""
    visits: dict[int, Visit] = {}

    def visit(index: int) -> None:
        warm = min(visits, key=lambda fitted: (abs(fitted - index), fitted)) if visits else None
        accuracy, loss, iterations = fit(index, warm)
        visits[index] = Visit(index, grid[index], accuracy, loss, iterations)

    coarse = list(range(0, len(grid), step))
    if coarse[-1] != len(grid) - 1:
        coarse.append(len(grid) - 1)
    since_best = 0
    for index in coarse:
        visit(index)
        since_best = 0 if best(list(visits.values())).index == index else since_best + 1
        if patience is not None and since_best >= patience:
            break
    while step > 1:
        step = (step + 1) // 2
        centre = best(list(visits.values())).index
        for index in (centre - step, centre + step):
            if 0 <= index < len(grid) and index not in visits:
                visit(index)
    return [visits[index] for index in sorted(visits)]
