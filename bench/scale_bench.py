"""The store's storage and bookkeeping at 10k, 100k and ImageNet-1k size (1,281,167 rows x
4096 float16, ~10.5 GB), each step in a fresh process with its peak RSS.

The store is written through the real :class:`StoreWriter` at extract's commit cadence
(4,096 rows a commit), with codes generated instead of computed: this measures storage,
not the network. Each row is a fixed random block's row with its own index in columns 0 and 1,
so rows are distinct and generating them costs nothing. Measured per size:

* **write**: MB/s against ``dd`` (fdatasync) to the same disk, and each commit's time
  for the first and the last ten commits (a commit must not slow as shards accumulate);
* **reader-only process**: seconds and RSS to import :mod:`features.store` and open it;
* **open** of :class:`FeatureStore` and of :class:`StoreWriter`;
* **manifest**: :func:`read_manifest` of as many rows, and the pending set of a manifest
  grown by 1 % (read it, ask the store which hashes it lacks);
* **streaming**: ``iter_chunks`` in store order; a shuffled pass's reads alone
  (``shuffled_read``, comparable with it); a whole shuffled epoch as a head gets it
  (:func:`classifiers.epochs.iter_split`: manifest, locating, float32 chunks); and the
  row-by-row shuffle it replaced (the naive baseline, timed on its first chunks and
  extrapolated to an epoch);
* ``get`` of 10,000 random hashes; ``to_dask().sum()``;
* ``verify`` quick and full;
* ``compact`` to 16,384-row shards, which rewrites every shard of the store (its commits
  are 4,096 rows), reading and writing it whole.

    python bench/scale_bench.py [--sizes 10000 100000 1281167]

Writes ``bench/results/scale_cpu.json``; the scratch stores are deleted afterwards.
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

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from the repo root

from bench.rss import peak_rss_mib  # noqa: E402

DIM = 4096
COMMIT_ROWS = 4096
CHUNK_ROWS = 8192
BASELINE_CHUNKS = 3  # the row-shuffle baseline is timed on this many chunks


def _hashes(n: int, start: int = 0) -> list[str]:
    return [hashlib.sha256(f"scale:{i}".encode()).hexdigest() for i in range(start, start + n)]


def _drain(chunks) -> dict[str, Any]:
    """Read every chunk; the number of rows."""
    return {"rows_read": sum(len(chunk[1]) for chunk in chunks)}


def write(root: Path, n: int) -> dict[str, Any]:
    """The store and its manifest; write rate and per-commit seconds."""
    from features.data.manifest import ManifestRow, write_manifest
    from features.store import StoreWriter
    from features.store.fingerprint import Fingerprint

    fingerprint = Fingerprint("scale", "codes", DIM, "generated", "{}", "-", "float16", "-", "-")
    block = np.random.default_rng(0).random((COMMIT_ROWS, DIM), dtype=np.float32)
    block = block.astype(np.float16)
    hashes = _hashes(n)
    commits = []
    started = time.perf_counter()
    with StoreWriter(root / "store", fingerprint, log=lambda _: None) as writer:
        for start in range(0, n, COMMIT_ROWS):
            rows = min(COMMIT_ROWS, n - start)
            codes = block[:rows].copy()
            index = np.arange(start, start + rows)
            codes[:, 0], codes[:, 1] = index % 2048, index // 2048  # exact in float16
            began = time.perf_counter()
            writer.commit(hashes[start : start + rows], codes)
            commits.append(time.perf_counter() - began)
    seconds = time.perf_counter() - started
    rows = [
        ManifestRow(f"c{i % 1000}/{i}.jpg", h, f"c{i % 1000}", "train")
        for i, h in enumerate(hashes)
    ]
    write_manifest(root / "manifest.csv", rows)
    return {
        "seconds": seconds,
        "MB_per_s": n * DIM * 2 / seconds / 1e6,
        "commits": len(commits),
        "first_10_commits_ms": 1000 * float(np.mean(commits[:10])),
        "last_10_commits_ms": 1000 * float(np.mean(commits[-10:])),
    }


def dd_rate(folder: Path, megabytes: int = 1024) -> float:
    """MB/s of ``dd`` writing ``megabytes`` to ``folder``'s disk, synced."""
    target = folder / "dd.bin"
    command = ["dd", "if=/dev/zero", f"of={target}", "bs=16M", f"count={megabytes // 16}"]
    started = time.perf_counter()
    subprocess.run([*command, "conv=fdatasync"], check=True, capture_output=True)
    rate = megabytes * 2**20 / (time.perf_counter() - started) / 1e6
    target.unlink()
    return rate


def _timed(run) -> dict[str, Any]:
    started = time.perf_counter()
    extra = run() or {}
    return {"seconds": time.perf_counter() - started, **extra}


def step(name: str, root: Path) -> dict[str, Any]:
    """One measurement, run in a fresh process (``--step``)."""
    began = time.perf_counter()
    from features.store import FeatureStore

    if name == "reader_only":
        opened = FeatureStore(root / "store")
        modules = sorted(m for m in ("torch", "sklearn", "dask") if m in sys.modules)
        result = {"seconds": time.perf_counter() - began, "imported": modules, "rows": len(opened)}
        return result | {"peak_rss_mib": peak_rss_mib()}
    if name == "open":  # before anything reads the hashes
        from features.store import StoreWriter

        result = _timed(lambda: FeatureStore(root / "store").close())
        with FeatureStore(root / "store") as opened:
            fingerprint = opened.fingerprint

        def writer_open() -> None:
            with StoreWriter(root / "store", fingerprint, log=lambda _: None):
                pass

        result["writer_open_s"] = _timed(writer_open)["seconds"]
        return result | {"peak_rss_mib": peak_rss_mib()}
    if name == "compact":
        from features.store.maintenance import compact

        before, after = compact(root / "store", log=lambda _: None)
        seconds = time.perf_counter() - began
        return {"seconds": seconds, "shards": [before, after], "peak_rss_mib": peak_rss_mib()}
    store = FeatureStore(root / "store")
    hashes = store.hashes
    rows = len(hashes)
    nbytes = rows * DIM * 2
    if name == "manifest":
        from features.data.manifest import read_manifest

        result = _timed(lambda: {"rows": len(read_manifest(root / "manifest.csv"))})
    elif name == "pending_1pct":
        import features.data.manifest  # noqa: F401  (an extract run has imported it)

        result = _timed(lambda: _pending(root, store))
    elif name == "store_order":
        result = _timed(lambda: _drain(store.iter_chunks(hashes, CHUNK_ROWS)))
        result = {"seconds": result["seconds"], "MB_per_s": nbytes / result["seconds"] / 1e6}
    elif name == "shuffled_read":
        result = _shuffled_read(root, store)
    elif name == "shuffled":
        import classifiers.epochs  # noqa: F401  (torch: imported before the clock starts)

        result = _timed(lambda: _drain(_epoch(root, store)))
        result = {"seconds": result["seconds"], "MB_per_s": nbytes / result["seconds"] / 1e6}
    elif name == "row_shuffle_baseline":
        result = _row_shuffle(store, hashes)
    elif name == "get_10k":
        picked = list(np.random.default_rng(1).choice(hashes, 10_000, replace=False))
        store.get(picked[:100])
        result = _timed(lambda: {"rows": len(store.get(picked))})
    elif name == "to_dask_sum":
        result = _timed(lambda: {"sum": float(store.to_dask(CHUNK_ROWS).sum(dtype="f8").compute())})
    elif name in ("verify_quick", "verify_full"):
        from features.store.maintenance import verify

        report = verify(root / "store", full=name == "verify_full")
        result = {"seconds": time.perf_counter() - began, "ok": report.ok}
    else:
        raise SystemExit(f"unknown step {name}")
    return result | {"peak_rss_mib": peak_rss_mib()}


def _pending(root: Path, store) -> dict[str, Any]:
    """What an extract rerun must compute for a manifest grown by 1 %: read it, then ask
    the store which hashes it lacks."""
    from features.data.manifest import read_manifest

    wanted = [row.sha256 for row in read_manifest(root / "manifest.csv")]
    grown = wanted + _hashes(len(wanted) // 100, start=len(wanted))
    return {"pending": int((~store.contains(grown)).sum())}


def _shuffled_read(root: Path, store) -> dict[str, Any]:
    """A shuffled pass's reads alone (:func:`classifiers.epochs.pass_order`, then
    ``read_rows`` per chunk), comparable with ``store_order``; locating the split is
    timed apart."""
    from classifiers.data import split_rows
    from classifiers.epochs import StoredSplit, pass_order
    from features.data.manifest import read_manifest

    rows = read_manifest(root / "manifest.csv")
    started = time.perf_counter()
    located = StoredSplit.locate(split_rows(rows, "train", store), store)
    locate_s = time.perf_counter() - started
    started = time.perf_counter()
    for indices in pass_order(located, CHUNK_ROWS, 0):
        store.read_rows(located.positions[np.sort(indices)])
    seconds = time.perf_counter() - started
    nbytes = len(located.positions) * DIM * 2
    return {"seconds": seconds, "MB_per_s": nbytes / seconds / 1e6, "locate_s": locate_s}


def _epoch(root: Path, store):
    from classifiers.epochs import iter_split
    from features.data.manifest import read_manifest

    yield from iter_split(read_manifest(root / "manifest.csv"), "train", store, CHUNK_ROWS, 0)


def _row_shuffle(store, hashes: list[str]) -> dict[str, Any]:
    """The shuffle ``iter_split`` used before: a permutation of rows, ``get`` per chunk."""
    order = np.random.default_rng(0).permutation(len(hashes))
    chunks = -(-len(hashes) // CHUNK_ROWS)
    timed = min(BASELINE_CHUNKS, chunks)
    started = time.perf_counter()
    for start in range(0, timed * CHUNK_ROWS, CHUNK_ROWS):
        store.get([hashes[i] for i in order[start : start + CHUNK_ROWS]]).astype(np.float32)
    per_chunk = (time.perf_counter() - started) / timed
    seconds = per_chunk * chunks
    return {
        "seconds": seconds,
        "MB_per_s": len(hashes) * DIM * 2 / seconds / 1e6,
        "extrapolated_from_chunks": timed,
        "chunks": chunks,
    }


STEPS = (
    "reader_only",
    "open",
    "manifest",
    "pending_1pct",
    "store_order",
    "shuffled_read",
    "shuffled",
    "row_shuffle_baseline",
    "get_10k",
    "to_dask_sum",
    "verify_quick",
    "verify_full",
    "compact",  # last: it rewrites the store
)


def one_size(n: int, scratch: Path) -> dict[str, Any]:
    folder = scratch / f"rows{n}"
    folder.mkdir()
    print(f"\n== {n:,} rows x {DIM} float16 ({n * DIM * 2 / 1e9:.2f} GB)", flush=True)
    result: dict[str, Any] = {"rows": n, "write": write(folder, n)}
    print(f"write: {result['write']}", flush=True)
    for name in STEPS:
        command = [sys.executable, __file__, "--step", name, "--root", str(folder)]
        done = subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT)
        result[name] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{name}: {result[name]}", flush=True)
    for path in sorted(folder.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    return result


def _table(sizes: list[dict[str, Any]]) -> str:
    def cell(entry: dict[str, Any]) -> str:
        rate = f" ({entry['MB_per_s']:.0f} MB/s)" if "MB_per_s" in entry else ""
        return f"{entry['seconds']:.2f} s{rate}, {entry.get('peak_rss_mib', 0):.0f} MiB"

    header = "| step | " + " | ".join(f"{s['rows']:,} rows" for s in sizes) + " |"
    lines = [header, "|---" + "|---:" * len(sizes) + "|"]
    lines.append("| write | " + " | ".join(cell(s["write"]) for s in sizes) + " |")
    lines.append(
        "| commit, first 10 / last 10 | "
        + " | ".join(
            f"{s['write']['first_10_commits_ms']:.0f} / {s['write']['last_10_commits_ms']:.0f} ms"
            for s in sizes
        )
        + " |"
    )
    for name in STEPS:
        lines.append(f"| {name} | " + " | ".join(cell(s[name]) for s in sizes) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_281_167])
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/scale_cpu.json")
    parser.add_argument("--step", choices=STEPS)
    parser.add_argument("--root", type=Path)
    args = parser.parse_args(argv)
    if args.step:
        print(json.dumps(step(args.step, args.root)))
        return 0
    from bench.common import cpu_header

    report = cpu_header("python bench/scale_bench.py", sys.argv[1:], os.getloadavg())
    report["cache"] = "warm: each store is read right after it is written"
    with tempfile.TemporaryDirectory(prefix="scale_bench_", dir=ROOT.parent) as scratch:
        report["dd_MB_per_s"] = dd_rate(Path(scratch))
        print(f"dd: {report['dd_MB_per_s']:.0f} MB/s", flush=True)
        report["sizes"] = [one_size(n, Path(scratch)) for n in args.sizes]
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print("\n" + _table(report["sizes"]))
    print(f"\ndd: {report['dd_MB_per_s']:.0f} MB/s; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
