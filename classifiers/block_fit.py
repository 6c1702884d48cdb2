"""Fitting the classifier-block head: its own val split, its initial weights, and the proof
that the stored maps and those weights line up before any training.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from classifiers.block import BlockInit, ClassifierBlock
from classifiers.data import SplitData, SplitPlan, carve_val, load_split
from classifiers.fit import FitResult
from classifiers.heads import BlockParams, build_head
from features.data.manifest import ManifestRow
from features.errors import UserError
from features.store import FeatureStore

__all__ = [
    "ALIGNMENT_TOLERANCE",
    "check_alignment",
    "fit_block",
    "fit_block_on_store",
]

# fc6 recomputed from float16 maps against fc6 stored as float16: both roundings (~5e-4
# relative each) summed over 25,088 inputs stay well inside 1% of the codes' scale.
ALIGNMENT_TOLERANCE = 1e-2


def check_alignment(init: BlockInit, maps: np.ndarray, fc6: np.ndarray) -> float:
    """fc6-ReLU of ``init`` on stored maps against the stored fc6 codes of the same images.

    Returns the largest difference relative to the codes' scale; raises :class:`UserError`
    past :data:`ALIGNMENT_TOLERANCE`, since a block started from weights other than those
    that produced the maps would be fine-tuning something else.
    """
    block = ClassifierBlock(init, n_classes=1, dropout=0.0).eval()
    with torch.no_grad():
        ours = block.fc6_codes(torch.from_numpy(maps.astype(np.float32))).numpy()
    stored = fc6.astype(np.float32)
    scale = max(float(np.abs(stored).max()), np.finfo(np.float32).tiny)
    error = float(np.abs(ours - stored).max()) / scale
    if not error <= ALIGNMENT_TOLERANCE:
        raise UserError(
            f"the pool5 maps and the block's weights do not line up: fc6 recomputed from the "
            f"maps differs from the stored fc6 codes by {error:.2%} of their scale (allowed "
            f"{ALIGNMENT_TOLERANCE:.0%}); were both stores extracted with the same extract: "
            f"settings?"
        )
    return error


def fit_block(
    params: BlockParams,
    train: SplitData,
    val: SplitData,
    init: BlockInit,
    log: Callable[[str], None] = print,
) -> FitResult:
    """Fit on ``train``, early-stopping on ``val``; the pipeline as any head's."""
    started = time.perf_counter()
    model = build_head("classifier_block", params)
    model.fit(train.X, train.y, clf__init=init, clf__X_val=val.X, clf__y_val=val.y, clf__log=log)
    return FitResult(model, params, time.perf_counter() - started, selected_on="val")


def fit_block_on_store(
    params: BlockParams,
    rows: Sequence[ManifestRow],
    store: FeatureStore,
    plan: SplitPlan,
    init: BlockInit,
    fc6_store: FeatureStore | None,
    log: Callable[[str], None] = print,
) -> tuple[FitResult, int]:
    """Load maps, choose the val split, check the alignment, fit; and the train size.

    Val is the dataset's own when it is free to choose with (``plan.select``), otherwise a
    content-hash carve of train. The alignment is checked on up to 32 train images that
    ``fc6_store`` (the same backbone's fc6 set) also holds, when there is one.
    """
    train = load_split(rows, "train", store)
    if plan.select:
        val = load_split(rows, plan.select, store)
    else:
        train, val = carve_val(train, params.val_fraction)
    if fc6_store is None:
        log("alignment: not checked, no fc6 feature set of this backbone is stored")
    else:
        held = fc6_store.contains(train.hashes)
        sample = [sha for sha, ok in zip(train.hashes, held, strict=True) if ok][:32]
        error = check_alignment(init, store.get(sample), fc6_store.get(sample))
        log(
            f"alignment: fc6 recomputed from {len(sample)} stored maps equals the stored fc6 "
            f"codes within {error:.1e} of their scale"
        )
    return fit_block(params, train, val, init, log), len(train.y)
