"""Nearest neighbours without an n x n matrix: cosine over the codes, Hamming over the
perceptual signatures, both with faiss.

Codes: exact inner products of unit-normalised codes up to ``exact_max_rows``;
above it, codes are projected to ``reduced_dim`` by PCA and searched through an inverted
file (faiss ``PCA,IVF,Flat``): the index holds n x ``reduced_dim`` floats, not n x 4096,
and a query visits ``nprobe`` of ~4 sqrt(n) lists. Queries go in blocks, so memory is the
index plus one block's results. Signatures: an exact binary index, range-searched, since
only pairs under the near-duplicate radius matter.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import faiss
import numpy as np

__all__ = ["CodeIndexSettings", "Neighbours", "cosine_neighbours", "hamming_pairs", "unit_rows"]

_QUERY_ROWS = 4096
_TRAIN_ROWS_PER_LIST = 40  # faiss warns below ~39 training points per inverted list


@dataclass(frozen=True)
class CodeIndexSettings:
    """How the codes' neighbours are searched: exactly for small stores, else approximately."""

    k: int = 10
    exact_max_rows: int = 20_000
    reduced_dim: int = 256
    nprobe: int = 16


@dataclass(frozen=True)
class Neighbours:
    """Each row's ``k`` nearest other rows and their cosine similarities, nearest first;
    -1 where a row has fewer neighbours than ``k``."""

    indices: np.ndarray  # int64 (n, k)
    similarities: np.ndarray  # float32 (n, k)
    exact: bool


def unit_rows(block: np.ndarray) -> np.ndarray:
    block = np.ascontiguousarray(block, dtype=np.float32)
    norms = np.linalg.norm(block, axis=1, keepdims=True)
    return block / np.where(norms > 0, norms, 1.0)


def _training_sample(read: Callable[[int, int], np.ndarray], n: int, rows: int) -> np.ndarray:
    """About ``rows`` rows in evenly spread runs of 256: a store reads runs, not rows."""
    run = 256
    starts = np.linspace(0, max(n - run, 0), num=max(1, min(n, rows) // run), dtype=np.int64)
    return np.concatenate([read(int(s), min(n, int(s) + run)) for s in np.unique(starts)])


class _ExactIndex:
    """Exact inner-product search by one matrix product per query block: numpy's BLAS ran
    it twice as fast as faiss ``IndexFlatIP`` on the 2-core machine (10k x 4096: 7 s vs
    14 s, ``bench/audit_bench.py``)."""

    def __init__(self) -> None:
        self._blocks: list[np.ndarray] = []

    def add(self, block: np.ndarray) -> None:
        self._blocks.append(block)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        codes = np.concatenate(self._blocks) if len(self._blocks) > 1 else self._blocks[0]
        self._blocks = [codes]
        similarity = queries @ codes.T
        k = min(k, codes.shape[0])
        top = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(similarity, top, axis=1), axis=1)
        top = np.take_along_axis(top, order, axis=1)
        return np.take_along_axis(similarity, top, axis=1), top


def _build_index(
    read: Callable[[int, int], np.ndarray], n: int, dim: int, settings: CodeIndexSettings
) -> tuple[faiss.Index | _ExactIndex, bool]:
    if n <= settings.exact_max_rows:
        index = _ExactIndex()
    else:
        lists = max(1, min(4 * math.isqrt(n), n // _TRAIN_ROWS_PER_LIST))
        index = faiss.index_factory(
            dim, f"PCA{settings.reduced_dim},IVF{lists},Flat", faiss.METRIC_INNER_PRODUCT
        )
        index.train(unit_rows(_training_sample(read, n, lists * 64)))
        faiss.extract_index_ivf(index).nprobe = settings.nprobe
    for start in range(0, n, _QUERY_ROWS):
        index.add(unit_rows(read(start, min(n, start + _QUERY_ROWS))))
    return index, n <= settings.exact_max_rows


def _blocks(n: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n, _QUERY_ROWS):
        yield start, min(n, start + _QUERY_ROWS)


def cosine_neighbours(
    read: Callable[[int, int], np.ndarray], n: int, dim: int, settings: CodeIndexSettings
) -> Neighbours:
    """Neighbours of rows ``0..n-1``, where ``read(start, stop)`` returns those rows' codes
    (any float dtype): the store is read twice in blocks, never held whole as float32."""
    index, exact = _build_index(read, n, dim, settings)
    k = min(settings.k, max(n - 1, 0))
    indices = np.full((n, k), -1, dtype=np.int64)
    similarities = np.zeros((n, k), dtype=np.float32)
    for start, stop in _blocks(n):
        found_sim, found = index.search(unit_rows(read(start, stop)), k + 1)
        for offset, (row_sim, row) in enumerate(zip(found_sim, found, strict=True)):
            keep = (row != start + offset) & (row >= 0)
            picked = row[keep][:k]
            indices[start + offset, : len(picked)] = picked
            similarities[start + offset, : len(picked)] = row_sim[keep][:k]
    return Neighbours(indices, np.clip(similarities, -1.0, 1.0), exact)


def hamming_pairs(signatures: np.ndarray, max_distance: int) -> np.ndarray:
    """Every pair ``(i, j)``, i < j, whose signatures differ in at most ``max_distance``
    bits, with that distance: an int64 array of shape (pairs, 3)."""
    index = faiss.IndexBinaryFlat(signatures.shape[1] * 8)
    index.add(signatures)
    found = []
    for start, stop in _blocks(len(signatures)):
        lims, distances, others = index.range_search(signatures[start:stop], max_distance + 1)
        rows = np.repeat(np.arange(start, stop), np.diff(lims).astype(np.int64))
        keep = others > rows
        found.append(np.stack([rows[keep], others[keep], distances[keep]], axis=1))
    return np.concatenate(found).astype(np.int64) if found else np.zeros((0, 3), np.int64)
