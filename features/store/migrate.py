"""Adopt a store of the single-store layout (codes right under ``store/``) as a feature set's.

Before feature sets, ``store/`` held one store; now it holds one per set, ``store/<set>``.
Adoption is two renames (``store`` -> ``store.migrating`` -> ``store/<set>``), each atomic
and fsynced, and a run that dies between them finishes the move next time: no code is
recomputed and none is lost.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

from features.errors import UserError
from features.files import fsync_path
from features.store.checkpoint import INDEX_NAME
from features.store.index import read_index
from features.store.lock import LOCK_NAME, StoreLock
from features.store.shards import SHARD_DIR

__all__ = ["adopt_single_store"]


def _staging(root: Path) -> Path:
    return root.with_name(root.name + ".migrating")


def _owner(store: Path, layers: Mapping[str, tuple[str, str]]) -> str:
    """The feature set whose (backbone, layer identity) the store's fingerprint names."""
    fingerprint = read_index(store).fingerprint
    for name, identity in layers.items():
        if identity == (fingerprint.backbone, fingerprint.layer):
            return name
    raise UserError(
        f"{store} holds {fingerprint.backbone} {fingerprint.layer} codes in the single-store "
        f"layout, and no feature set in params.yaml is that layer: add it under features: "
        f"(e.g. vgg16_fc6: {{backbone: vgg16, layer: fc6}}) to adopt them, or move {store} away"
    )


def adopt_single_store(
    root: Path, layers: Mapping[str, tuple[str, str]], log: Callable[[str], None] = print
) -> str | None:
    """Move a single-layout store at ``root`` to ``root/<set>``; the set's name, or None.

    ``layers`` maps each feature set to its ``(backbone, Layer.identity)``, as fingerprints
    record them. A store whose codes fit no set is refused with a one-line instruction.
    """
    root, staging = Path(root), _staging(Path(root))
    if (root / INDEX_NAME).is_file():
        StoreLock(root / LOCK_NAME).check_free()
        name = _owner(root, layers)
        os.replace(root, staging)
        fsync_path(root.parent)
    elif staging.is_dir():
        name = _owner(staging, layers)
    elif (root / SHARD_DIR).is_dir():
        raise UserError(
            f"{root / SHARD_DIR} holds shards of the single-store layout with no index; move "
            f"that folder into {root}/<feature set>/ and rerun, or delete it"
        )
    else:
        return None
    root.mkdir(exist_ok=True)
    os.replace(staging, root / name)
    fsync_path(root)
    fsync_path(root.parent)
    log(f"store: adopted the single store at {root} as feature set {name} ({root / name})")
    return name
