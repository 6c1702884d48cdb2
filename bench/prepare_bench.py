"""A ``prepare`` rerun over unchanged files, against re-hashing every file (the naive baseline).

Per size, distinct tiny PNGs (32x24, ~2.4 KB each) in ``c<k>/<i>.png``, their mtimes set
in the past as an unpacked archive leaves them (a file written within 2 s of a scan is
never trusted, git's racy rule). Each run is the real stage (:func:`pipeline.prepare.main`)
in a fresh process, with its phases timed and its peak RSS (``rerun`` and ``rehash_all``
twice, the faster kept, as the 2-core machine is shared):

* **first**: no cache: every file hashed and decoded;
* **rerun**: the first run's cache: each unchanged file is stat'ed, never read;
* **rehash_all**: the same cache with its file stats dropped, so every file is hashed again
  (verdicts still cached): what a rerun did before the stat rule, the naive baseline;
* **cache_formats**: the cache's load and save as SQLite against the same entries through
  ``write_json`` and ``json.loads`` (the JSON format it replaced).

The page cache is warm (files are read right after they are written), which flatters
the baseline: on a cold disk each re-hash is a read from the disk too.

    python bench/prepare_bench.py [--sizes 10000 100000]

Writes ``bench/results/prepare_cpu.json``; the generated files are deleted afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from the repo root

from bench.rss import peak_rss_mib  # noqa: E402
from bench.timed import timed  # noqa: E402

OLD_NS = 1_600_000_000 * 10**9  # 2020-09-13: long before any scan
CLASSES = 100
RUNS = ("first", "rerun", "rehash_all", "cache_formats")
REPEATS = 2  # reruns are timed twice, the faster kept: the machine is shared
PHASES = (
    "load_scan_cache",
    "scan_dataset",
    "build_manifest",
    "write_manifest",
    "write_files_csv",
    "save_scan_cache",
)


def generate(root: Path, n: int) -> float:
    """``n`` distinct PNGs under ``root``; seconds taken."""
    from PIL import Image

    started = time.perf_counter()
    rng = np.random.default_rng(0)
    for k in range(CLASSES):
        (root / f"c{k}").mkdir(parents=True)
    for i in range(n):
        path = root / f"c{i % CLASSES}" / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(path)
        os.utime(path, ns=(OLD_NS, OLD_NS))
    return time.perf_counter() - started


def _stage(name: str, work: Path) -> dict[str, Any]:
    """One ``prepare`` run, its phases timed and its reads counted."""
    from features.data import validate
    from pipeline import prepare

    phases: dict[str, float] = {}
    hashed = []
    real_hash = validate.file_sha256
    validate.file_sha256 = lambda path: hashed.append(1) or real_hash(path)
    if name == "rehash_all":
        load = prepare.load_scan_cache

        def without_stats(path: Path):
            cache = load(path)
            cache.files.clear()
            return cache

        prepare.load_scan_cache = without_stats
    out = work / "out"
    args = ["--data", str(work / "data"), "--params", str(ROOT / "params.yaml")]
    for option in ("manifest", "files", "report", "cache"):
        args += [f"--{option}", str(out / option)]
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), timed(prepare, PHASES, phases):
        prepare.main(args)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "hashed": len(hashed), "phases": phases}


def _cache_formats(work: Path) -> dict[str, Any]:
    """The saved cache's load and save as SQLite, and the same entries as indented JSON."""
    from features.data.scan import scan_dataset
    from features.data.scan_cache_file import load_scan_cache, save_scan_cache
    from features.files import write_json
    from pipeline.params import load_params

    path = work / "out" / "cache"
    started = time.perf_counter()
    cache = load_scan_cache(path)
    load_s = time.perf_counter() - started
    scan_dataset(work / "data", load_params(ROOT / "params.yaml").data.limits, cache)
    started = time.perf_counter()
    save_scan_cache(work / "copy.sqlite", cache)
    save_s = time.perf_counter() - started
    as_json = {"files": cache.used_files(), "verdicts": cache.used_verdicts()}
    started = time.perf_counter()
    write_json(work / "copy.json", as_json)
    json_save_s = time.perf_counter() - started
    started = time.perf_counter()
    json.loads((work / "copy.json").read_text())
    json_load_s = time.perf_counter() - started
    return {
        "files": len(as_json["files"]),
        "verdicts": len(as_json["verdicts"]),
        "sqlite": {"load_s": load_s, "save_s": save_s, "bytes": path.stat().st_size},
        "json": {
            "load_s": json_load_s,
            "save_s": json_save_s,
            "bytes": (work / "copy.json").stat().st_size,
        },
    }


def step(name: str, work: Path) -> dict[str, Any]:
    result = _cache_formats(work) if name == "cache_formats" else _stage(name, work)
    return result | {"peak_rss_mib": peak_rss_mib()}


def one_size(n: int, scratch: Path) -> dict[str, Any]:
    work = scratch / f"files{n}"
    print(f"\n== {n:,} files", flush=True)
    result: dict[str, Any] = {"files": n, "generate_s": generate(work / "data", n)}
    for name in RUNS:
        command = [sys.executable, __file__, "--step", name, "--root", str(work)]
        tries = []
        for _ in range(REPEATS if name in ("rerun", "rehash_all") else 1):
            done = subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT)
            tries.append(json.loads(done.stdout.strip().splitlines()[-1]))
        result[name] = min(tries, key=lambda run: run.get("seconds", 0.0))
        result[name]["tries_s"] = [run.get("seconds") for run in tries]
        print(f"{name}: {json.dumps(result[name])}", flush=True)
    result["rerun_speedup_vs_rehash_all"] = result["rehash_all"]["seconds"] / max(
        result["rerun"]["seconds"], 1e-9
    )
    result["rerun_us_per_file"] = 1e6 * result["rerun"]["seconds"] / n
    return result


def _table(sizes: list[dict[str, Any]]) -> str:
    from bench.common import markdown_table

    rows = [
        (
            f"{s['files']:,}",
            *(f"{s[run]['seconds']:.2f} s ({s[run]['hashed']:,} hashed)" for run in RUNS[:3]),
            f"{s['rerun_speedup_vs_rehash_all']:.1f}x",
            "{:.2f} / {:.2f} s".format(
                s["cache_formats"]["sqlite"]["save_s"], s["cache_formats"]["json"]["save_s"]
            ),
        )
        for s in sizes
    ]
    header = (
        "| files | first run | rerun | rehash all (baseline) | speedup | cache save SQLite / JSON |"
    )
    return markdown_table(header, "|---:|---:|---:|---:|---:|---:|", rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/prepare_cpu.json")
    parser.add_argument("--step", choices=RUNS)
    parser.add_argument("--root", type=Path)
    args = parser.parse_args(argv)
    if args.step:
        print(json.dumps(step(args.step, args.root)))
        return 0
    from bench.common import cpu_header

    report = cpu_header("python bench/prepare_bench.py", sys.argv[1:], os.getloadavg())
    report["cache"] = "warm: files are read right after they are written"
    with tempfile.TemporaryDirectory(prefix="prepare_bench_") as scratch:
        report["sizes"] = [one_size(n, Path(scratch)) for n in args.sizes]
    if len(report["sizes"]) > 1:
        small, large = report["sizes"][0], report["sizes"][-1]
        report["rerun_growth"] = {
            "files_ratio": large["files"] / small["files"],
            "seconds_ratio": large["rerun"]["seconds"] / small["rerun"]["seconds"],
        }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print("\n" + _table(report["sizes"]))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
