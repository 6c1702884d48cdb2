"""Training data: manifest labels joined with stored codes, read in bounded chunks."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from features.data.manifest import ManifestRow, content_draw
from features.data.scan import SPLITS
from features.errors import UserError
from features.store import FeatureStore

__all__ = [
    "EVALUATE_ON",
    "VAL_SALT",
    "SplitData",
    "SplitPlan",
    "carve_val",
    "class_names",
    "has_split_folders",
    "load_split",
    "missing_classes",
    "plan_splits",
    "split_rows",
    "val_mask",
]

EVALUATE_ON = ("auto", "test", "val")
VAL_SALT = "val-carve"  # a carved val split depends on the image bytes and this alone


@dataclass(frozen=True)
class SplitData:
    """Codes and labels of one split, row-aligned with ``hashes``."""

    X: np.ndarray  # float32 of shape (n_images, dim)
    y: np.ndarray  # labels (str) of shape (n_images,)
    hashes: list[str]


def class_names(rows: Sequence[ManifestRow]) -> list[str]:
    return sorted({row.label for row in rows})


@dataclass(frozen=True)
class SplitPlan:
    """Which split gives the reported figure and which, if any, chooses hyperparameters."""

    evaluate: str  # "test" or "val"
    select: str | None  # "val" when a val split is free to choose with, else None
    note: str | None  # why the figure is not on test; None when it is


def _listing(splits: Sequence[str]) -> str:
    return ", ".join(f"{split}/" for split in splits) or "no split"


def has_split_folders(rows: Sequence[ManifestRow]) -> bool:
    """True when the dataset brought its own split folders (``train/<class>/...``)."""
    return all(row.path.split("/", 1)[0] == row.split for row in rows)


def plan_splits(rows: Sequence[ManifestRow], evaluate_on: str, root: str) -> SplitPlan:
    """Test gives the figure when there is one, else val; val selects when it is not the
    evaluation split. Decided from the manifest alone, before any fitting, so an
    unusable dataset fails in a second with a message instead of a scikit-learn traceback.
    """
    counts = Counter(row.split for row in rows)
    present = [split for split in SPLITS if counts[split]]
    if not counts["train"]:
        raise UserError(
            f"no images to train on: no train/ images under {root} (found only {_listing(present)})"
        )
    wanted = ("test", "val") if evaluate_on == "auto" else (evaluate_on,)
    found = [split for split in wanted if counts[split]]
    if not found:
        looked = " and ".join(f"{split}/" for split in wanted)
        hint = (
            f"; add a {wanted[0]}/<class>/ folder of images"
            if has_split_folders(rows)
            else "; raise split.test_fraction"
        )
        raise UserError(
            f"no images to evaluate on: looked for {looked} under {root} (the dataset has "
            f"only {_listing(present)}){hint}"
        )
    evaluate = found[0]
    note = None
    if evaluate == "val":
        reason = (
            "the dataset has no test split" if not counts["test"] else "evaluation.evaluate_on: val"
        )
        note = f"evaluated on val: {reason}"
    select = "val" if counts["val"] and evaluate != "val" else None
    return SplitPlan(evaluate, select, note)


def missing_classes(rows: Sequence[ManifestRow], split: str) -> list[str]:
    """Classes with no image in ``split``: they can have no recall or F1 there."""
    present = {row.label for row in rows if row.split == split}
    return [label for label in class_names(rows) if label not in present]


def split_rows(rows: Sequence[ManifestRow], split: str, store: FeatureStore) -> list[ManifestRow]:
    """The rows of ``split`` with codes in the store; those the store recorded as
    undecodable are left out, and any other missing code is an error."""
    chosen = [row for row in rows if row.split == split]
    stored = store.contains([row.sha256 for row in chosen])
    kept = [row for row, ok in zip(chosen, stored, strict=True) if ok]
    skipped = set(store.skipped)
    missing = [
        row for row, ok in zip(chosen, stored, strict=True) if not ok and row.sha256 not in skipped
    ]
    if missing:
        raise UserError(
            f"{len(missing)} {split} images have no codes in {store.root} (first: "
            f"{missing[0].path}); rerun the extract stage"
        )
    return kept


def load_split(
    rows: Sequence[ManifestRow], split: str, store: FeatureStore, chunk_rows: int = 4096
) -> SplitData:
    """Codes as float32, filled chunk by chunk: peak memory is the result plus one chunk.

    Images the store recorded as undecodable are left out; any other missing code is an
    error, because training on a silently partial split would misreport accuracy.
    """
    kept = split_rows(rows, split, store)
    X = np.empty((len(kept), store.dim), dtype=np.float32)
    hashes = [row.sha256 for row in kept]
    start = 0
    for _, codes in store.iter_chunks(hashes, chunk_rows):
        X[start : start + len(codes)] = codes
        start += len(codes)
    return SplitData(X, np.array([row.label for row in kept]), hashes)


def _subset(split: SplitData, keep: np.ndarray) -> SplitData:
    hashes = [sha for sha, kept in zip(split.hashes, keep, strict=True) if kept]
    return SplitData(split.X[keep], split.y[keep], hashes)


def val_mask(hashes: Sequence[str], fraction: float) -> np.ndarray:
    """Which of these train images a carved val split takes: those whose content draw
    falls under ``fraction`` (stable, whatever the order or peers); on a train split so
    small that none does, the one with the lowest draw, so defaults run on tiny datasets."""
    draws = np.array([content_draw(sha, VAL_SALT) for sha in hashes])
    val = draws < fraction
    if not val.any() and len(draws) > 1:
        val[draws.argmin()] = True
    if val.all() or not val.any():
        raise UserError(
            f"carving {fraction:.0%} of {len(hashes)} train images as val leaves one side "
            f"empty; add a val/ folder or change the head's val_fraction"
        )
    return val


def carve_val(split: SplitData, fraction: float) -> tuple[SplitData, SplitData]:
    """Train minus a val part chosen by content hash (:func:`val_mask`)."""
    val = val_mask(split.hashes, fraction)
    return _subset(split, ~val), _subset(split, val)
