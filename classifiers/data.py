"""Training data: manifest labels joined with stored codes, read in bounded chunks."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from features.data.manifest import ManifestRow
from features.errors import UserError
from features.store import FeatureStore

__all__ = ["SplitData", "class_names", "iter_split", "load_split"]


@dataclass(frozen=True)
class SplitData:
    """Codes and labels of one split, row-aligned with ``hashes``."""

    X: np.ndarray  # float32 of shape (n_images, dim)
    y: np.ndarray  # labels (str) of shape (n_images,)
    hashes: list[str]


def class_names(rows: Sequence[ManifestRow]) -> list[str]:
    return sorted({row.label for row in rows})


def _rows(rows: Sequence[ManifestRow], split: str, store: FeatureStore) -> list[ManifestRow]:
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
    kept = _rows(rows, split, store)
    X = np.empty((len(kept), store.dim), dtype=np.float32)
    hashes = [row.sha256 for row in kept]
    start = 0
    for _, codes in store.iter_chunks(hashes, chunk_rows):
        X[start : start + len(codes)] = codes
        start += len(codes)
    return SplitData(X, np.array([row.label for row in kept]), hashes)


def _shuffle_rng(seed: int) -> np.random.Generator:
    """The generator that orders a pass; valid for every int, not just numpy's seeds.

    Callers derive one seed per pass by offsetting the head's seed (``seed + epoch``), and
    the streaming fit's scaler pass is epoch -1, so seed 0 asks for -1, which numpy
    refuses. A negative seed draws from the first child of ``|seed|``'s stream, which
    no plain int seed reproduces; non-negative seeds keep the stream they always had.
    """
    if seed >= 0:
        return np.random.default_rng(seed)
    return np.random.default_rng(np.random.SeedSequence(-seed).spawn(1)[0])


def iter_split(
    rows: Sequence[ManifestRow], split: str, store: FeatureStore, chunk_rows: int, seed: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Shuffled ``(X, y)`` chunks of a split, for heads that never hold it all in memory."""
    kept = _rows(rows, split, store)
    order = _shuffle_rng(seed).permutation(len(kept))
    for start in range(0, len(order), chunk_rows):
        block = [kept[i] for i in order[start : start + chunk_rows]]
        codes = store.get([row.sha256 for row in block]).astype(np.float32)
        yield codes, np.array([row.label for row in block])
