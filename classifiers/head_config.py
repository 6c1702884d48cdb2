"""Each head kind's options: the dataclass ``heads.<name>`` is validated against, with
the defaults a head gets when params.yaml leaves an option out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "PREPROCESSORS",
    "BlockParams",
    "HeadParams",
    "LinearParams",
    "LogRegParams",
    "MLPParams",
    "SGDParams",
    "SVMParams",
    "TorchLogRegParams",
]

PREPROCESSORS = ("standardize", "l2", "none")


@dataclass(frozen=True)
class HeadParams:
    """Options every head shares."""

    kind: str | None = None  # factory name; defaults to the head's own name
    preprocess: str = field(default="standardize", metadata={"choices": PREPROCESSORS})
    grid: dict[str, list[Any]] | None = None  # param -> candidates, stratified CV on train
    cv_folds: int = field(default=5, metadata={"min": 2})
    # dask: on extract.dask's cluster (its address, or a local cluster of its workers):
    # a grid's points as joblib tasks; a streaming head's chunks as store.to_dask() tasks
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
    tol: float = field(default=1e-7, metadata={"min_exclusive": 0})  # the refit's
    # The sweep's fits only rank Cs on val: scikit-learn's default tolerance is enough.
    sweep_tol: float = field(default=1e-4, metadata={"min_exclusive": 0})
    # Coarse-to-fine (classifiers/probe_search.py): every coarse_step-th C, stopping
    # `patience` coarse points past the best, then the step halved around the best down
    # to its grid neighbours; coarse_step 1 with patience null fits every C.
    coarse_step: int = field(default=4, metadata={"min": 1})
    patience: int | None = field(default=2, metadata={"min": 1})
    device: str = "auto"  # auto: CUDA when present
    # Set for stores larger than RAM: codes read chunk_rows at a time, never all in host
    # memory (a GPU with room for a split keeps it there, read once).
    chunk_rows: int | None = field(default=None, metadata={"min": 1})
    # With chunk_rows: lbfgs sums each full-batch gradient over one pass of chunks (the
    # CPU's choice: arithmetic dominates, so fewer, exact fits win); adam trains every C
    # in each pass (`epochs` passes, step `lr` decaying to 0), for when reading dominates.
    solver: str = field(default="lbfgs", metadata={"choices": ("lbfgs", "adam")})
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
