"""Head factories: params dataclass in, unfitted scikit-learn ``Pipeline`` out.

A head is preprocessing (standardise or L2-normalise the codes) followed by an estimator.
Adding a head is one factory and one entry in :data:`HEADS`, plus its block under
``heads:`` in params.yaml; ``heads.<name>.kind`` lets one factory serve several entries
(``svm_rbf: {kind: svm, kernel: rbf}``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sklearn.calibration import CalibratedClassifierCV
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, Normalizer, StandardScaler
from sklearn.svm import SVC, LinearSVC

__all__ = [
    "HEADS",
    "HeadParams",
    "HeadSpec",
    "LogRegParams",
    "MLPParams",
    "SGDParams",
    "SVMParams",
    "build_head",
]

PREPROCESSORS = ("standardize", "l2", "none")


@dataclass(frozen=True)
class HeadParams:
    """Options every head shares."""

    kind: str | None = None  # factory name; defaults to the head's own name
    preprocess: str = field(default="standardize", metadata={"choices": PREPROCESSORS})
    grid: dict[str, list[Any]] | None = None  # param -> candidates, stratified CV on train
    cv_folds: int = field(default=5, metadata={"min": 2})
    # scikit-learn's random_state range: anything else fails mid-fit, not at params load.
    seed: int = field(default=0, metadata={"min": 0, "max": 2**32 - 1})


@dataclass(frozen=True)
class LogRegParams(HeadParams):
    C: float = field(default=1.0, metadata={"min_exclusive": 0})
    max_iter: int = field(default=2000, metadata={"min": 1})
    class_weight: str | None = field(default=None, metadata={"choices": (None, "balanced")})


@dataclass(frozen=True)
class SVMParams(HeadParams):
    kernel: str = field(default="linear", metadata={"choices": ("linear", "rbf")})
    C: float = field(default=1.0, metadata={"min_exclusive": 0})
    gamma: str | float = field(  # rbf only
        default="scale", metadata={"choices": ("scale", "auto"), "min_exclusive": 0}
    )
    max_iter: int = field(default=5000, metadata={"min": 1})
    # Platt-scaled probabilities, so `predict` can print them; costs extra CV fits.
    probability: bool = True
    class_weight: str | None = field(default=None, metadata={"choices": (None, "balanced")})


@dataclass(frozen=True)
class MLPParams(HeadParams):
    # Units per hidden layer; one layer of 256 is the classic transfer recipe.
    hidden: list[int] = field(default_factory=lambda: [256], metadata={"min": 1})
    alpha: float = field(default=1e-4, metadata={"min": 0})
    learning_rate_init: float = field(default=1e-3, metadata={"min_exclusive": 0})
    max_iter: int = field(default=200, metadata={"min": 1})
    early_stopping: bool = True


@dataclass(frozen=True)
class SGDParams(HeadParams):
    """A linear head trained by streaming chunks: for stores larger than RAM."""

    loss: str = field(
        default="log_loss", metadata={"choices": ("log_loss", "hinge", "modified_huber")}
    )
    alpha: float = field(default=1e-4, metadata={"min_exclusive": 0})
    epochs: int = field(default=5, metadata={"min": 1})
    chunk_rows: int = field(default=4096, metadata={"min": 1})


def _preprocessor(name: str):
    if name == "standardize":
        return StandardScaler()
    if name == "l2":
        return Normalizer(norm="l2")
    return FunctionTransformer()


def _pipeline(params: HeadParams, estimator) -> Pipeline:
    return Pipeline([("scale", _preprocessor(params.preprocess)), ("clf", estimator)])


def make_logreg(params: LogRegParams) -> Pipeline:
    return _pipeline(
        params,
        LogisticRegression(
            C=params.C,
            max_iter=params.max_iter,
            class_weight=params.class_weight,
            random_state=params.seed,
        ),
    )


def make_svm(params: SVMParams) -> Pipeline:
    if params.kernel == "rbf":
        estimator = SVC(
            kernel="rbf",
            C=params.C,
            gamma=params.gamma,
            class_weight=params.class_weight,
            random_state=params.seed,
        )
    else:
        estimator = LinearSVC(
            C=params.C,
            max_iter=params.max_iter,
            class_weight=params.class_weight,
            random_state=params.seed,
        )
    if params.probability:
        estimator = CalibratedClassifierCV(estimator, cv=3, ensemble=False)
    return _pipeline(params, estimator)


def make_mlp(params: MLPParams) -> Pipeline:
    return _pipeline(
        params,
        MLPClassifier(
            hidden_layer_sizes=tuple(params.hidden),
            alpha=params.alpha,
            learning_rate_init=params.learning_rate_init,
            max_iter=params.max_iter,
            early_stopping=params.early_stopping,
            random_state=params.seed,
        ),
    )


def make_sgd(params: SGDParams) -> Pipeline:
    return _pipeline(
        params, SGDClassifier(loss=params.loss, alpha=params.alpha, random_state=params.seed)
    )


@dataclass(frozen=True)
class HeadSpec:
    """A factory and the dataclass its params are validated against."""

    params: type[HeadParams]
    build: Callable[[Any], Pipeline]
    streaming: bool = False  # fitted chunk by chunk with partial_fit


HEADS: dict[str, HeadSpec] = {
    "logreg": HeadSpec(LogRegParams, make_logreg),
    "svm": HeadSpec(SVMParams, make_svm),
    "mlp": HeadSpec(MLPParams, make_mlp),
    "sgd": HeadSpec(SGDParams, make_sgd, streaming=True),
}


def build_head(kind: str, params: HeadParams) -> Pipeline:
    return HEADS[kind].build(params)
