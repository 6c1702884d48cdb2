"""Keeping codes: an HDF5 store that a crash, a full disk or a second writer cannot corrupt.

Writes flow ``committer`` (a background thread batching commits) -> ``writer`` (one
commit: a new immutable shard via ``shards``, then a commit record via ``index``, folded
into the ``checkpoint`` when the writer closes) under ``lock``; ``recovery`` runs first
whenever a writer opens. ``reader`` serves codes by content hash (``hashindex``) without
a lock; ``fingerprint`` says which codes may be mixed; ``maintenance`` verifies, repairs
and compacts.
"""

from features.store.committer import CommitStats, Committer
from features.store.errors import StoreError, StoreFullError
from features.store.fingerprint import Fingerprint, FingerprintMismatch
from features.store.lock import LockError, StoreLock
from features.store.maintenance import compact, info, repair, verify
from features.store.reader import FeatureStore
from features.store.shards import SHARD_DIR, Failure, ShardRecord, SkipRecord, write_shard
from features.store.writer import StoreWriter

__all__ = [
    "SHARD_DIR",
    "CommitStats",
    "Committer",
    "Failure",
    "FeatureStore",
    "Fingerprint",
    "FingerprintMismatch",
    "LockError",
    "ShardRecord",
    "SkipRecord",
    "StoreError",
    "StoreFullError",
    "StoreLock",
    "StoreWriter",
    "compact",
    "info",
    "repair",
    "verify",
    "write_shard",
]
