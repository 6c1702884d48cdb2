"""``kind: sklearn``: any scikit-learn classifier as a head, by dotted path, its
constructor params checked the way the estimator itself checks them."""

from __future__ import annotations

import importlib
import math
import re
from dataclasses import dataclass, field, fields
from typing import Any

from sklearn.base import BaseEstimator, is_classifier

from classifiers.head_config import HeadParams

__all__ = ["EstimatorError", "SklearnParams", "make_estimator"]

_SHARED = frozenset(f.name for f in fields(HeadParams))
_SKLEARN_PATH = re.compile(r"sklearn(\.[A-Za-z_]\w*)+")


@dataclass(frozen=True, init=False)
class SklearnParams(HeadParams):
    """Any scikit-learn classifier, by dotted path, with its own constructor params.

    ``seed`` is the estimator's ``random_state`` unless ``params`` sets one. Keywords that
    are not shared head options are folded into ``params``: the grid search builds each
    candidate as ``dataclasses.replace(params, **point)``, and an sklearn head's grid
    points name the estimator's parameters.
    """

    estimator: str  # e.g. sklearn.neighbors.KNeighborsClassifier
    params: dict[str, Any] = field(default_factory=dict)

    def __init__(
        self, estimator: str, params: dict[str, Any] | None = None, **options: Any
    ) -> None:
        shared = {name: options.pop(name) for name in _SHARED & options.keys()}
        HeadParams.__init__(self, **shared)
        object.__setattr__(self, "estimator", estimator)
        object.__setattr__(self, "params", {**(params or {}), **options})


class EstimatorError(ValueError):
    """An sklearn head's estimator or params are unusable; ``key`` names the option."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def _import_estimator(path: str) -> type:
    """The class ``path`` names, imported only from scikit-learn: params.yaml is data, and a
    path to any other module would let it run arbitrary code."""
    allowed = "allowed: a class under sklearn., e.g. sklearn.neighbors.KNeighborsClassifier"
    if not _SKLEARN_PATH.fullmatch(path):
        raise EstimatorError("estimator", f"got {path!r}; {allowed}")
    module, _, name = path.rpartition(".")
    try:
        found = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        raise EstimatorError("estimator", f"got {path!r}: no such class; {allowed}") from None
    if not (isinstance(found, type) and issubclass(found, BaseEstimator)):
        raise EstimatorError("estimator", f"got {path!r}: not an estimator class; {allowed}")
    return found


def _finite(value: Any) -> bool:
    """False for NaN or infinity at any depth: the schema checks typed floats, not these."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list | tuple):
        return all(map(_finite, value))
    if isinstance(value, dict):
        return all(map(_finite, value.values()))
    return True


def _instance(path: str) -> BaseEstimator:
    """An unfitted classifier with default params; meta-estimators need objects YAML lacks."""
    cls = _import_estimator(path)
    try:
        estimator = cls()
    except TypeError:
        raise EstimatorError(
            "estimator", f"got {path!r}: needs constructor arguments params cannot give"
        ) from None
    if not is_classifier(estimator):
        raise EstimatorError(
            "estimator", f"got {path!r}: not a classifier (is_classifier is false)"
        )
    return estimator


def make_estimator(params: SklearnParams) -> BaseEstimator:
    """The configured, unfitted classifier, its params checked the way the estimator itself
    checks them at fit, so a bad value fails at params load rather than mid-training."""
    estimator = _instance(params.estimator)
    allowed = estimator.get_params()
    for name, value in params.params.items():
        if name not in allowed:
            raise EstimatorError(
                f"params.{name}", f"unknown parameter; allowed: {', '.join(sorted(allowed))}"
            )
        if not _finite(value):
            raise EstimatorError(f"params.{name}", f"got {value!r}; allowed: finite numbers")
    if "random_state" in allowed:
        estimator.set_params(random_state=params.seed)
    try:
        estimator.set_params(**params.params)
        if hasattr(estimator, "_validate_params"):
            estimator._validate_params()
    except (ValueError, TypeError) as error:  # InvalidParameterError is both
        raise EstimatorError("params", str(error)) from None
    return estimator
