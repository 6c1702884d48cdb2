"""What a user would write instead of our protocol, timed where it finishes and estimated
from measured parts where it would not (45 Cs x 5 folds of 4096 x 100 lbfgs fits take
hours to days on 2 cores).

Both baselines are scikit-learn with its defaults (``max_iter=100``, ``tol=1e-4``): the
grid search ``GridSearchCV(LogisticRegression(), {"C": grid}, cv=5)`` then its refit, and
``LogisticRegressionCV(Cs=grid, cv=5)``, which warm-starts along the C path (in float64:
it converts the codes). A fit's time is its lbfgs iterations times the time of one
iteration at that fit's row count, plus the fit's fixed cost:

* **per iteration and fixed cost**, measured at the real fold and full sizes, in the
  dtype each baseline uses, from fits stopped after 2 and after 6 iterations;
* **iterations**, counted on a fold of a smaller sample (``sample_rows``): cold fits at
  every 4th C of the grid (interpolated in between) for the grid search, and one
  warm-started pass along all 45 Cs for ``LogisticRegressionCV``.

The counts come from fewer rows; at a fixed C, more rows weaken the penalty relative to
the loss, which usually costs lbfgs more iterations, not fewer. The caller can check one
count at full size (:func:`cold_iterations`).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

__all__ = [
    "IterationCost",
    "IterationCounts",
    "cold_iterations",
    "count_iterations",
    "estimate",
    "iteration_cost",
]

FOLDS = 5


@dataclass(frozen=True)
class IterationCost:
    """Seconds per lbfgs iteration and per fit, at one row count and dtype."""

    rows: int
    dtype: str
    per_iteration_s: float
    per_fit_s: float


@dataclass(frozen=True)
class IterationCounts:
    """lbfgs iterations per C of the grid, counted on ``rows`` rows."""

    rows: int
    cold: list[float]  # each C fitted from zero (GridSearchCV); interpolated between counts
    cold_counted: dict[str, int]  # the Cs actually fitted cold, and their counts
    path: list[int]  # each C warm-started from the previous one (LogisticRegressionCV)


def _quiet_fit(model: LogisticRegression, X: np.ndarray, y: np.ndarray) -> LogisticRegression:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(X, y)


def _timed_fit(X: np.ndarray, y: np.ndarray, C: float, iterations: int) -> float:
    started = time.perf_counter()
    _quiet_fit(LogisticRegression(C=C, max_iter=iterations), X, y)
    return time.perf_counter() - started


def iteration_cost(X: np.ndarray, y: np.ndarray, C: float) -> IterationCost:
    """From two fits capped at 2 and 6 iterations (both run to their cap at this C)."""
    short, long = _timed_fit(X, y, C, 2), _timed_fit(X, y, C, 6)
    per_iteration = max((long - short) / 4, 0.0)
    return IterationCost(len(y), str(X.dtype), per_iteration, max(short - 2 * per_iteration, 0.0))


def cold_iterations(X: np.ndarray, y: np.ndarray, C: float) -> tuple[int, float]:
    """One default fit from zero: its iterations and seconds."""
    started = time.perf_counter()
    model = _quiet_fit(LogisticRegression(C=C), X, y)
    return int(np.max(model.n_iter_)), time.perf_counter() - started


def count_iterations(
    X: np.ndarray, y: np.ndarray, grid: list[float], step: int = 4
) -> IterationCounts:
    """Counts on one 4/5 fold of ``X``: cold at every ``step``-th C, warm along all."""
    fold = np.random.default_rng(0).permutation(len(y))[: len(y) * (FOLDS - 1) // FOLDS]
    X, y = X[fold], y[fold]
    counted = sorted({*range(0, len(grid), step), len(grid) - 1})
    cold = {index: cold_iterations(X, y, grid[index])[0] for index in counted}
    interpolated = np.interp(np.arange(len(grid)), counted, [cold[i] for i in counted])
    warm = LogisticRegression(warm_start=True)
    path = []
    for C in grid:
        path.append(int(np.max(_quiet_fit(warm.set_params(C=C), X, y).n_iter_)))
    return IterationCounts(
        len(y), interpolated.tolist(), {f"{grid[i]:.3g}": cold[i] for i in counted}, path
    )


def _seconds(iterations: float, cost: IterationCost) -> float:
    return iterations * cost.per_iteration_s + cost.per_fit_s


def estimate(
    counts: IterationCounts,
    chosen: int,
    costs: dict[str, IterationCost],
) -> dict[str, Any]:
    """Both baselines' wall time at the sizes ``costs`` were measured at: keys
    ``fold32``/``full32`` (GridSearchCV keeps float32) and ``fold64``/``full64``; the refit
    is at grid point ``chosen``."""
    grid_search = FOLDS * sum(_seconds(i, costs["fold32"]) for i in counts.cold)
    grid_search += _seconds(counts.cold[chosen], costs["full32"])
    path_cv = FOLDS * sum(_seconds(i, costs["fold64"]) for i in counts.path)
    path_cv += _seconds(counts.path[chosen], costs["full64"])
    return {
        "GridSearchCV_s": grid_search,
        "GridSearchCV_fits": FOLDS * len(counts.cold) + 1,
        "LogisticRegressionCV_s": path_cv,
        "LogisticRegressionCV_fits": FOLDS * len(counts.path) + 1,
        "costs": {name: asdict(cost) for name, cost in costs.items()},
        "method": "estimated: iterations counted on a smaller sample x seconds per "
        "iteration measured at this size (bench/probe_baselines.py)",
    }
