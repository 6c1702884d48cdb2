"""The linear-probe protocol on a GPU at ImageNet size: 1.28M train rows x 4096, ~100
classes, the 45-point C grid, codes read from a real store (issue 16's GPU goal: the
whole protocol, search and refit, in under 10 minutes).

The same protocol, data and child process as ``bench/probe_bench.py`` (which times it
against scikit-learn on a CPU), with the fit on ``--device``: where a split's codes fit
on the GPU they are read once onto it in the store's dtype, and every L-BFGS evaluation
runs from there. A smaller size runs first, so a failure costs seconds, not the lease.
The scikit-learn baselines are not run here: they are CPU programs, timed by
``probe_bench.py``. The store is written first, committed as extract commits it, its
rows generated on every core, and its time is reported apart from the protocol's.

    python bench/probe_gpu.py [--sizes 50000 1280000] [--device cuda]

Writes ``bench/results/probe_gpu.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from the repo root

import torch  # noqa: E402

from bench.common import markdown_table  # noqa: E402
from bench.extract.machine import machine_info  # noqa: E402
from bench.probe_bench import ours_in_child  # noqa: E402
from bench.probe_data import PlantedCodes, write_store  # noqa: E402
from bench.probe_reference import GRID  # noqa: E402
from features.files import write_json  # noqa: E402


def one_size(n: int, args: argparse.Namespace, codes: PlantedCodes, scratch: Path) -> dict:
    print(f"\n== {n:,} train rows x {codes.dim}, {codes.classes} classes", flush=True)
    folder = scratch / f"rows{n}"
    folder.mkdir()
    workers = os.cpu_count() or 1
    rows, write_s = write_store(folder / "store", codes, n, args.test_rows, workers)
    print(f"store written in {write_s:.1f} s ({workers} generating threads)", flush=True)
    ours = ours_in_child(folder / "store", rows, args.chunk_rows, folder, args.device)
    phases = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in ours["phases_s"].items())
    print(
        f"ours: {ours['wall_s']:.1f} s ({phases}), C {ours['chosen_C']:.3g}, "
        f"test {ours['test_accuracy']:.4f}, peak RSS {ours['peak_rss_mib']:.0f} MiB",
        flush=True,
    )
    shutil.rmtree(folder)
    return {"rows": n, "test_rows": args.test_rows, "store_write_s": write_s, "ours": ours}


def _row(result: dict[str, Any]) -> list[object]:
    ours = result["ours"]
    return [
        f"{result['rows']:,}",
        f"{result['store_write_s']:.0f} s",
        f"{ours['wall_s']:.0f} s",
        f"{ours['phases_s']['fit_one']:.0f} s",
        f"{ours['chosen_C']:.3g}",
        f"{ours['test_accuracy']:.4f}",
        f"{ours['peak_rss_mib']:.0f} MiB",
        f"{len(ours['probe']['C'])} of {ours['probe']['grid_points']}",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[50_000, 1_280_000])
    parser.add_argument("--test-rows", type=int, default=50_000)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--chunk-rows", type=int, default=32_768)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--scratch", type=Path, default=None, help="where the stores go")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/probe_gpu.json")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    codes = PlantedCodes(classes=args.classes)
    report: dict[str, Any] = {
        "command": " ".join(["python bench/probe_gpu.py", *sys.argv[1:]]),
        "machine": machine_info(torch.device(args.device)),
        "data": dataclasses.asdict(codes) | {"source": "generated (bench/probe_data.py)"},
        "grid": {"points": len(GRID), "low": GRID[0], "high": GRID[-1]},
        "tolerance": "1e-4 (scikit-learn's default), sweep and refit",
        "sizes": [],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="probe_gpu_", dir=args.scratch) as scratch:
        for n in args.sizes:
            report["sizes"].append(one_size(n, args, codes, Path(scratch)))
            report["total_s"] = time.perf_counter() - started
            write_json(args.out, report)  # each size as it lands
    header = (
        "| train rows | store write | protocol | of which L-BFGS | C | test acc "
        "| peak RSS | Cs fitted |"
    )
    print("\n" + markdown_table(header, "|---:" * 8 + "|", [_row(r) for r in report["sizes"]]))
    print(f"\nwrote {args.out}; total {report['total_s']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
