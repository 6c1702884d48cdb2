"""A fine-tuning run small enough to finish in about a second on a CPU.

Shared by tests/classifiers/test_finetune*.py and their kill-point children
(``python -m tests.killpoints finetune``), so a child trains exactly what the test
compares against. The network is a registry backbone's shape in miniature: convolutions
(frozen, then trained), dropout that draws from torch's global generator (which a
resumed run must restore exactly), and a linear output layer.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from classifiers.finetune.data import TrainImages, image_refs
from classifiers.finetune.job import Job
from classifiers.finetune.model import FinetuneNet, unfrozen_modules
from classifiers.finetune.runtime import resolve_runtime
from features.data.manifest import ManifestRow
from features.data.preprocess import Preprocessing
from features.data.synthetic import CLASSES, make_dataset
from pipeline.params import FinetuneParams
from tests.conftest import LIMITS, SMALL_CONFIG, refs_for

PREPROCESSING = Preprocessing(resize=32, crop=32)
# 12 train images in batches of 4: 3 batches an epoch, 9 optimizer steps in all.
SETTINGS = FinetuneParams(
    backbone="vgg16",
    unfreeze_from="3",
    epochs=3,
    patience=3,
    lr=0.05,
    batch_size=4,
    checkpoint_seconds=1e-9,  # a checkpoint after every batch
    seed=0,
)


def make_images(root: Path) -> list[ManifestRow]:
    """16 generated JPEGs under ``root``, and their rows (:func:`image_rows`)."""
    make_dataset(root, per_class=4)
    return image_rows(root)


def image_rows(root: Path) -> list[ManifestRow]:
    """Per class, images 0-2 train and image 3 val."""
    refs = sorted(refs_for(root), key=lambda ref: str(ref.path))
    return [
        ManifestRow(
            str(ref.path.relative_to(root)),
            ref.sha256,
            ref.path.parent.name,
            "val" if ref.path.stem.endswith("3") else "train",
        )
        for ref in refs
    ]


def tiny_net() -> FinetuneNet:
    """Layers 0-2 frozen, 3 on trained (with a dropout in between), 9 the output layer."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(0.3),
            nn.Linear(16, len(CLASSES)),
        )
    unfrozen = unfrozen_modules(net, SETTINGS.unfreeze_from, "tiny")
    return FinetuneNet(net, "9", unfrozen, PREPROCESSING, channels_last=True)


def tiny_job(root: Path, folder: Path, checkpoint_seconds: float = 1e-9) -> Job:
    """Train the tiny net on the images under ``root`` (made by :func:`make_images`)."""
    rows = image_rows(root)
    train = [row for row in rows if row.split == "train"]
    val = [row for row in rows if row.split == "val"]
    return Job(
        train=TrainImages(train, root, list(CLASSES), PREPROCESSING, LIMITS),
        val=image_refs(val, root),
        val_labels={row.sha256: CLASSES.index(row.label) for row in val},
        settings=replace(SETTINGS, checkpoint_seconds=checkpoint_seconds),
        runtime=resolve_runtime(SMALL_CONFIG),
        preprocessing=PREPROCESSING,
        limits=LIMITS,
        folder=folder,
        run="tiny",
    )


def weights_digest(net: nn.Module) -> str:
    """SHA-256 over every tensor of the state dict, in order: equal iff bit-identical."""
    digest = hashlib.sha256()
    for key, tensor in net.state_dict().items():
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
