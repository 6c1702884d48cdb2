"""Several stores fed by one forward pass: each commit's columns split, one store per layer.

Each store keeps its own lock, fingerprint and commits, so each stays valid on its own: a
crash between two stores' commits leaves one a commit ahead, and the next run computes
for the other only what it lacks (its writer drops hashes it already holds).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from contextlib import ExitStack

import numpy as np

from features.store.shards import ShardRecord, SkipRecord
from features.store.writer import StoreWriter

__all__ = ["StoreFanout"]


class StoreFanout:
    """Writers keyed by layer, and the columns of a commit's codes that belong to each."""

    def __init__(self, writers: Mapping[str, StoreWriter], columns: Mapping[str, slice]) -> None:
        if writers.keys() != columns.keys():
            raise ValueError(f"writers {sorted(writers)} and columns {sorted(columns)} differ")
        self.writers = dict(writers)
        self.columns = dict(columns)
        self._stack = ExitStack()

    def __enter__(self) -> StoreFanout:
        with ExitStack() as stack:
            for writer in self.writers.values():
                stack.enter_context(writer)
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.__exit__(*exc)  # each writer learns of a failure: it then skips its fold

    def missing(self, sha256: str) -> tuple[str, ...]:
        """The layers whose store neither holds ``sha256`` nor records it as skipped."""
        return tuple(
            layer
            for layer, writer in self.writers.items()
            if sha256 not in writer.known and sha256 not in writer.skipped
        )

    def subset(self, layers: Sequence[str]) -> StoreFanout:
        """The same open writers for ``layers`` only, their columns renumbered from 0, as
        an extractor for just those layers lays them out."""
        columns, start = {}, 0
        for layer in layers:
            width = self.columns[layer].stop - self.columns[layer].start
            columns[layer] = slice(start, start + width)
            start += width
        return StoreFanout({layer: self.writers[layer] for layer in layers}, columns)

    def commit(self, hashes: Sequence[str], codes: np.ndarray, skips: Iterable[SkipRecord]) -> None:
        """One commit per store, in order; each is atomic, the set of them is not."""
        skips = tuple(skips)
        for layer, writer in self.writers.items():
            writer.commit(hashes, codes[:, self.columns[layer]], skips)

    def commit_shards(self, records: Mapping[str, ShardRecord], skips: Iterable[SkipRecord]) -> int:
        """Index each layer's shard (written by a Dask worker) in its store; the rows added
        to the first store, which every store gets too."""
        skips = tuple(skips)
        added = [
            writer.commit_shards([records[layer]] if layer in records else [], skips)
            for layer, writer in self.writers.items()
        ]
        return added[0]

    def settle_orphans(self) -> None:
        """:meth:`StoreWriter.settle_orphans` on every store, once all workers are done."""
        for writer in self.writers.values():
            writer.settle_orphans()
