"""What keeping NaN and inf out of the store costs, next to the forward pass it guards.

``python bench/finite_check_bench.py`` times on this machine's CPU, with random-weight
VGG16 (speed does not depend on the weights' values) and random uint8 pixels:

* the forward pass of one batch, as the runner builds it (``Encoder``: channels_last, the
  precision ``auto`` resolves to here, float16 codes), codes copied to host memory;
* the runner's check of that batch (``FiniteGuard`` on its codes, all finite): what every
  batch pays; an fp32 retry is paid only by the rare non-finite row;
* the writer's last-line check of one commit (``require_finite`` on ``commit_rows`` codes),
  shown per image next to the forward pass's cost per image.

The forward pass runs ``--repeats`` times after a warm-up, each check 200 times (the
writer's 20); medians and minima are reported, with the load average, since a shared
machine slows the long forward passes more than the short checks. The table is printed
and written to ``bench/results/finite_check_cpu.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere, like make bench does

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.common import cpu_header, elapsed_ms, markdown_table  # noqa: E402
from features.compute.backbones import BACKBONES, build_extractor  # noqa: E402
from features.compute.encoder import Encoder, resolve_precision  # noqa: E402
from features.compute.finite import FiniteGuard  # noqa: E402
from features.compute.prefetch import ReadyBatch  # noqa: E402
from features.data.preprocess import Preprocessing  # noqa: E402
from features.store.shards import require_finite  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "finite_check_cpu.json"
CHECK_REPEATS = 200
WRITER_REPEATS = 20


def _timed(run: Callable[[], object], repeats: int) -> dict[str, float]:
    """Median and minimum milliseconds of ``repeats`` calls of ``run``."""
    times = [elapsed_ms(run) for _ in range(repeats)]
    return {
        "median_ms": round(statistics.median(times), 4),
        "min_ms": round(min(times), 4),
        "repeats": repeats,
    }


def measure(batch: int, px: int, repeats: int, commit_rows: int) -> dict[str, dict]:
    device = torch.device("cpu")
    precision = resolve_precision("auto", device)
    extractor = build_extractor(BACKBONES["vgg16"], None, seed=0)
    encoder = Encoder(extractor, Preprocessing(resize=px, crop=px), device, precision, "float16")
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (batch, 3, px, px), dtype=torch.uint8, generator=generator)
    ready = ReadyBatch([f"{i:064x}" for i in range(batch)], pixels, [], batch)
    codes = encoder(pixels)  # warm-up: oneDNN picks its kernels
    guard = FiniteGuard(encoder)
    commit = np.resize(codes.numpy(), (commit_rows, codes.numpy().shape[1]))
    return {
        "forward_pass": {**_timed(lambda: encoder(pixels).numpy(), repeats), "rows": batch},
        "runner_check": {**_timed(lambda: guard(ready, codes), CHECK_REPEATS), "rows": batch},
        "writer_check": {
            **_timed(lambda: require_finite(commit, "bench"), WRITER_REPEATS),
            "rows": commit_rows,
        },
    }


def _shares(results: dict[str, dict]) -> dict[str, float]:
    """Each check's median per image over the forward pass's median per image."""
    forward = results["forward_pass"]["median_ms"] / results["forward_pass"]["rows"]
    return {
        name: results[name]["median_ms"] / results[name]["rows"] / forward
        for name in ("runner_check", "writer_check")
    }


def _table(results: dict[str, dict], shares: dict[str, float]) -> str:
    return markdown_table(
        "| measurement | rows | median ms | min ms | median ms per image | share of forward |",
        "|---|---:|---:|---:|---:|---:|",
        (
            (
                name,
                r["rows"],
                r["median_ms"],
                r["min_ms"],
                f"{r['median_ms'] / r['rows']:.4f}",
                f"{shares[name]:.2e}" if name in shares else "1",
            )
            for name, r in results.items()
        ),
    )


def main(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--px", type=int, default=224, help="input side (resize = crop)")
    parser.add_argument("--repeats", type=int, default=5, help="timed forward passes")
    parser.add_argument("--commit-rows", type=int, default=4096, help="rows a commit checks")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    results = measure(args.batch_size, args.px, args.repeats, args.commit_rows)
    shares = _shares(results)
    table = _table(results, shares)
    print(table)
    report = {
        **cpu_header("python bench/finite_check_bench.py", argv, load_before),
        "config": {
            "backbone": "vgg16",
            "weights": "random",
            "input_px": args.px,
            "batch_size": args.batch_size,
            "precision": resolve_precision("auto", torch.device("cpu")),
            "dtype": "float16",
            "commit_rows": args.commit_rows,
        },
        "measurements": results,
        "share_of_forward_pass": {name: float(f"{share:.3g}") for name, share in shares.items()},
        "table": table,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main(sys.argv[1:])
