"""The audit's neighbour searches at 10k, 30k and 100k rows of 4096-d codes on CPU, against
the exact brute-force search a user would write, and the growth to ImageNet-1k (1.28M).

* **codes**: :func:`classifiers.audit.neighbours.cosine_neighbours` (exact up to 20k rows,
  then PCA-256 + inverted lists) on generated codes with planted class structure
  (:mod:`bench.probe_data`), held in memory: this times the search, not store reads
  (``bench/scale_bench.py`` times those). Recall@1 against exact search is measured on 500
  sampled queries. The baseline is exact blocked matrix products over all 4096 dimensions
  (no n x n matrix either), timed on two 1,024-row query blocks and extrapolated.
* **signatures**: :func:`classifiers.audit.neighbours.hamming_pairs` over random 128-bit
  signatures with 1 % planted copies, at the fused rule's candidate radius
  (:data:`classifiers.audit.run.CANDIDATE_RADIUS`).

    python bench/audit_bench.py [--sizes 10000 30000 100000]

Writes ``bench/results/audit_cpu.json``.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from the repo root

from bench.common import cpu_header, markdown_table  # noqa: E402
from bench.probe_data import PlantedCodes  # noqa: E402
from classifiers.audit.neighbours import (  # noqa: E402
    CodeIndexSettings,
    cosine_neighbours,
    hamming_pairs,
)
from classifiers.audit.run import CANDIDATE_RADIUS  # noqa: E402
from features.files import write_json  # noqa: E402

IMAGENET = 1_281_167
QUERY_BLOCK = 1024
RECALL_QUERIES = 500


def _unit(block: np.ndarray) -> np.ndarray:
    block = block.astype(np.float32)
    return block / np.maximum(np.linalg.norm(block, axis=1, keepdims=True), 1e-12)


def _exact_top1(codes: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Each query row's exact nearest other row, by blocked products over the full codes."""
    best = np.full(len(queries), -np.inf, dtype=np.float32)
    found = np.zeros(len(queries), dtype=np.int64)
    q = _unit(codes[queries])
    for start in range(0, len(codes), 8192):
        sims = q @ _unit(codes[start : start + 8192]).T
        sims[queries[:, None] == np.arange(start, start + sims.shape[1])[None, :]] = -np.inf
        column = sims.argmax(axis=1)
        better = sims[np.arange(len(q)), column] > best
        best[better] = sims[np.arange(len(q)), column][better]
        found[better] = start + column[better]
    return found


def _baseline_seconds(codes: np.ndarray, k: int) -> float:
    """Exact k-NN for every row, extrapolated from two query blocks."""
    started = time.perf_counter()
    for block in range(2):
        q = _unit(codes[block * QUERY_BLOCK : (block + 1) * QUERY_BLOCK])
        for start in range(0, len(codes), 8192):
            sims = q @ _unit(codes[start : start + 8192]).T
            np.argpartition(-sims, k, axis=1)
    return (time.perf_counter() - started) / (2 * QUERY_BLOCK) * len(codes)


def _signatures(n: int, rng: np.random.Generator) -> np.ndarray:
    packed = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
    copies = rng.choice(n, n // 100, replace=False)  # 1 % planted near-copies
    flips = rng.integers(0, 256, size=(len(copies), 16), dtype=np.uint8) & 0b00010001
    packed[(copies + 1) % n] = packed[copies] ^ flips
    return packed


def measure(n: int) -> dict[str, object]:
    codes, _ = PlantedCodes(classes=1000).array(n)
    settings = CodeIndexSettings()
    started = time.perf_counter()
    neighbours = cosine_neighbours(lambda a, b: codes[a:b], n, codes.shape[1], settings)
    ours = time.perf_counter() - started
    queries = np.random.default_rng(1).choice(n, min(RECALL_QUERIES, n), replace=False)
    recall = float(np.mean(neighbours.indices[queries, 0] == _exact_top1(codes, queries)))
    baseline = _baseline_seconds(codes, settings.k)
    packed = _signatures(n, np.random.default_rng(2))
    started = time.perf_counter()
    pairs = hamming_pairs(packed, CANDIDATE_RADIUS)
    hamming = time.perf_counter() - started
    return {
        "rows": n,
        "exact": neighbours.exact,
        "codes_seconds": ours,
        "recall_at_1": recall,
        "exact_baseline_seconds_extrapolated": baseline,
        "speedup": baseline / ours,
        "hamming_seconds": hamming,
        "hamming_pairs": len(pairs),
    }


def _growth(results: list[dict], key: str) -> dict[str, float]:
    """The exponent between the two largest sizes, and 1.28M projected with it."""
    a, b = results[-2], results[-1]
    exponent = math.log(b[key] / a[key]) / math.log(b["rows"] / a["rows"])
    return {
        "exponent": exponent,
        "projected_1_28M_seconds": b[key] * (IMAGENET / b["rows"]) ** exponent,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 30_000, 100_000])
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/audit_cpu.json")
    args = parser.parse_args()
    load = os.getloadavg()
    results = []
    for n in args.sizes:
        results.append(measure(n))
        print(results[-1], flush=True)
    report = {
        **cpu_header("python bench/audit_bench.py", sys.argv[1:], load),
        "sizes": results,
        "growth": {
            "codes": _growth(results, "codes_seconds"),
            "exact_baseline": _growth(results, "exact_baseline_seconds_extrapolated"),
            "hamming": _growth(results, "hamming_seconds"),
        },
    }
    write_json(args.out, report)
    print(
        markdown_table(
            "| rows | codes k-NN s | exact | recall@1 | exact baseline s (est.) | speed-up "
            "| Hamming s |",
            "|---:|---:|---|---:|---:|---:|---:|",
            [
                (
                    f"{r['rows']:,}",
                    f"{r['codes_seconds']:.1f}",
                    r["exact"],
                    f"{r['recall_at_1']:.3f}",
                    f"{r['exact_baseline_seconds_extrapolated']:.0f}",
                    f"{r['speedup']:.1f}x",
                    f"{r['hamming_seconds']:.1f}",
                )
                for r in results
            ],
        )
    )
    print({key: value for key, value in report["growth"].items()})


if __name__ == "__main__":
    main()
