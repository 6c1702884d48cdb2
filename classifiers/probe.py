"""The linear-probe protocol: C chosen on a validation split from a log-spaced sweep, warm-
started along the path, then one refit on train + val with the chosen C.

Published frozen-feature evaluations (CLIP's linear probe, CLIP_benchmark, Kornblith et
al.'s "Do Better ImageNet Models Transfer Better?", DINOv2) all tune the regularisation this
way: the best C moves by orders of magnitude between datasets and layers, so a fixed
``C: 1`` reads several points below what the same codes can give.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
from sklearn.metrics import log_loss

from classifiers.heads import HeadParams, LinearParams, TorchLogRegParams, build_head
from classifiers.probe_search import Visit, best, coarse_to_fine
from classifiers.probe_torch import RegPath, fit_one, in_memory, score_path
from features.compute.encoder import resolve_device

__all__ = [
    "SWEEP",
    "Sweep",
    "candidates",
    "fixed_by_hand",
    "is_swept",
    "search_label",
    "sweep_C",
]

SWEEP = "sweep"  # the value of ``C`` that asks for the protocol


def is_swept(params: HeadParams) -> bool:
    """True when the head's C is to be chosen by the sweep rather than given by hand."""
    return isinstance(params, LinearParams) and params.C == SWEEP and not params.grid


def candidates(params: LinearParams) -> list[float]:
    """``sweep_points`` values of C, log-spaced from ``sweep_low`` to ``sweep_high``."""
    low, high = math.log10(params.sweep_low), math.log10(params.sweep_high)
    return [float(c) for c in np.logspace(low, high, params.sweep_points)]


@dataclass(frozen=True)
class Sweep:
    """What the sweep tried and what it chose; the metrics' ``probe`` entry."""

    C: list[float]  # the Cs fitted, ascending (the warm start runs from the strongest up)
    val_accuracy: list[float]
    val_log_loss: list[float | None]  # None where the estimator has no probabilities
    iterations: list[int | None]  # solver iterations per fit: what the warm start saves
    chosen: float
    n_val: int
    val_source: str  # "val/" or "carved from train"
    grid_points: int  # the grid searched; more than len(C) when the search skipped points
    search: str  # "every point", or the coarse-to-fine settings

    @classmethod
    def of(
        cls, visits: list[Visit], grid_points: int, n_val: int, val_source: str, search: str
    ) -> Sweep:
        return cls(
            [v.C for v in visits],
            [v.val_accuracy for v in visits],
            [v.val_log_loss for v in visits],
            [v.iterations for v in visits],
            best(visits).C,
            n_val,
            val_source,
            grid_points,
            search,
        )

    def as_json(self) -> dict[str, Any]:
        return {"fixed_by_hand": False, "refit_on": "train+val", **asdict(self)}


def search_label(params: LinearParams) -> str:
    """How the grid is searched, as the metrics record it."""
    step, patience = getattr(params, "coarse_step", 1), getattr(params, "patience", None)
    if step == 1 and patience is None:
        return "every point"
    return f"coarse-to-fine (coarse_step {step}, patience {patience})"


def _path_estimator(kind: str, params: LinearParams, first_C: float) -> tuple[Any, Any]:
    """The pipeline's scaler and the bare estimator the sweep refits along the C path:
    warm-started logistic regression, or the SVM without its calibration (accuracy only
    needs its decision; calibrating every candidate would triple the cost)."""
    uncalibrated = {"probability": False} if hasattr(params, "probability") else {}
    model = build_head(kind, replace(params, C=first_C, **uncalibrated))
    estimator = model.named_steps["clf"]
    if "warm_start" in estimator.get_params():
        estimator.set_params(warm_start=True)
    return model.named_steps["scale"], estimator


def _iterations(estimator: Any) -> int | None:
    n_iter = getattr(estimator, "n_iter_", None)
    return None if n_iter is None else int(np.max(n_iter))


def _sklearn_path(
    estimator: Any,
    values: list[float],
    X: np.ndarray,
    y: np.ndarray,
    X_val: np.ndarray,
    y_val: np.ndarray,
) -> list[Visit]:
    """One scikit-learn fit per C, each warm-started where the estimator allows it."""
    visits = []
    for index, C in enumerate(values):
        estimator.set_params(C=C).fit(X, y)
        accuracy = float(np.mean(estimator.predict(X_val) == y_val))
        loss = None
        if hasattr(estimator, "predict_proba"):
            probabilities = estimator.predict_proba(X_val)
            loss = float(log_loss(y_val, probabilities, labels=estimator.classes_))
        visits.append(Visit(index, C, accuracy, loss, _iterations(estimator)))
    return visits


def _torch_path(
    params: TorchLogRegParams,
    values: list[float],
    X: np.ndarray,
    y: np.ndarray,
    X_val: np.ndarray,
    y_val: np.ndarray,
) -> list[Visit]:
    """The grid searched coarse to fine (:mod:`classifiers.probe_search`), each fit by
    :func:`classifiers.probe_torch.fit_one` on the codes in memory, scored on val."""
    classes = np.unique(y)
    device = resolve_device(params.device)
    passes, n = in_memory(X, np.searchsorted(classes, y), params.device)
    val = in_memory(X_val, np.searchsorted(classes, y_val), params.device)[0]
    heads: dict[int, RegPath] = {}

    def fit(index: int, warm: int | None) -> tuple[float, float, int]:
        head = fit_one(
            passes,
            n,
            X.shape[1],
            len(classes),
            values[index],
            heads.get(warm),  # None (warm is None): from zero
            params.max_iter,
            params.sweep_tol,
            device,
        )
        heads[index] = head
        accuracy, losses, _ = score_path(head, val())
        return accuracy[0], losses[0], head.iterations[0]

    return coarse_to_fine(values, fit, params.coarse_step, params.patience)


def sweep_C(
    kind: str,
    params: LinearParams,
    X: np.ndarray,
    y: np.ndarray,
    X_val: np.ndarray,
    y_val: np.ndarray,
    val_source: str,
) -> Sweep:
    """Fit candidate Cs on ``X`` (array of shape (n_images, dim)), ascending, each starting
    from a neighbouring solution, and score each on the val split (:func:`best` chooses)."""
    values = candidates(params)
    scaler, estimator = _path_estimator(kind, params, values[0])
    X, X_val = scaler.fit_transform(X), scaler.transform(X_val)
    if isinstance(params, TorchLogRegParams):
        visits = _torch_path(params, values, X, y, X_val, y_val)
    else:
        visits = _sklearn_path(estimator, values, X, y, X_val, y_val)
    return Sweep.of(visits, len(values), len(y_val), val_source, search_label(params))


def fixed_by_hand(params: HeadParams) -> dict[str, Any] | None:
    """The ``probe`` entry of a linear head whose C the user gave; None for other heads."""
    if not isinstance(params, LinearParams) or params.C == SWEEP:
        return None
    return {"fixed_by_hand": True, "chosen": float(params.C)}
