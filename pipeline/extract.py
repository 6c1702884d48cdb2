"""Stage ``extract``: codes for every manifest image each feature set's store lacks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from features.store.lock import LOCK_NAME, StoreLock
from pipeline.cli import ArgumentParser, run

if TYPE_CHECKING:
    from features.compute.config import ExtractReport
    from features.compute.feature_sets import FeatureSet


def main(argv: Sequence[str]) -> None:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="dataset root (data.root)")
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--report", type=Path, required=True, help="run report (JSON)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    # A store another writer holds is refused in a fraction of a second, before torch, the
    # params check and the network are loaded; hence the imports below, not at the top.
    sets = [path for path in args.store.iterdir() if path.is_dir()] if args.store.is_dir() else []
    for store in [args.store, *sets]:
        StoreLock(store / LOCK_NAME).check_free()
    from features.compute.extract_sets import extract_feature_sets
    from features.compute.loader import ImageRef
    from features.data.manifest import read_manifest
    from features.files import write_json
    from pipeline.params import load_params

    params = load_params(args.params)
    refs = [ImageRef(row.sha256, args.data / row.path) for row in read_manifest(args.manifest)]
    reports = extract_feature_sets(
        refs,
        args.store,
        params.stored_sets,
        params.extract,
        params.data.limits,
        progress=not args.no_progress,
    )
    write_json(args.report, _summary(reports, params.stored_sets))
    for report in reports.values():
        print(report.summary())


def _summary(reports: dict[str, ExtractReport], sets: dict[str, FeatureSet]) -> dict:
    """Totals over the backbones' passes, then each pass with its sets' fingerprints."""
    totals = {
        key: sum(getattr(report, key) for report in reports.values())
        for key in (
            "images",
            "reused",
            "computed",
            "skipped",
            "retry_later",
            "non_finite",
            "recomputed_fp32",
        )
    }
    passes = {}
    for backbone, report in reports.items():
        names = {s.layer: name for name, s in sets.items() if s.backbone == backbone}
        summary = asdict(report)
        summary["fingerprints"] = {
            names[layer]: asdict(fingerprint) for layer, fingerprint in report.fingerprints.items()
        }
        summary["images_per_second"] = round(report.images_per_second, 2)
        passes[backbone] = summary
    random = any(report.random_weights for report in reports.values())
    return {**totals, "random_weights": random, "backbones": passes}


if __name__ == "__main__":
    run(main)
