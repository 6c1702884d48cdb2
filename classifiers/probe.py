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
import torch
from sklearn.metrics import log_loss

from classifiers.heads import HeadParams, LinearParams, build_head
from classifiers.probe_torch import TorchLogisticProbe, fit_path

__all__ = ["SWEEP", "Sweep", "candidates", "fixed_by_hand", "is_swept", "sweep_C"]

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

    C: list[float]  # ascending: strongest regularisation first, as the warm start runs
    val_accuracy: list[float]
    val_log_loss: list[float | None]  # None where the estimator has no probabilities
    iterations: list[int | None]  # solver iterations per fit: what the warm start saves
    chosen: float
    n_val: int
    val_source: str  # "val/" or "carved from train"

    def as_json(self) -> dict[str, Any]:
        return {"fixed_by_hand": False, "refit_on": "train+val", **asdict(self)}


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


Scores = tuple[list[float], list[float | None], list[int | None]]


def _sklearn_path(
    estimator: Any,
    values: list[float],
    X: np.ndarray,
    y: np.ndarray,
    X_val: np.ndarray,
    y_val: np.ndarray,
) -> Scores:
    """One scikit-learn fit per C, each warm-started where the estimator allows it."""
    accuracy: list[float] = []
    losses: list[float | None] = []
    iterations: list[int | None] = []
    for C in values:
        estimator.set_params(C=C).fit(X, y)
        accuracy.append(float(np.mean(estimator.predict(X_val) == y_val)))
        if hasattr(estimator, "predict_proba"):
            probabilities = estimator.predict_proba(X_val)
            losses.append(float(log_loss(y_val, probabilities, labels=estimator.classes_)))
        else:
            losses.append(None)
        iterations.append(_iterations(estimator))
    return accuracy, losses, iterations


def _torch_path(
    estimator: TorchLogisticProbe,
    values: list[float],
    X: np.ndarray,
    y: np.ndarray,
    X_val: np.ndarray,
    y_val: np.ndarray,
) -> Scores:
    """The whole path from :func:`classifiers.probe_torch.fit_path`, scored on val."""
    classes = np.unique(y)
    path = fit_path(
        X,
        np.searchsorted(classes, y),
        len(classes),
        values,
        estimator.max_iter,
        estimator.tol,
        estimator.device,
    )
    val = torch.from_numpy(np.asarray(X_val, dtype=np.float32)).to(path.weights.device)
    probabilities = torch.softmax(path.logits(val), dim=2).cpu().numpy()
    accuracy = [float(np.mean(classes[p.argmax(axis=1)] == y_val)) for p in probabilities]
    losses: list[float | None] = [float(log_loss(y_val, p, labels=classes)) for p in probabilities]
    return accuracy, losses, list(path.iterations)


def sweep_C(
    kind: str,
    params: LinearParams,
    X: np.ndarray,
    y: np.ndarray,
    X_val: np.ndarray,
    y_val: np.ndarray,
    val_source: str,
) -> Sweep:
    """Fit every candidate C on ``X`` (array of shape (n_images, dim)), ascending, each
    starting from the previous solution, and score each on the val split.

    The chosen C has the best val accuracy; ties go to the lower val log-loss, then to the
    smaller C (the simpler model).
    """
    values = candidates(params)
    scaler, estimator = _path_estimator(kind, params, values[0])
    X, X_val = scaler.fit_transform(X), scaler.transform(X_val)
    path = _torch_path if isinstance(estimator, TorchLogisticProbe) else _sklearn_path
    accuracy, losses, iterations = path(estimator, values, X, y, X_val, y_val)
    best = min(
        range(len(values)),
        key=lambda i: (-accuracy[i], math.inf if losses[i] is None else losses[i], values[i]),
    )
    return Sweep(values, accuracy, losses, iterations, values[best], len(y_val), val_source)


def fixed_by_hand(params: HeadParams) -> dict[str, Any] | None:
    """The ``probe`` entry of a linear head whose C the user gave; None for other heads."""
    if not isinstance(params, LinearParams) or params.C == SWEEP:
        return None
    return {"fixed_by_hand": True, "chosen": float(params.C)}
