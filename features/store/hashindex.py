"""Hash lookup: a store's hashes as one fixed-width numpy array, found by binary search.

A dict of 1.28M Python strings took a second to build and ~200 MiB; this holds the
``S64`` array (82 MB at 1.28M rows), a sort order, and each hash's first 8 bytes in that
order, so most of a lookup is an integer ``searchsorted``. The order is the bytes'
lexicographic order: integers sort most hashes, and only runs sharing their first 8 bytes
(a few hundred among 1.28M hex SHA-256) are sorted as strings.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from features.store.shards import HASH_DTYPE

__all__ = ["HashIndex"]


def _prefixes(hashes: np.ndarray) -> np.ndarray:
    """Each hash's first 8 bytes as a big-endian integer: it orders as the bytes do."""
    width = hashes.dtype.itemsize
    head = np.ascontiguousarray(hashes.view(np.uint8).reshape(len(hashes), width)[:, :8])
    return head.view(">u8").ravel().astype(np.uint64)


def _lexicographic_order(hashes: np.ndarray, prefixes: np.ndarray) -> np.ndarray:
    order = np.argsort(prefixes, kind="stable")
    ordered = prefixes[order]
    edges = np.flatnonzero(ordered[1:] != ordered[:-1]) + 1
    starts, stops = np.r_[0, edges], np.r_[edges, len(ordered)]
    tied = stops - starts > 1
    for start, stop in zip(starts[tied], stops[tied], strict=True):
        run = order[start:stop]
        order[start:stop] = run[np.argsort(hashes[run], kind="stable")]
    return order


class HashIndex:
    """Row of each hash in an array of hashes (store order); built once, read-only."""

    def __init__(self, hashes: np.ndarray) -> None:
        self.hashes = np.asarray(hashes, dtype=HASH_DTYPE)
        prefixes = _prefixes(self.hashes)
        self._order = _lexicographic_order(self.hashes, prefixes)
        self._sorted_prefixes = prefixes[self._order]

    def __len__(self) -> int:
        return len(self.hashes)

    def find(self, hashes: Sequence[str] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(rows, found)``: the row of each of ``hashes`` and whether it is there at all
        (``rows`` is meaningless where ``found`` is False)."""
        keys = np.asarray(hashes if isinstance(hashes, np.ndarray) else list(hashes))
        keys = keys.astype(HASH_DTYPE)
        count = len(self.hashes)
        if count == 0 or len(keys) == 0:
            return np.zeros(len(keys), dtype=np.int64), np.zeros(len(keys), dtype=bool)
        prefixes = _prefixes(keys)
        slots = np.minimum(np.searchsorted(self._sorted_prefixes, prefixes), count - 1)
        rows = self._order[slots]
        found = self.hashes[rows] == keys
        # A key sharing its first 8 bytes with a stored hash sorted before it: search the run.
        later = np.minimum(slots + 1, count - 1)
        tied = ~found & (slots + 1 < count) & (self._sorted_prefixes[later] == prefixes)
        if tied.any():
            exact = np.searchsorted(self.hashes, keys[tied], sorter=self._order)
            rows[tied] = self._order[np.minimum(exact, count - 1)]
            found[tied] = self.hashes[rows[tied]] == keys[tied]
        return rows.astype(np.int64), found

    def duplicates(self) -> np.ndarray:
        """Hashes stored more than once, each listed once."""
        ordered = self.hashes[self._order]
        return np.unique(ordered[1:][ordered[1:] == ordered[:-1]])
