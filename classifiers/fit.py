"""Fit a head, optionally choosing hyperparameters by stratified CV on the train split only."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from sklearn.model_selection import ParameterGrid, StratifiedKFold, cross_val_score
from sklearn.pipeline import Pipeline

from classifiers.heads import HEADS, HeadParams

__all__ = ["FitResult", "fit_head", "fit_streaming"]


@dataclass
class FitResult:
    """The fitted pipeline, the params it was fitted with, and how it was chosen."""

    model: Pipeline
    params: HeadParams
    fit_seconds: float
    cv: list[dict[str, Any]] = field(default_factory=list)  # one row per grid point


def _grid_search(
    kind: str, params: HeadParams, X: np.ndarray, y: np.ndarray, n_jobs: int
) -> tuple[HeadParams, list[dict[str, Any]]]:
    folds = StratifiedKFold(params.cv_folds, shuffle=True, random_state=params.seed)
    rows = []
    for point in ParameterGrid(params.grid):
        candidate = replace(params, grid=None, **point)
        scores = cross_val_score(
            HEADS[kind].build(candidate), X, y, cv=folds, scoring="accuracy", n_jobs=n_jobs
        )
        rows.append(
            {
                "params": point,
                "mean_accuracy": float(scores.mean()),
                "std_accuracy": float(scores.std()),
            }
        )
    best = max(rows, key=lambda row: row["mean_accuracy"])
    return replace(params, grid=None, **best["params"]), rows


def fit_head(
    kind: str, params: HeadParams, X: np.ndarray, y: np.ndarray, n_jobs: int = 1
) -> FitResult:
    """Fit on ``X`` (array of shape (n_images, dim)) and labels ``y``."""
    started = time.perf_counter()
    cv_rows: list[dict[str, Any]] = []
    if params.grid:
        params, cv_rows = _grid_search(kind, params, X, y, n_jobs)
    model = HEADS[kind].build(params).fit(X, y)
    return FitResult(model, params, time.perf_counter() - started, cv_rows)


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
