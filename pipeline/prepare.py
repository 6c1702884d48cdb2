"""Stage ``prepare``: dataset folder -> manifest, per-file report and data report."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from features.data.manifest import build_manifest, write_files_csv, write_manifest
from features.data.scan import scan_dataset
from features.data.scan_cache import ScanCache
from features.files import write_json
from pipeline.cli import ArgumentParser, run
from pipeline.params import load_params


def _load_cache(path: Path) -> ScanCache:
    """Verdicts of earlier runs, so skips stay stable; a damaged cache costs a re-validation."""
    try:
        return ScanCache.from_json(json.loads(path.read_text()))
    except (OSError, ValueError):
        return ScanCache()


def main(argv: Sequence[str]) -> None:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="dataset root (data.root)")
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--files", type=Path, required=True, help="every file and its bucket")
    parser.add_argument("--report", type=Path, required=True, help="data report (JSON)")
    parser.add_argument("--cache", type=Path, required=True, help="validation cache (JSON)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    params = load_params(args.params)
    cache = _load_cache(args.cache)
    outcomes, predefined = scan_dataset(args.data, params.data.limits, cache)
    split = params.split
    rows, outcomes, report = build_manifest(
        outcomes, args.data, predefined, split.salt, split.test_fraction, split.val_fraction
    )
    write_manifest(args.manifest, rows)
    write_files_csv(args.files, outcomes)
    write_json(args.report, asdict(report))
    write_json(args.cache, cache.to_json())
    print(report.summary())
    print(f"  every file and its bucket: {args.files}; report: {args.report}")


if __name__ == "__main__":
    run(main)
