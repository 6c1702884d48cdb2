"""The C a 5-fold cross-validation over the grid would choose: the check that our
holdout protocol chooses as GridSearchCV and LogisticRegressionCV would (same objective,
solved by our solver, on the same grid around our choice)."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np

from bench.probe_data import PlantedCodes

GRID = [float(c) for c in np.logspace(-6, 5, 45)]


def column_scaler(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and scale of each column, as StandardScaler fits them."""
    std = X.std(axis=0)
    return X.mean(axis=0), np.where(std > 0, std, 1)


def reference_choice(X: np.ndarray, y: np.ndarray, around: int, folds: int = 5) -> dict[str, Any]:
    """The C a 5-fold CV over the grid would choose, near grid point ``around``: mean
    fold accuracy of our exact solver's fits, the window widened while its best is at an
    edge. Codes standardised once on all of train."""
    from classifiers.probe_torch import fit_one, in_memory, score_path

    classes = np.unique(y)
    targets = np.searchsorted(classes, y)
    order = np.random.default_rng(0).permutation(len(y))
    parts = np.array_split(order, folds)
    scores: dict[int, list[float]] = {}
    iterations: dict[int, list[int]] = {}

    def fit_window(indices: list[int]) -> None:
        for part in parts:
            train = np.setdiff1d(order, part)
            passes, n = in_memory(X[train], targets[train])
            val = in_memory(X[part], targets[part])[0]
            head = None
            for index in indices:
                head = fit_one(passes, n, X.shape[1], len(classes), GRID[index], head, tol=1e-4)
                accuracy, _, _ = score_path(head, val())
                scores.setdefault(index, []).append(accuracy[0])
                iterations.setdefault(index, []).append(head.iterations[0])

    started = time.perf_counter()
    fit_window([i for i in (around - 1, around, around + 1) if 0 <= i < len(GRID)])
    for _ in range(3):
        best = max(scores, key=lambda i: (np.mean(scores[i]), -i))
        edge = [i for i in (best - 1, best + 1) if 0 <= i < len(GRID) and i not in scores]
        if not edge:
            break
        fit_window(edge)
    best = max(scores, key=lambda i: (np.mean(scores[i]), -i))
    return {
        "chosen_C": GRID[best],
        "chosen_index": best,
        "cv_accuracy": {f"{GRID[i]:.4g}": float(np.mean(scores[i])) for i in sorted(scores)},
        "iterations": {f"{GRID[i]:.4g}": iterations[i] for i in sorted(iterations)},
        "seconds": time.perf_counter() - started,
    }


def _test_accuracy_at(
    X: np.ndarray, y: np.ndarray, X_test: np.ndarray, y_test: np.ndarray, C: float
) -> float:
    """Test accuracy of the head fitted on all of train at ``C`` (tolerance 1e-4)."""
    from classifiers.probe_torch import fit_one, in_memory, score_path

    classes = np.unique(y)
    passes, n = in_memory(X, np.searchsorted(classes, y))
    head = fit_one(passes, n, X.shape[1], len(classes), C, tol=1e-4)
    test = in_memory(X_test, np.searchsorted(classes, y_test))[0]
    return score_path(head, test())[0][0]


def reference(
    codes: PlantedCodes,
    X: np.ndarray,
    y: np.ndarray,
    scaler: tuple[np.ndarray, np.ndarray],
    ours: int,
    test_rows: int,
) -> dict[str, Any]:
    """The 5-fold CV's choice near our grid point ``ours`` on standardised ``X`` and its
    test accuracy, refitted on all of train."""
    mean, scale = scaler
    found = reference_choice(X, y, ours)
    X_test, y_test = codes.array(test_rows, offset=len(y))
    X_test = (X_test.astype(np.float32) - mean) / scale
    found["test_accuracy"] = _test_accuracy_at(X, y, X_test, y_test, found["chosen_C"])
    found["grid_steps_from_ours"] = found["chosen_index"] - ours
    print(
        f"reference 5-fold CV choice at {len(y):,} rows: C {found['chosen_C']:.3g} "
        f"({found['grid_steps_from_ours']:+d} grid steps), test "
        f"{found['test_accuracy']:.4f}, {found['seconds']:.0f} s",
        flush=True,
    )
    return found


def add_references(args: argparse.Namespace) -> None:
    """``--reference-only``: the 5-fold choice for ``--reference-sizes`` added to the
    results already in ``--out``, nothing else rerun."""
    report = json.loads(args.out.read_text())
    codes = PlantedCodes(**{k: v for k, v in report["data"].items() if k != "source"})
    for entry in report["sizes"]:
        if entry["rows"] not in args.reference_sizes:
            continue
        X, y = codes.array(entry["rows"])
        X = X.astype(np.float32)
        mean, scale = column_scaler(X)
        X -= mean
        X /= scale
        C = entry["ours"]["chosen_C"]
        ours = min(range(len(GRID)), key=lambda i: abs(np.log(GRID[i] / C)))
        entry["reference"] = reference(codes, X, y, (mean, scale), ours, entry["test_rows"])
    args.out.write_text(json.dumps(report, indent=2) + "\n")
