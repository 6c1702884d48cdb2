"""Codes for the linear-probe benchmark: ~100 classes of 4096-d, ReLU-like, ill-conditioned
vectors that take scikit-learn's lbfgs as many iterations as random-weight VGG16 codes of
real flowers do (the benchmark checks and reports both counts), written to a real store.

Planted structure: each class is a point in a 1024-d latent space; a row is its class's
point plus unit noise, mapped to 4096-d by a fixed matrix whose latent directions decay as
k^-0.75 (the slowly decaying spectrum of real codes), plus a shared per-row magnitude
(images differ in overall activation, which makes the features strongly correlated),
per-feature log-normal scales, feature noise, then ReLU (half the entries are zero, as in
fc6 codes). Rows are generated in blocks seeded by position, so any prefix is the same.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from features.data.manifest import ManifestRow
from features.store import StoreWriter
from features.store.fingerprint import Fingerprint

__all__ = ["PlantedCodes", "write_store"]

BLOCK = 4096  # rows per generated block and per store commit (extract's commit_rows)


@dataclass(frozen=True)
class PlantedCodes:
    """The generator; calibrated (separation 0.6) to ~50-60 % test accuracy at 10k rows."""

    classes: int = 100
    dim: int = 4096
    latent: int = 1024
    separation: float = 0.6
    seed: int = 0

    def _fixed(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        rng = np.random.default_rng(self.seed)
        decay = np.arange(1, self.latent + 1, dtype=np.float32) ** -0.75
        project = rng.standard_normal((self.latent, self.dim), dtype=np.float32)
        project *= decay[:, None] * 8 / np.sqrt(self.latent)
        shared = rng.standard_normal(self.dim, dtype=np.float32)
        scale = np.exp(rng.normal(0, 0.5, self.dim)).astype(np.float32)
        centres = rng.standard_normal((self.classes, self.latent), dtype=np.float32)
        return project, shared, scale, centres * self.separation

    def blocks(self, n: int, offset: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(codes as float16, class indices)`` for rows offset .. offset+n, by block."""
        project, shared, scale, centres = self._fixed()
        for start in range(offset, offset + n, BLOCK):
            rows = min(BLOCK, offset + n - start)
            rng = np.random.default_rng([self.seed, 1, start])
            y = rng.integers(0, self.classes, rows)
            latent = centres[y] + rng.standard_normal((rows, self.latent), dtype=np.float32)
            X = latent @ project
            X += (
                rng.standard_normal((rows, 1), dtype=np.float32) * shared * (50 / np.sqrt(self.dim))
            )
            X += rng.standard_normal((rows, self.dim), dtype=np.float32)
            X *= np.exp(rng.normal(0, 0.5, (rows, 1))).astype(np.float32) * scale
            yield np.maximum(X, 0).astype(np.float16), y

    def array(self, n: int, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
        parts = list(self.blocks(n, offset))
        return np.concatenate([X for X, _ in parts]), np.concatenate([y for _, y in parts])


def _hash(seed: int, row: int) -> str:
    return hashlib.sha256(f"planted:{seed}:{row}".encode()).hexdigest()


def write_store(
    root: Path, codes: PlantedCodes, n_train: int, n_test: int
) -> tuple[list[ManifestRow], float]:
    """A store of ``n_train + n_test`` generated rows, committed ``BLOCK`` rows at a time
    through :class:`StoreWriter` as extract commits; the manifest rows and the seconds."""
    fingerprint = Fingerprint(
        "planted", "codes", codes.dim, f"planted:{codes.seed}", "{}", "fp32", "float16", "-", "-"
    )
    rows: list[ManifestRow] = []
    started = time.perf_counter()
    with StoreWriter(root, fingerprint, log=lambda _: None) as writer:
        position = 0
        for X, y in codes.blocks(n_train + n_test):
            hashes = [_hash(codes.seed, position + i) for i in range(len(y))]
            writer.commit(hashes, X)
            for i, (sha, label) in enumerate(zip(hashes, y, strict=True)):
                split = "train" if position + i < n_train else "test"
                rows.append(ManifestRow(f"planted/{position + i}", sha, f"c{label:03d}", split))
            position += len(y)
    return rows, time.perf_counter() - started
