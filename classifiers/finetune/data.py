"""Reader: manifest images as training batches (augmented) and evaluation batches (not).

Training images get torchvision's ``RandomResizedCrop`` to ``preprocessing.crop`` and a
horizontal flip; evaluation images the resize and centre crop ``extract`` uses
(:func:`features.compute.loader.make_loader`). Every random draw of an epoch (the order,
each crop, each flip) is a function of (seed, epoch, position) alone, drawn apart from
torch's global generator: a run resumed in the middle of an epoch draws exactly the
batches the interrupted one would have, whatever the number of loader workers.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision.transforms import RandomResizedCrop

from classifiers.data import SplitPlan
from features.compute.loader import ImageRef
from features.data.images import ImageLimits, ImageRejected, decode_rgb
from features.data.manifest import ManifestRow, assign_split
from features.data.preprocess import Preprocessing, to_uint8_chw
from features.errors import UserError

__all__ = [
    "EpochBatches",
    "Splits",
    "TrainImages",
    "batches_per_epoch",
    "choose_splits",
    "image_refs",
    "train_loader",
]

VAL_SALT = "finetune-val-v1"  # a fixed salt: the carved val split never moves between runs
SCALE = (0.08, 1.0)  # torchvision's RandomResizedCrop defaults: area fraction...
RATIO = (3 / 4, 4 / 3)  # ...and aspect ratio of the crop


@dataclass(frozen=True)
class Splits:
    """What trains the network and what stops it early (never the evaluated split)."""

    train: list[ManifestRow]
    val: list[ManifestRow]
    val_source: str  # "val", or how it was carved from train


def choose_splits(
    rows: Sequence[ManifestRow], plan: SplitPlan, val_fraction: float, max_images: int | None
) -> Splits:
    """The dataset's val split when it is free to choose with (``plan.select``), else
    ``val_fraction`` of train carved by content hash; then at most ``max_images`` of train,
    a subset by content hash too, so the same images whatever the manifest order."""
    train = [row for row in rows if row.split == "train"]
    if plan.select == "val":
        val = [row for row in rows if row.split == "val"]
        source = "val"
    else:
        val = [
            row for row in train if assign_split(row.sha256, VAL_SALT, 0.0, val_fraction) == "val"
        ]
        carved = {row.sha256 for row in val}
        train = [row for row in train if row.sha256 not in carved]
        source = f"{val_fraction:g} of train, by content hash"
    if max_images is not None and len(train) > max_images:
        kept = set(sorted(row.sha256 for row in train)[:max_images])
        train = [row for row in train if row.sha256 in kept]
    if not train or not val:
        raise UserError(
            f"fine-tuning needs train and val images; got {len(train)} train and {len(val)} "
            f"val ({source}): add images, or raise finetune.val_fraction"
        )
    return Splits(train, val, source)


def image_refs(rows: Sequence[ManifestRow], root: Path) -> list[ImageRef]:
    return [ImageRef(row.sha256, Path(root) / row.path) for row in rows]


def _decode_checked(ref: ImageRef, limits: ImageLimits, short_side: int | None) -> Image.Image:
    """The image, if its bytes are still the ones ``prepare`` hashed; else a user error
    (training on a silently different or missing image would not be reproducible)."""
    try:
        data = ref.path.read_bytes()
    except OSError as error:
        raise UserError(f"cannot read {ref.path}: {error.strerror}; rerun prepare") from error
    if hashlib.sha256(data).hexdigest() != ref.sha256:
        raise UserError(f"{ref.path} changed since prepare; rerun prepare")
    try:
        return decode_rgb(data, limits, short_side=short_side)
    except ImageRejected as rejected:
        raise UserError(
            f"{ref.path}: {rejected.reason} ({rejected.detail}); rerun prepare"
        ) from rejected


def augment(image: Image.Image, crop: int, seed: int) -> torch.Tensor:
    """A random resized crop and a coin-flip mirror, drawn from ``seed`` only, as uint8
    pixels of shape (3, crop, crop)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        top, left, height, width = RandomResizedCrop.get_params(image, list(SCALE), list(RATIO))
        flip = bool(torch.rand(1) < 0.5)
    box = (left, top, left + width, top + height)
    image = image.resize((crop, crop), Image.Resampling.BILINEAR, box=box)
    if flip:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return to_uint8_chw(image)


class TrainImages(Dataset):
    """Map-style dataset indexed by ``(image index, augmentation seed)`` pairs."""

    def __init__(
        self,
        rows: Sequence[ManifestRow],
        root: Path,
        classes: Sequence[str],
        preprocessing: Preprocessing,
        limits: ImageLimits,
    ) -> None:
        self.refs = image_refs(rows, root)
        index = {label: i for i, label in enumerate(classes)}
        self.labels = [index[row.label] for row in rows]
        self.preprocessing = preprocessing
        self.limits = limits

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, seed = key
        short_side = self.preprocessing.resize if self.preprocessing.jpeg_draft else None
        image = _decode_checked(self.refs[index], self.limits, short_side)
        return augment(image, self.preprocessing.crop, seed), self.labels[index]


def batches_per_epoch(images: int, batch_size: int) -> int:
    return math.ceil(images / batch_size)


class EpochBatches(Sampler[list[tuple[int, int]]]):
    """Epoch ``epoch``'s batches of ``(image index, augmentation seed)``, from batch ``start``."""

    def __init__(self, images: int, batch_size: int, seed: int, epoch: int, start: int = 0):
        self.images = images
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = epoch
        self.start = start

    def __len__(self) -> int:
        return max(0, batches_per_epoch(self.images, self.batch_size) - self.start)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(self.images)
        seeds = rng.integers(0, 2**63, size=self.images)
        for first in range(self.start * self.batch_size, self.images, self.batch_size):
            span = range(first, min(first + self.batch_size, self.images))
            yield [(int(order[i]), int(seeds[i])) for i in span]


def train_loader(
    dataset: TrainImages,
    batch_size: int,
    seed: int,
    epoch: int,
    start: int,
    workers: int,
    pin_memory: bool,
) -> DataLoader:
    """The rest of one epoch, from batch ``start``: what a resumed run picks up."""
    return DataLoader(
        dataset,
        batch_sampler=EpochBatches(len(dataset), batch_size, seed, epoch, start),
        num_workers=workers,
        pin_memory=pin_memory,
        # Its own generator: the loader draws a worker seed per epoch, never from the
        # global one that dropout draws from (a resumed epoch would shift every mask).
        generator=torch.Generator().manual_seed(seed),
    )
