"""Fit a head on train, choosing hyperparameters on val when there is one, else by CV on train.

With a val split (and a test split to report on), each grid point is fitted on train and
scored on val, a single predefined validation fold; the winner is the model fitted on
train, so val stays out of its weights and the MLP can early-stop on val too. Without
val, grid points are scored by stratified k-fold CV on train and the winner refitted.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from joblib import Parallel, delayed
from sklearn.model_selection import ParameterGrid, StratifiedKFold, cross_val_score
from sklearn.pipeline import Pipeline

from classifiers.heads import HEADS, HeadParams, MLPParams
from classifiers.probe import fixed_by_hand, is_swept, sweep_C

__all__ = ["FitResult", "fit_head", "fit_streaming"]


@dataclass
class FitResult:
    """The fitted pipeline, the params it was fitted with, and how it was chosen."""

    model: Pipeline
    params: HeadParams
    fit_seconds: float
    cv: list[dict[str, Any]] = field(default_factory=list)  # one row per grid point
    selected_on: str | None = None  # "val", "train_cv", or None when nothing was chosen
    probe: dict[str, Any] | None = None  # a linear head's C: the sweep, or fixed by hand


Split = tuple[np.ndarray, np.ndarray]


def _early_stopped_mlp(
    model: Pipeline, params: MLPParams, X: np.ndarray, y: np.ndarray, val: Split
) -> Pipeline:
    """Epochs until val accuracy stops improving, keeping the best epoch's weights.

    scikit-learn's own early stopping scores a random 10% carved out of train; with a val
    split that is wasted data and a noisier stop, so val scores each epoch instead.
    """
    scaler = model.named_steps["scale"].fit(X)
    X, X_val = scaler.transform(X), scaler.transform(val[0])
    # A RandomState (not the int seed, which partial_fit re-seeds from every call) so each
    # epoch visits the mini-batches in a new order, as a full fit does.
    clf = model.named_steps["clf"].set_params(
        early_stopping=False, random_state=np.random.RandomState(params.seed)
    )
    classes = np.unique(y)
    best, best_score, stale = clf, -np.inf, 0
    for _ in range(params.max_iter):
        clf.partial_fit(X, y, classes=classes)
        score = clf.score(X_val, val[1])
        if score > best_score + clf.tol:
            best, best_score, stale = copy.deepcopy(clf), score, 0
        else:
            stale += 1
        if stale >= clf.n_iter_no_change:
            break
    model.steps[-1] = ("clf", best.set_params(early_stopping=True, random_state=params.seed))
    return model


def _fit(
    kind: str, params: HeadParams, X: np.ndarray, y: np.ndarray, val: Split | None
) -> Pipeline:
    model = HEADS[kind].build(params)
    if val is not None and isinstance(params, MLPParams) and params.early_stopping:
        return _early_stopped_mlp(model, params, X, y, val)
    return model.fit(X, y)


def _scorer(
    kind: str, params: HeadParams, X: np.ndarray, y: np.ndarray, val: Split | None, n_jobs: int
) -> Callable[[HeadParams], np.ndarray]:
    """Accuracy of one candidate: on val as a single predefined fold, else k-fold CV on train."""
    if val is not None:
        return lambda candidate: np.array([_fit(kind, candidate, X, y, val).score(*val)])
    folds = StratifiedKFold(params.cv_folds, shuffle=True, random_state=params.seed)
    return lambda candidate: cross_val_score(
        HEADS[kind].build(candidate), X, y, cv=folds, scoring="accuracy", n_jobs=n_jobs
    )


def _grid_search(
    kind: str, params: HeadParams, X: np.ndarray, y: np.ndarray, val: Split | None, n_jobs: int
) -> tuple[HeadParams, list[dict[str, Any]]]:
    """Every grid point scored, as joblib tasks: on the active joblib backend (a Dask
    cluster under ``joblib.parallel_config(backend="dask")``), one task per point."""
    score = _scorer(kind, params, X, y, val, 1)
    points = list(ParameterGrid(params.grid))
    scored = Parallel(n_jobs=n_jobs)(
        delayed(score)(replace(params, grid=None, **point)) for point in points
    )
    rows = [
        {
            "params": point,
            "mean_accuracy": float(scores.mean()),
            "std_accuracy": float(scores.std()),
        }
        for point, scores in zip(points, scored, strict=True)
    ]
    best = max(rows, key=lambda row: row["mean_accuracy"])
    return replace(params, grid=None, **best["params"]), rows


def _selected_on(params: HeadParams, searched: bool, val: Split | None) -> str | None:
    """Where the head's choices (grid point, MLP stopping epoch) were made, for the metrics."""
    if val is not None and (searched or (isinstance(params, MLPParams) and params.early_stopping)):
        return "val"
    return "train_cv" if searched else None


def fit_head(
    kind: str,
    params: HeadParams,
    X: np.ndarray,
    y: np.ndarray,
    n_jobs: int = 1,
    val: Split | None = None,
    val_source: str = "val/",
) -> FitResult:
    """Fit on ``X`` (array of shape (n_images, dim)) and labels ``y``.

    ``val`` (codes, labels) is the split that chooses grid points, the MLP's stopping
    epoch and a swept C; never pass the split the head is evaluated on. A swept C is the
    linear-probe protocol (:mod:`classifiers.probe`): the final model is refitted on train
    and val together, so ``val`` is required then.
    """
    started = time.perf_counter()
    cv_rows: list[dict[str, Any]] = []
    probe = fixed_by_hand(params)
    swept = is_swept(params)
    if params.grid:
        params, cv_rows = _grid_search(kind, params, X, y, val, n_jobs)
    elif swept:
        if val is None:
            raise ValueError("a swept C needs a val split; carve one with data.carve_val")
        sweep = sweep_C(kind, params, X, y, *val, val_source)
        params, probe = replace(params, C=sweep.chosen), sweep.as_json()
        X, y, val = np.concatenate([X, val[0]]), np.concatenate([y, val[1]]), None
    model = _fit(kind, params, X, y, val)
    selected_on = "val" if swept else _selected_on(params, bool(cv_rows), val)
    elapsed = time.perf_counter() - started
    return FitResult(model, params, elapsed, cv_rows, selected_on, probe)


def fit_streaming(
    kind: str,
    params: HeadParams,
    classes: list[str],
    chunks: Callable[[int], Iterable[tuple[np.ndarray, np.ndarray]]],
) -> FitResult:
    """Fit with ``partial_fit`` over ``chunks(epoch)``: memory is one chunk, whatever n is.

    The scaler sees every chunk once before the estimator's first epoch, so the
    standardisation matches what a full-batch fit would use. That pass is ``chunks(-1)``,
    so ``chunks`` must accept -1 (``iter_split`` takes any int seed for this).
    """
    started = time.perf_counter()
    model = HEADS[kind].build(params)
    scaler, estimator = model.named_steps["scale"], model.named_steps["clf"]
    if hasattr(scaler, "partial_fit"):
        for X, _ in chunks(-1):
            scaler.partial_fit(X)
    else:  # stateless (l2, none): fitting only records the input width
        scaler.fit(next(iter(chunks(-1)))[0])
    label_array = np.array(classes)
    for epoch in range(params.epochs):
        for X, y in chunks(epoch):
            estimator.partial_fit(scaler.transform(X), y, classes=label_array)
    return FitResult(model, params, time.perf_counter() - started)
