"""One memory measurement of ``bench/memory_bench.py``, run alone in a fresh interpreter.

The parent starts ``python bench/memory_bench.py --child KIND --work DIR --n N``; the child
runs :data:`MEASUREMENTS` [KIND] and prints one JSON line with its peak RSS.
"""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path

import h5py
import numpy as np

from features.compute.config import ExtractConfig
from features.data.images import ImageLimits
from features.data.preprocess import Preprocessing

EXTRACT_SIZES = (100, 1000)
READ_SIZES = (2_000, 20_000)
READ_CHUNK_ROWS = 1024
COMMIT_ROWS = 64  # the writer buffers at most this many codes: the bound on its memory
CONFIG = ExtractConfig(
    weights="random",
    device="cpu",
    precision="fp32",
    batch_size=16,
    num_workers=0,
    commit_rows=COMMIT_ROWS,
    commit_seconds=3600.0,
    preprocessing=Preprocessing(resize=32, crop=32),
)
LIMITS = ImageLimits()


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _current_mib() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _refs(path: Path, count: int) -> list:
    from features.compute.loader import ImageRef

    return [ImageRef(sha, Path(p)) for sha, p in json.loads(path.read_text())[:count]]


def _measure_store_extract(work: Path, count: int) -> dict[str, float]:
    from features.compute.extract import extract_codes

    refs = _refs(work / "refs.json", count)
    report = extract_codes(refs, work / f"store-{count}", CONFIG, LIMITS, progress=False)
    assert report.computed == count, report.summary()
    return {"images_per_second": round(report.images_per_second, 1)}


def _measure_naive_extract(work: Path, count: int) -> dict[str, float]:
    """What a notebook does: every image in memory, every code in a list, one file at the end."""
    import torch

    from features.compute.backbones import BACKBONES, build_extractor
    from features.data.images import decode_rgb
    from features.data.preprocess import resize_crop, to_uint8_chw

    refs = _refs(work / "refs.json", count)
    started = time.perf_counter()
    model = build_extractor(BACKBONES["vgg16"], None, CONFIG.seed)
    mean = torch.tensor(CONFIG.preprocessing.mean).view(3, 1, 1)
    std = torch.tensor(CONFIG.preprocessing.std).view(3, 1, 1)
    images = [
        (
            to_uint8_chw(
                resize_crop(decode_rgb(ref.path.read_bytes(), LIMITS), CONFIG.preprocessing)
            ).float()
            / 255
            - mean
        )
        / std
        for ref in refs
    ]
    batch = torch.stack(images)
    codes = []
    with torch.inference_mode():
        for start in range(0, len(batch), CONFIG.batch_size):
            codes.append(model(batch[start : start + CONFIG.batch_size])["codes"].numpy())
    everything = np.concatenate(codes)
    with h5py.File(work / f"naive-{count}.h5", "w") as handle:
        handle["codes"] = everything
        handle["hashes"] = np.array([ref.sha256 for ref in refs], dtype="S64")
    return {"images_per_second": round(count / (time.perf_counter() - started), 1)}


def _measure_read_chunks(work: Path, count: int) -> dict[str, float]:
    from features.store import FeatureStore

    total = np.zeros(4096, dtype=np.float64)
    with FeatureStore(work / f"synthetic-{count}") as reader:
        for _, block in reader.iter_chunks(reader.hashes, chunk_rows=READ_CHUNK_ROWS):
            total += block.sum(axis=0, dtype=np.float64)
    return {"checksum": float(total.sum())}


def _measure_read_full(work: Path, count: int) -> dict[str, float]:
    from features.store import FeatureStore

    with FeatureStore(work / f"synthetic-{count}") as reader:
        codes = reader.get(reader.hashes)
    return {"checksum": float(codes.sum(axis=0, dtype=np.float64).sum())}


MEASUREMENTS = {
    "store_extract": _measure_store_extract,
    "naive_extract": _measure_naive_extract,
    "read_chunks": _measure_read_chunks,
    "read_full": _measure_read_full,
}


def child(kind: str, work: Path, count: int) -> None:
    """One measurement in this fresh process; prints a JSON line with its peak RSS."""
    baseline = _current_mib()
    started = time.perf_counter()
    extra = MEASUREMENTS[kind](work, count)
    print(
        json.dumps(
            {
                "kind": kind,
                "n": count,
                "peak_rss_mib": round(_peak_mib(), 1),
                "rss_at_start_mib": round(baseline, 1),
                "seconds": round(time.perf_counter() - started, 1),
                **extra,
            }
        )
    )
