"""Stage ``audit``: near-duplicates and leakage, likely label errors and outliers, from one
feature set's stored codes and the images' perceptual signatures.

The near-duplicate radius is calibrated first on generated copies of the dataset's own
photos (``calibration.json``), unless ``audit.max_hamming`` fixes it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from classifiers.audit.calibrate import calibrate
from classifiers.audit.outputs import groups_document, summary, write_images_csv
from classifiers.audit.run import run_audit
from features.compute.backend import random_weights_banner
from features.compute.config import ExtractConfig
from features.compute.encode import encode_files
from features.compute.loader import ImageRef
from features.data.images import ImageLimits
from features.data.manifest import read_manifest
from features.errors import UserError
from features.files import write_json
from features.store import FeatureStore
from features.store.fingerprint import Fingerprint
from pipeline.cli import ArgumentParser, run
from pipeline.params import load_params


def _encoder(config: ExtractConfig, limits: ImageLimits, fingerprint: Fingerprint):
    """Codes of files as the audited store computed them (same backbone, layer, weights)."""

    def encode(paths: Sequence[Path]) -> np.ndarray:
        refs = [ImageRef(hashlib.sha256(path.read_bytes()).hexdigest(), path) for path in paths]
        codes: dict[str, np.ndarray] = {}
        for batch in encode_files(refs, config, limits, fingerprint):
            if batch.failures:
                raise UserError(f"audit calibration: {batch.failures[0]}")
            if batch.codes is not None:
                codes.update(zip(batch.hashes, batch.codes.numpy(), strict=True))
        return np.stack([codes[ref.sha256] for ref in refs])

    return encode


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
        encode = _encoder(params.extract, params.data.limits, fingerprint)
        calibration = calibrate(rows, args.data, settings, encode)
        radius = calibration["max_hamming"]
        print(_calibration_line(calibration))
        result = run_audit(rows, store, args.data, settings, radius)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "calibration.json", calibration)
    write_images_csv(args.out / "images.csv", result)
    write_json(args.out / "groups.json", groups_document(result, radius))
    totals = summary(result, radius, features, calibration)
    totals["random_weights"] = fingerprint.is_random
    write_json(args.summary, totals)
    print(
        f"audit: {totals['leaking_pairs']} leaking pairs in {totals['leaking_groups']} groups; "
        f"scores per image: {args.out / 'images.csv'}; summary: {args.summary}"
    )


def _calibration_line(calibration: dict) -> str:
    perceptual = calibration["signals"]["perceptual"]
    line = (
        f"audit: near-duplicate radius {calibration['max_hamming']} bits "
        f"({calibration['max_hamming_from']}): perceptual precision "
        f"{perceptual['precision']:.3f}, recall {perceptual['recall']:.3f} on "
        f"{calibration['images']} images ({calibration['photos']} photos and copies)"
    )
    codes = calibration["signals"].get("codes")
    if codes:
        line += (
            f"; codes alone: recall {codes['best_recall']:.3f} at precision "
            f">= {codes['target_precision']}"
        )
    return line


if __name__ == "__main__":
    run(main)
