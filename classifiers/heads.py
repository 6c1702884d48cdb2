"""Head factories: params dataclass in, unfitted scikit-learn ``Pipeline`` out.

A head is preprocessing (standardise or L2-normalise the codes) followed by an estimator.
Adding a head is one factory and one entry in :data:`HEADS`, plus its block under
``heads:`` in params.yaml; ``heads.<name>.kind`` lets one factory serve several entries
(``svm_rbf: {kind: svm, kernel: rbf}``). ``kind: sklearn`` needs no factory: it takes any
scikit-learn classifier by dotted path (``estimator``) with its own constructor ``params``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sklearn.calibration import CalibratedClassifierCV
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, Normalizer, StandardScaler
from sklearn.svm import SVC, LinearSVC

from classifiers.block import ClassifierBlockClassifier
from classifiers.head_config import (
    PREPROCESSORS,
    BlockParams,
    HeadParams,
    LinearParams,
    LogRegParams,
    MLPParams,
    SGDParams,
    SVMParams,
    TorchLogRegParams,
)
from classifiers.probe_torch import TorchLogisticProbe
from classifiers.sklearn_head import EstimatorError, SklearnParams, make_estimator

__all__ = [
    "HEADS",
    "PREPROCESSORS",
    "BlockParams",
    "EstimatorError",
    "HeadParams",
    "HeadSpec",
    "LinearParams",
    "LogRegParams",
    "MLPParams",
    "SGDParams",
    "SVMParams",
    "SklearnParams",
    "TorchLogRegParams",
    "build_head",
    "make_estimator",
]


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


def make_torch_logreg(params: TorchLogRegParams) -> Pipeline:
    return _pipeline(
        params,
        TorchLogisticProbe(
            C=params.C, max_iter=params.max_iter, tol=params.tol, device=params.device
        ),
    )


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


def make_sklearn(params: SklearnParams) -> Pipeline:
    return _pipeline(params, make_estimator(params))


def make_block(params: BlockParams) -> Pipeline:
    names = ("epochs", "patience", "lr", "weight_decay", "batch_size", "dropout", "device", "seed")
    block = ClassifierBlockClassifier(**{name: getattr(params, name) for name in names})
    return _pipeline(params, block)


@dataclass(frozen=True)
class HeadSpec:
    """A factory and the dataclass its params are validated against."""

    params: type[HeadParams]
    build: Callable[[Any], Pipeline]
    streaming: bool = False  # fitted chunk by chunk with partial_fit
    on_maps: bool = False  # trains on a map set (maps:, block_heads:), not on codes


HEADS: dict[str, HeadSpec] = {
    "logreg": HeadSpec(LogRegParams, make_logreg),
    "svm": HeadSpec(SVMParams, make_svm),
    "torch_logreg": HeadSpec(TorchLogRegParams, make_torch_logreg),
    "mlp": HeadSpec(MLPParams, make_mlp),
    "sgd": HeadSpec(SGDParams, make_sgd, streaming=True),
    "sklearn": HeadSpec(SklearnParams, make_sklearn),
    "classifier_block": HeadSpec(BlockParams, make_block, on_maps=True),
}


def build_head(kind: str, params: HeadParams) -> Pipeline:
    return HEADS[kind].build(params)
