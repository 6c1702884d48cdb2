"""The finiteness check: no NaN or inf code ever reaches the store or a prediction.

Each batch is checked right after its forward pass, in the store's dtype; see
:class:`FiniteGuard` for what happens to a row that fails.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from features.compute.encoder import Encoder, PendingCodes
from features.compute.prefetch import ReadyBatch
from features.errors import UserError
from features.store.shards import Failure

__all__ = ["NON_FINITE", "CheckedBatch", "FiniteGuard", "FiniteStats"]

NON_FINITE = "non_finite"  # skip reason: the image's codes hold NaN or inf, even in fp32


@dataclass
class FiniteStats:
    """What the finiteness check did: rows kept from an fp32 retry, images skipped."""

    recomputed: int = 0
    skipped: int = 0


class CheckedBatch(NamedTuple):
    """A batch's finite codes, ready to commit, and every image of it that got none."""

    hashes: list[str]
    codes: PendingCodes | None
    failures: list[Failure]


def _finite_rows(codes: np.ndarray) -> np.ndarray:
    return np.isfinite(codes).all(axis=1)


class FiniteGuard:
    """Keeps NaN and inf out of the store, one batch at a time, right after its forward pass.

    Rows are checked in the store's dtype, so a value past float16's range counts as inf.
    Under fp16/bf16 a non-finite row is recomputed once in fp32 (a narrow range or mantissa
    is the usual cause) and kept if finite now; otherwise its image becomes a permanent
    ``non_finite`` skip, as the same bytes and fingerprint give the same codes again.
    Finite rows are never recomputed, so they equal a clean run's bit for bit. A batch
    without a single finite row points at the settings rather than the images: the run
    stops; a lone image in a batch of one, after finite batches, is only skipped.
    """

    def __init__(self, encoder: Encoder) -> None:
        self.encoder = encoder
        self.stats = FiniteStats()
        self._finite_seen = False

    def __call__(self, ready: ReadyBatch, codes: PendingCodes | None) -> CheckedBatch:
        if codes is None:
            return CheckedBatch(ready.hashes, None, ready.failures)
        rows = codes.numpy()
        finite = _finite_rows(rows)
        if finite.all():
            self._finite_seen = True
            return CheckedBatch(ready.hashes, codes, ready.failures)
        fp32 = self.encoder.fp32()
        if fp32 is not None:
            rows, finite = self._recompute(fp32, ready.pixels, rows, finite)
        if not finite.any() and (len(rows) > 1 or not self._finite_seen):
            raise UserError(
                f"every image of a batch gave NaN or inf codes"
                f"{' (also recomputed in fp32)' if fp32 else ''}: check extract.preprocessing "
                f"(std must be > 0) and the weights. What was computed before is committed."
            )
        detail = "codes hold NaN or inf" + (", also recomputed in fp32" if fp32 else "")
        skips = [
            Failure(ready.hashes[i], NON_FINITE, detail, permanent=True)
            for i in np.flatnonzero(~finite)
        ]
        self.stats.skipped += len(skips)
        self._finite_seen = self._finite_seen or bool(finite.any())
        kept = np.flatnonzero(finite)
        return CheckedBatch(
            [ready.hashes[i] for i in kept],
            PendingCodes(torch.from_numpy(rows[kept])),
            ready.failures + skips,
        )

    def _recompute(
        self, fp32: Encoder, pixels: torch.Tensor, rows: np.ndarray, finite: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Rows and their finiteness once the non-finite ones are recomputed in fp32."""
        bad = np.flatnonzero(~finite)
        again = fp32(pixels[bad.tolist()]).numpy()
        now_finite = _finite_rows(again)
        rows, finite = rows.copy(), finite.copy()
        rows[bad[now_finite]] = again[now_finite]
        finite[bad[now_finite]] = True
        self.stats.recomputed += int(now_finite.sum())
        return rows, finite
