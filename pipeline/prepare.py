"""Stage ``prepare``: dataset folder -> manifest, per-file report and data report."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from features.data.manifest import build_manifest, write_files_csv, write_manifest
from features.data.scan import scan_dataset
from features.data.scan_cache_file import load_scan_cache, save_scan_cache
from features.files import write_json
from pipeline.cli import ArgumentParser, run
from pipeline.params import load_params


def main(argv: Sequence[str]) -> None:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="dataset root (data.root)")
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--files", type=Path, required=True, help="every file and its bucket")
    parser.add_argument("--report", type=Path, required=True, help="data report (JSON)")
    parser.add_argument("--cache", type=Path, required=True, help="scan cache (SQLite)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    params = load_params(args.params)
    cache = load_scan_cache(args.cache)
    print(f"scan cache: {cache.origin}")
    outcomes, predefined = scan_dataset(args.data, params.data.limits, cache)
    split = params.split
    rows, outcomes, report = build_manifest(
        outcomes, args.data, predefined, split.salt, split.test_fraction, split.val_fraction
    )
    write_manifest(args.manifest, rows)
    write_files_csv(args.files, outcomes)
    write_json(args.report, asdict(report))
    save_scan_cache(args.cache, cache)
    print(report.summary())
    print(f"  every file and its bucket: {args.files}; report: {args.report}")


if __name__ == "__main__":
    run(main)
