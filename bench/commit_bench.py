"""A commit's cost against the number of shards already in the store: the new index (one
commit record per commit) against the old one (the whole index rewritten per commit).

At 10, 100 and 1,000 shards (tiny ones: the index cost is per shard, not per row) it
times, on the same disk and in the same run, each part of a commit separately:

* **data**: :func:`write_shard` of the commit's shard (4 rows x 8 float16);
* **index, new**: :func:`append_commit`, the commit record (what a commit does now);
* **index, old (naive baseline)**: :func:`write_checkpoint` of the whole state, i.e. the
  shard table, the skip table and both virtual datasets, which every commit used to
  rewrite and which a writer now writes once, when it closes.

Each figure is the median of ``--repeats`` commits, every one fsynced as in a real run.

    python bench/commit_bench.py [--shards 10 100 1000] [--repeats 30]

Writes ``bench/results/commit_cpu.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from the repo root

from bench.common import cpu_header  # noqa: E402
from features.store import StoreWriter  # noqa: E402
from features.store.checkpoint import write_checkpoint  # noqa: E402
from features.store.fingerprint import Fingerprint  # noqa: E402
from features.store.index import append_commit, commit_files, read_index  # noqa: E402
from features.store.shards import SHARD_DIR, write_shard  # noqa: E402

DIM = 8
ROWS = 4  # per shard
FINGERPRINT = Fingerprint("bench", "codes", DIM, "generated", "{}", "-", "float16", "-", "-")


def _hashes(count: int, start: int) -> list[str]:
    return [hashlib.sha256(f"commit:{i}".encode()).hexdigest() for i in range(start, start + count)]


def _codes(start: int) -> np.ndarray:
    return np.full((ROWS, DIM), start % 1000, dtype=np.float16)


def _median_ms(run: Callable[[int], object], repeats: int) -> float:
    times = []
    for repeat in range(repeats):
        started = time.perf_counter()
        run(repeat)
        times.append(time.perf_counter() - started)
    return 1000 * float(np.median(times))


def _grow(root: Path, shards: int) -> None:
    """Commit through the real writer until the store holds ``shards`` shards."""
    with StoreWriter(root, FINGERPRINT, log=lambda _: None) as writer:
        assert writer.state is not None
        for shard in range(len(writer.state.shards), shards):
            writer.commit(_hashes(ROWS, shard * ROWS), _codes(shard))


def at(root: Path, shards: int, repeats: int) -> dict[str, Any]:
    """The parts of a commit to a store of ``shards`` shards."""
    _grow(root, shards)
    state = read_index(root)
    hashes = _hashes(ROWS, 10**9)  # the timed shards are never indexed for good
    records = [
        write_shard(root / SHARD_DIR, hashes, _codes(i), FINGERPRINT) for i in range(repeats)
    ]

    def data(i: int) -> None:
        (
            root / SHARD_DIR / write_shard(root / SHARD_DIR, hashes, _codes(i), FINGERPRINT).name
        ).unlink()

    def new_index(i: int) -> None:
        append_commit(root, state, (records[i],), ())

    def old_index(i: int) -> None:
        write_checkpoint(root, replace(state, shards=(*state.shards, records[i])))

    result = {
        "shards": len(state.shards),
        "data_ms": _median_ms(data, repeats),
        "index_new_ms": _median_ms(new_index, repeats),
        "index_old_ms": _median_ms(old_index, repeats),
    }
    write_checkpoint(root, state)  # back to the store as it was: the timed commits undone
    for path in commit_files(root).values():
        path.unlink()
    for record in records:
        (root / SHARD_DIR / record.name).unlink()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/commit_cpu.json")
    args = parser.parse_args(argv)
    report = cpu_header("python bench/commit_bench.py", sys.argv[1:], os.getloadavg())
    rows = []
    with tempfile.TemporaryDirectory(prefix="commit_bench_", dir=ROOT.parent) as scratch:
        for shards in sorted(args.shards):
            rows.append(at(Path(scratch) / "store", shards, args.repeats))
            print(json.dumps(rows[-1]), flush=True)
    report |= {
        "rows_per_shard": ROWS,
        "dim": DIM,
        "repeats": args.repeats,
        "statistic": "median ms per commit, each write fsynced",
        "sizes": rows,
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print("\n| shards | data write | index, new (record) | index, old (whole index) |")
    print("|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['shards']:,} | {row['data_ms']:.1f} ms | {row['index_new_ms']:.2f} ms "
            f"| {row['index_old_ms']:.1f} ms |"
        )
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
