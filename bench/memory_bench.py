"""Peak memory of extraction and of reading codes, against a naive loop; storage per image.

``python bench/memory_bench.py`` (what ``make bench`` runs) measures, each in a fresh
interpreter so one measurement's peak cannot leak into the next:

* extraction into the store at N and 10 N generated images (random weights, 32 px, CPU),
  against a notebook-style loop that decodes every image into memory, keeps every code in
  a Python list and writes one HDF5 file at the end;
* reading every code of a store of R and 10 R rows in chunks (``iter_chunks``) against one
  full load (``get`` of every hash);

then the bytes per image on disk with compression None, lzf and gzip. It prints a table
and writes ``bench/results/memory_cpu.json``. Peak RSS is the child's ``ru_maxrss``;
"growth" is how much the peak rises per extra image between the two sizes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere, like make bench does

import h5py  # noqa: E402
import numpy as np  # noqa: E402

from bench.memory_measure import (  # noqa: E402
    COMMIT_ROWS,
    CONFIG,
    EXTRACT_SIZES,
    MEASUREMENTS,
    READ_CHUNK_ROWS,
    READ_SIZES,
    child,
)

RESULTS = ROOT / "bench" / "results" / "memory_cpu.json"


def _run_child(kind: str, work: Path, count: int) -> dict[str, float]:
    command = [sys.executable, __file__, "--child", kind, "--work", str(work), "--n", str(count)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} n={count} failed:\n{done.stdout}\n{done.stderr}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"  {kind:14s} n={count:6d}: peak {result['peak_rss_mib']:8.1f} MiB", flush=True)
    return result


def _prepare_images(work: Path, count: int) -> None:
    from features.data.synthetic import make_dataset
    from features.files import file_sha256

    paths = make_dataset(work / "images", per_class=count // 4)
    # Interleave the classes, as a scanned dataset would list them, then save the order.
    order = sorted(paths, key=lambda p: (p.stem.rsplit("_", 1)[1], p.parent.name))
    refs = [[file_sha256(path), str(path)] for path in order]
    (work / "refs.json").write_text(json.dumps(refs))


def _synthetic_store(root: Path, rows: int) -> None:
    """A store of ``rows`` random codes, written in commits of 1000 rows."""
    from features.compute.backend import make_fingerprint
    from features.store import StoreWriter

    fingerprint = make_fingerprint(CONFIG, "random:0", "fp32")
    rng = np.random.default_rng(0)
    with StoreWriter(root, fingerprint, log=lambda message: None) as writer:
        for start in range(0, rows, 1000):
            size = min(1000, rows - start)
            hashes = [f"{i:064x}" for i in range(start, start + size)]
            writer.commit(hashes, rng.random((size, 4096), dtype=np.float32).astype(np.float16))


def _storage(work: Path, source: Path) -> list[dict[str, object]]:
    """Bytes per image of the same codes, rewritten with each compression, same shards."""
    from features.store import FeatureStore, StoreWriter
    from features.store.checkpoint import INDEX_NAME
    from features.store.index import read_index

    with FeatureStore(source) as reader:
        hashes, codes = reader.hashes, reader.get(reader.hashes)
        fingerprint = reader.fingerprint
    rows = []
    for compression in (None, "lzf", "gzip"):
        root = work / f"storage-{compression}"
        with StoreWriter(root, fingerprint, compression, log=lambda message: None) as writer:
            for start in range(0, len(hashes), COMMIT_ROWS):
                writer.commit(
                    hashes[start : start + COMMIT_ROWS], codes[start : start + COMMIT_ROWS]
                )
        state = read_index(root)
        shard_bytes = sum(shard.bytes for shard in state.shards)
        rows.append(
            {
                "compression": compression or "none",
                "rows": state.rows,
                "shards": len(state.shards),
                "shard_bytes_per_image": round(shard_bytes / state.rows, 1),
                "index_bytes": (root / INDEX_NAME).stat().st_size,
                "raw_bytes_per_image": 4096 * 2,
            }
        )
    rows.append({"zero_fraction_of_codes": round(float((codes == 0).mean()), 3)})
    return rows


def _machine() -> dict[str, object]:
    import torch

    from bench.extract.machine import cpu_model

    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "h5py": h5py.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _growth(results: list[dict], kind: str) -> float:
    """MiB of extra peak RSS per 1000 extra images (or rows) between the two sizes."""
    small, large = sorted((r for r in results if r["kind"] == kind), key=lambda r: r["n"])
    return round(
        (large["peak_rss_mib"] - small["peak_rss_mib"]) / (large["n"] - small["n"]) * 1000, 2
    )


def _table(results: list[dict], storage: list[dict]) -> str:
    lines = [
        "| measurement | N | peak RSS (MiB) | RSS at start (MiB) | seconds |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['kind']} | {r['n']} | {r['peak_rss_mib']} | {r['rss_at_start_mib']} "
            f"| {r['seconds']} |"
        )
    lines += ["", "| measurement | peak RSS growth (MiB per 1000 images or rows) |", "|---|---:|"]
    for kind in MEASUREMENTS:
        lines.append(f"| {kind} | {_growth(results, kind)} |")
    lines += [
        "",
        "| compression | shard bytes/image | raw float16 bytes/image | shards | index bytes |",
        "|---|---:|---:|---:|---:|",
    ]
    for s in storage[:-1]:
        lines.append(
            f"| {s['compression']} | {s['shard_bytes_per_image']} | {s['raw_bytes_per_image']} "
            f"| {s['shards']} | {s['index_bytes']} |"
        )
    lines.append(f"\nfraction of zeros in the codes: {storage[-1]['zero_fraction_of_codes']}")
    return "\n".join(lines)


def main(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--child", choices=tuple(MEASUREMENTS), help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.work, args.n)
        return
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="memory-bench-") as tmp:
        work = Path(tmp)
        print(f"memory bench: {max(EXTRACT_SIZES)} generated images, stores in {work}")
        _prepare_images(work, max(EXTRACT_SIZES))
        for rows in READ_SIZES:
            _synthetic_store(work / f"synthetic-{rows}", rows)
        results = [
            _run_child(kind, work, count)
            for kind, sizes in (
                ("store_extract", EXTRACT_SIZES),
                ("naive_extract", EXTRACT_SIZES),
                ("read_chunks", READ_SIZES),
                ("read_full", READ_SIZES),
            )
            for count in sizes
        ]
        storage = _storage(work, work / f"store-{max(EXTRACT_SIZES)}")
    table = _table(results, storage)
    print(table)
    report = {
        "command": "python bench/memory_bench.py",
        "machine": _machine(),
        "config": {
            "input_px": CONFIG.preprocessing.crop,
            "batch_size": CONFIG.batch_size,
            "commit_rows": COMMIT_ROWS,
            "read_chunk_rows": READ_CHUNK_ROWS,
            "weights": "random",
            "precision": CONFIG.precision,
            "dtype": CONFIG.dtype,
        },
        "measurements": results,
        "growth_mib_per_1000": {kind: _growth(results, kind) for kind in MEASUREMENTS},
        "storage": storage,
        "table": table,
        "seconds": round(time.perf_counter() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out} in {report['seconds']} s")


if __name__ == "__main__":
    main(sys.argv[1:])
