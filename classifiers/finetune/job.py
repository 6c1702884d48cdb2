"""What one fine-tuning run is asked to do, and what it reports having done."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from classifiers.finetune.data import TrainImages
from classifiers.finetune.runtime import Runtime
from features.compute.loader import ImageRef
from features.data.images import ImageLimits
from features.data.preprocess import Preprocessing
from features.errors import UserError

__all__ = ["Job", "NonFiniteLoss", "Settings", "TrainResult"]


class Settings(Protocol):
    """The ``finetune:`` params the loop reads (``pipeline.params.FinetuneParams``)."""

    epochs: int
    patience: int
    lr: float
    momentum: float
    weight_decay: float
    batch_size: int
    checkpoint_seconds: float
    seed: int


class NonFiniteLoss(UserError):
    """The loss became NaN or inf: nothing from that epoch is saved or reported."""


@dataclass(frozen=True)
class Job:
    """What one run trains on, validates on and with."""

    train: TrainImages
    val: list[ImageRef]
    val_labels: dict[str, int]  # sha256 -> class index
    settings: Settings
    runtime: Runtime
    preprocessing: Preprocessing
    limits: ImageLimits
    folder: Path  # the checkpoint folder
    run: str  # identity of the settings and data, see checkpoint.TrainState


@dataclass(frozen=True)
class TrainResult:
    """What the run did; the network itself holds the best epoch's weights."""

    curves: list[dict[str, float]]  # epoch, train_loss, val_loss, val_accuracy
    best_epoch: int
    best_accuracy: float
    stopped_early: bool
    seconds: float  # training time, over every run that contributed
