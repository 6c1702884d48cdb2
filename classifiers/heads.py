"""Head factories: params dataclass in, unfitted scikit-learn ``Pipeline`` out.

A head is preprocessing (standardise or L2-normalise the codes) followed by an estimator.
Adding a head is one factory and one entry in :data:`HEADS`, plus its block under
``heads:`` in params.yaml; ``heads.<name>.kind`` lets one factory serve several entries
(``svm_rbf: {kind: svm, kernel: rbf}``). ``kind: sklearn`` needs no factory: it takes any
scikit-learn classifier by dotted path (``estimator``) with its own constructor ``params``.
"""

from __future__ import annotations

import importlib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from sklearn.base import BaseEstimator, is_classifier
from sklearn.calibration import CalibratedClassifierCV
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, Normalizer, StandardScaler
from sklearn.svm import SVC, LinearSVC

from classifiers.block import ClassifierBlockClassifier
from classifiers.probe_torch import TorchLogisticProbe

__all__ = [
    "HEADS",
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

PREPROCESSORS = ("standardize", "l2", "none")


@dataclass(frozen=True)
class HeadParams:
    """Options every head shares."""

    kind: str | None = None  # factory name; defaults to the head's own name
    preprocess: str = field(default="standardize", metadata={"choices": PREPROCESSORS})
    grid: dict[str, list[Any]] | None = None  # param -> candidates, stratified CV on train
    cv_folds: int = field(default=5, metadata={"min": 2})
    # dask: the grid's points run as tasks on extract.dask's cluster (its address, or a
    # local cluster of its workers), through joblib's dask backend
    backend: str = field(default="local", metadata={"choices": ("local", "dask")})
    # scikit-learn's random_state range: anything else fails mid-fit, not at params load.
    seed: int = field(default=0, metadata={"min": 0, "max": 2**32 - 1})


@dataclass(frozen=True)
class LinearParams(HeadParams):
    """Heads whose C the linear-probe protocol chooses (``classifiers/probe.py``)."""

    # "sweep": chosen on val from sweep_points log-spaced values in [sweep_low, sweep_high],
    # then refitted on train + val; a number: fixed by hand, as the report then says.
    C: float | str = field(default="sweep", metadata={"choices": ("sweep",), "min_exclusive": 0})
    sweep_low: float = field(default=1e-6, metadata={"min_exclusive": 0})
    sweep_high: float = field(default=1e5, metadata={"min_exclusive": 0})
    sweep_points: int = field(default=12, metadata={"min": 2})  # one per decade
    # Without a val/ folder, this fraction of train, carved by content hash, chooses C.
    val_fraction: float = field(default=0.1, metadata={"min_exclusive": 0, "max": 0.5})


@dataclass(frozen=True)
class LogRegParams(LinearParams):
    max_iter: int = field(default=2000, metadata={"min": 1})
    class_weight: str | None = field(default=None, metadata={"choices": (None, "balanced")})


@dataclass(frozen=True)
class SVMParams(LinearParams):
    # liblinear slows by orders of magnitude past C ~ 100 on standardised codes
    sweep_low: float = field(default=1e-4, metadata={"min_exclusive": 0})
    sweep_high: float = field(default=1e2, metadata={"min_exclusive": 0})
    sweep_points: int = field(default=7, metadata={"min": 2})
    kernel: str = field(default="linear", metadata={"choices": ("linear", "rbf")})
    gamma: str | float = field(  # rbf only
        default="scale", metadata={"choices": ("scale", "auto"), "min_exclusive": 0}
    )
    max_iter: int = field(default=5000, metadata={"min": 1})
    # Platt-scaled probabilities, so `predict` can print them; costs extra CV fits.
    probability: bool = True
    class_weight: str | None = field(default=None, metadata={"choices": (None, "balanced")})


@dataclass(frozen=True)
class TorchLogRegParams(LinearParams):
    """Multinomial logistic regression solved in torch (``classifiers/probe_torch.py``)."""

    max_iter: int = field(default=500, metadata={"min": 1})  # L-BFGS iterations per C
    tol: float = field(default=1e-7, metadata={"min_exclusive": 0})
    device: str = "auto"  # auto: CUDA when present
    # Set for stores larger than RAM: every C trained in each pass over chunks of this many
    # codes (minibatch Adam, `epochs` passes, step `lr` decaying to 0), never all in memory.
    chunk_rows: int | None = field(default=None, metadata={"min": 1})
    epochs: int = field(default=20, metadata={"min": 1})
    lr: float = field(default=1e-2, metadata={"min_exclusive": 0})


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


_SHARED = frozenset(f.name for f in fields(HeadParams))
_SKLEARN_PATH = re.compile(r"sklearn(\.[A-Za-z_]\w*)+")


@dataclass(frozen=True)
class BlockParams(HeadParams):
    """VGG16's classifier block retrained on stored pool5 maps (``classifiers/block.py``)."""

    preprocess: str = field(default="none", metadata={"choices": PREPROCESSORS})
    epochs: int = field(default=20, metadata={"min": 1})
    patience: int = field(default=3, metadata={"min": 1})  # epochs without a better val score
    lr: float = field(default=1e-4, metadata={"min_exclusive": 0})
    weight_decay: float = field(default=5e-4, metadata={"min": 0})
    batch_size: int = field(default=64, metadata={"min": 1})
    dropout: float = field(default=0.5, metadata={"min": 0, "max": 0.9})
    device: str = "auto"  # auto: CUDA when present
    # Without a val/ folder, this fraction of train, carved by content hash, early-stops.
    val_fraction: float = field(default=0.1, metadata={"min_exclusive": 0, "max": 0.5})


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
