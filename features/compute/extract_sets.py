"""Extract every feature set: one forward pass per backbone, one store per set.

``<store root>/<set>`` is each set's store. A store of the single-store layout found at
the root is adopted first (:func:`features.store.migrate.adopt_single_store`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from features.compute.config import ExtractConfig, ExtractReport
from features.compute.distributed import extract_with_dask
from features.compute.extract import extract_codes
from features.compute.feature_sets import FeatureSet, by_backbone
from features.compute.loader import ImageRef
from features.data.images import ImageLimits
from features.store.migrate import adopt_single_store

__all__ = ["extract_feature_sets"]


def _sizes(refs: Sequence[ImageRef], sets: Mapping[str, FeatureSet], dtype: str) -> list[str]:
    """What each set's store takes for these images, said before anything is computed: a
    map set is 49 KB an image, ~180 MB for the flowers and ~63 GB for ImageNet-1k."""
    images = len({ref.sha256 for ref in refs})
    itemsize = np.dtype(dtype).itemsize
    return [
        f"extract: {name}: {s.spec.dim:,} x {dtype} = {s.spec.dim * itemsize / 1e3:,.1f} KB an "
        f"image, about {s.spec.dim * itemsize * images / 1e6:,.1f} MB for {images:,} images"
        for name, s in sets.items()
    ]


def extract_feature_sets(
    refs: Sequence[ImageRef],
    root: Path,
    sets: Mapping[str, FeatureSet],
    config: ExtractConfig,
    limits: ImageLimits,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, ExtractReport]:
    """Each backbone's report, after computing what each set's store lacks."""
    root = Path(root)
    adopt_single_store(root, {name: (s.backbone, s.spec.identity) for name, s in sets.items()}, log)
    for line in _sizes(refs, sets, config.dtype):
        log(line)
    run = extract_with_dask if config.scheduler == "dask" else extract_codes
    reports = {}
    for backbone, group in by_backbone(dict(sets)).items():
        stores = {feature_set.layer: root / name for name, feature_set in group.items()}
        reports[backbone] = run(
            refs, stores, replace(config, backbone=backbone), limits, progress=progress, log=log
        )
    return reports
