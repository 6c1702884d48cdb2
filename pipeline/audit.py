"""Stage ``audit``: near-duplicates and leakage, likely label errors and outliers, from one
feature set's stored codes and the images' perceptual signatures.

The near-duplicate radius is calibrated first on generated copies of the dataset's own
photos (``calibration.json``), unless ``audit.max_hamming`` fixes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path

from classifiers.audit.calibrate import calibrate
from classifiers.audit.outputs import groups_document, summary, write_images_csv
from classifiers.audit.run import NearDuplicateRule, run_audit
from features.compute.backend import random_weights_banner
from features.compute.encode import encode_paths
from features.data.manifest import read_manifest
from features.files import write_json
from features.store import FeatureStore
from pipeline.cli import ArgumentParser, run
from pipeline.params import load_params


def main(argv: Sequence[str]) -> None:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="dataset root (data.root)")
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--store", type=Path, required=True, help="root of the feature sets")
    parser.add_argument("--out", type=Path, required=True, help="images.csv, groups.json, ...")
    parser.add_argument("--summary", type=Path, required=True, help="metrics JSON")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    params = load_params(args.params)
    settings = params.audit
    features = params.feature_set(settings.features or next(iter(params.features)))
    rows = read_manifest(args.manifest)
    with FeatureStore(args.store / features) as store:
        fingerprint = store.fingerprint
        if fingerprint.is_random:
            print(random_weights_banner(fingerprint.weights))
        encode = partial(
            encode_paths, config=params.extract, limits=params.data.limits, expected=fingerprint
        )
        calibration = calibrate(rows, args.data, settings, encode)
        rule = NearDuplicateRule.from_calibration(calibration["rule"])
        print(_calibration_line(calibration))
        result = run_audit(rows, store, args.data, settings, rule)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "calibration.json", calibration)
    write_images_csv(args.out / "images.csv", result)
    write_json(args.out / "groups.json", groups_document(result, result.max_hamming))
    totals = summary(result, features, calibration)
    totals["random_weights"] = fingerprint.is_random
    write_json(args.summary, totals)
    figures = totals["calibration"]
    print(
        f"audit: radius {result.max_hamming} bits (calibration recall {figures['recall']:.3f}, "
        f"precision {figures['precision']:.3f}; dataset bound {totals['dataset_bound']})"
    )
    print(
        f"audit: {totals['leaking_pairs']} leaking pairs in {totals['leaking_groups']} groups; "
        f"scores per image: {args.out / 'images.csv'}; summary: {args.summary}"
    )


def _calibration_line(calibration: dict) -> str:
    rule, signals = calibration["rule"], calibration["signals"]
    said = ", ".join(f"{name} {figures['best_recall']:.3f}" for name, figures in signals.items())
    return (
        f"audit: near-duplicates by the {rule['signal']} rule: precision "
        f"{rule['precision']:.3f}, recall {rule['recall']:.3f} on {calibration['images']} "
        f"images ({calibration['photos']} photos and their copies); recall of each signal "
        f"at precision >= {calibration['goal']['precision']}: {said}"
    )


if __name__ == "__main__":
    run(main)
