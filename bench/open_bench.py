"""Opening a store for reading at 100k and 1.28M rows: this code against the code of
``--baseline`` (a git revision, by default ``main``), on the same stores in the same run.

A store's open cost is its index and hashes, not its codes, so the stores hold 8-wide
float16 codes in shards of 4,096 rows (313 shards at 1,281,167 rows, as ImageNet's at
extract's commit cadence), written by the baseline's :class:`StoreWriter` (format 1,
which this code reads as it is). Each step runs in a fresh interpreter and reports its
seconds and peak RSS:

* **reader_only**: import :mod:`features.store`, open a :class:`FeatureStore`, ``len``;
* **open**: the :class:`FeatureStore` constructor alone;
* **first_get**: open, then ``get`` of 10,000 random hashes (the first lookup, which now
  reads the hashes);
* **verify_quick**: ``verify(full=False)`` from a fresh interpreter.

    python bench/open_bench.py [--sizes 100000 1281167] [--baseline main]

Writes ``bench/results/open_cpu.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script; --code goes in front of it

from bench.rss import peak_rss_mib  # noqa: E402

DIM = 8
COMMIT_ROWS = 4096
LOOKUPS = 10_000
STEPS = ("reader_only", "open", "first_get", "verify_quick")


def _hashes(indices) -> list[str]:
    return [hashlib.sha256(f"open:{i}".encode()).hexdigest() for i in indices]


def build(root: Path, rows: int) -> None:
    """The store, written by whichever ``features`` is first on ``sys.path``."""
    import numpy as np

    from features.store import StoreWriter
    from features.store.fingerprint import Fingerprint

    fingerprint = Fingerprint("open", "codes", DIM, "generated", "{}", "-", "float16", "-", "-")
    hashes = _hashes(range(rows))
    with StoreWriter(root, fingerprint, log=lambda _: None) as writer:
        for start in range(0, rows, COMMIT_ROWS):
            block = hashes[start : start + COMMIT_ROWS]
            writer.commit(block, np.full((len(block), DIM), start % 2048, dtype=np.float16))


def step(name: str, root: Path) -> dict[str, Any]:
    """One measurement; the caller put the code under test first on ``sys.path``."""
    began = time.perf_counter()
    from features.store import FeatureStore

    if name == "verify_quick":
        from features.store.maintenance import verify

        ok = verify(root, full=False).ok
        return {"seconds": time.perf_counter() - began, "ok": ok}
    opening = time.perf_counter()
    store = FeatureStore(root)
    opened = time.perf_counter()
    result: dict[str, Any] = {"rows": len(store)}
    if name == "reader_only":
        result["seconds"] = time.perf_counter() - began
        result["imported"] = sorted(m for m in ("torch", "sklearn", "dask") if m in sys.modules)
    elif name == "open":
        result["seconds"] = opened - opening
    elif name == "first_get":
        import numpy as np

        picked = _hashes(np.random.default_rng(0).choice(len(store), LOOKUPS, replace=False))
        got = store.get(picked)
        result["seconds"] = time.perf_counter() - opening
        result["got"] = len(got)
    return result


def _run(code: Path, name: str, root: Path) -> dict[str, Any]:
    command = [sys.executable, __file__, "--code", str(code), name, "--root", str(root)]
    done = subprocess.run(command, check=True, capture_output=True, text=True, cwd=code)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _export(revision: str, folder: Path) -> str:
    """The baseline's ``features`` package under ``folder``; its full commit hash."""
    full = subprocess.run(
        ["git", "rev-parse", revision], check=True, capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    archive = subprocess.run(
        ["git", "archive", full, "features"], check=True, capture_output=True, cwd=ROOT
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return full


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", nargs="?", choices=(*STEPS, "build"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_281_167])
    parser.add_argument("--baseline", default="main")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/open_cpu.json")
    parser.add_argument("--code", type=Path, default=ROOT)
    parser.add_argument("--root", type=Path)
    parser.add_argument("--rows", type=int)
    args = parser.parse_args(argv)
    if args.step:
        sys.path.insert(0, str(args.code))
        if args.step == "build":
            build(args.root, args.rows)
            return 0
        print(json.dumps(step(args.step, args.root) | {"peak_rss_mib": peak_rss_mib()}))
        return 0
    report: dict[str, Any] = {
        "command": " ".join(["python bench/open_bench.py", *(argv or sys.argv[1:])]),
        "load_before": os.getloadavg(),
        "dim": DIM,
        "rows_per_shard": COMMIT_ROWS,
        "sizes": [],
    }
    with tempfile.TemporaryDirectory(prefix="open_bench_", dir=ROOT.parent) as scratch:
        baseline = Path(scratch) / "baseline"
        baseline.mkdir()
        report["baseline"] = _export(args.baseline, baseline)
        for rows in args.sizes:
            store = Path(scratch) / f"rows{rows}"
            build_command = [sys.executable, __file__, "build", "--code", str(baseline)]
            subprocess.run([*build_command, "--root", str(store), "--rows", str(rows)], check=True)
            entry: dict[str, Any] = {"rows": rows}
            for label, code in (("baseline", baseline), ("new", ROOT)):
                entry[label] = {name: _run(code, name, store) for name in STEPS}
                print(rows, label, json.dumps(entry[label]), flush=True)
            report["sizes"].append(entry)
    report["load_after"] = os.getloadavg()
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print("\n| rows | step | baseline | new |\n|---:|---|---:|---:|")
    for entry in report["sizes"]:
        for name in STEPS:
            old, new = entry["baseline"][name], entry["new"][name]
            print(
                f"| {entry['rows']:,} | {name} | {old['seconds']:.3f} s, "
                f"{old['peak_rss_mib']:.0f} MiB | {new['seconds']:.3f} s, "
                f"{new['peak_rss_mib']:.0f} MiB |"
            )
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
