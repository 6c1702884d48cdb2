"""``python -m pipeline.predict --head NAME IMAGE...``: label and class probabilities.

Images already in the store reuse their stored codes (identified by content, wherever the
file now lives); others are decoded and encoded exactly as the head's training codes were.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from classifiers.persist import load_head
from features.compute.extract import encode_images, random_weights_banner
from features.errors import UserError
from features.store import FeatureStore
from features.store.fingerprint import Fingerprint
from pipeline.cli import ArgumentParser, run
from pipeline.params import load_params


def _stored_codes(
    store_path: Path, hashes: list[str], fingerprint: Fingerprint
) -> dict[str, np.ndarray]:
    if not (store_path / "index.h5").is_file():
        return {}
    with FeatureStore(store_path) as store:
        if store.fingerprint != fingerprint:
            return {}
        present = [sha for sha, ok in zip(hashes, store.contains(hashes), strict=True) if ok]
        return dict(zip(present, store.get(present), strict=True)) if present else {}


def _scores(model, codes: np.ndarray) -> tuple[np.ndarray, str]:
    if hasattr(model, "predict_proba"):
        return model.predict_proba(codes), "probabilities"
    return model.decision_function(codes), "scores"


def predict(
    head: str, images: Sequence[Path], params_path: Path
) -> tuple[list[dict[str, Any]], Fingerprint]:
    """One result per image, and the fingerprint of the codes the head was trained on."""
    params = load_params(params_path)
    model, sidecar = load_head(Path(params.paths.models) / f"{head}.joblib")
    fingerprint = Fingerprint.from_json(sidecar.fingerprint)
    blobs = []
    for image in images:
        try:
            blobs.append(Path(image).read_bytes())
        except OSError as error:
            raise UserError(f"cannot read image {image}: {error.strerror}") from error
    hashes = [hashlib.sha256(blob).hexdigest() for blob in blobs]
    codes = _stored_codes(Path(params.paths.store), hashes, fingerprint)
    todo = [(sha, blob) for sha, blob in zip(hashes, blobs, strict=True) if sha not in codes]
    computed, failures = (
        ({}, [])
        if not todo
        else encode_images(todo, params.extract, params.data.limits, expected=fingerprint)
    )
    failed = {failure.sha256: failure for failure in failures}
    results = []
    for image, sha in zip(images, hashes, strict=True):
        result: dict[str, Any] = {"image": str(image), "sha256": sha}
        if sha in failed:
            result["error"] = f"{failed[sha].reason}: {failed[sha].detail}"
        else:
            row = (codes.get(sha) if sha in codes else computed[sha]).astype(np.float32)
            scores, kind = _scores(model, row[None, :])
            ranked = sorted(zip(model.classes_, scores[0], strict=True), key=lambda p: -p[1])
            result.update(
                {
                    "label": str(ranked[0][0]),
                    kind: {str(c): float(s) for c, s in ranked},
                    "codes": "store" if sha in codes else "computed",
                }
            )
        results.append(result)
    return results, fingerprint


def main(argv: Sequence[str]) -> int:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--head", required=True, help="a trained head, e.g. logreg")
    parser.add_argument("images", type=Path, nargs="+")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    results, fingerprint = predict(args.head, args.images, args.params)
    if args.json:
        print(
            json.dumps(
                {
                    "head": args.head,
                    "weights": fingerprint.weights,
                    "random_weights": fingerprint.is_random,
                    "results": results,
                },
                indent=2,
            )
        )
    else:
        if fingerprint.is_random:
            print(random_weights_banner(fingerprint.weights))
        for result in results:
            if "error" in result:
                print(f"{result['image']}: skipped ({result['error']})")
                continue
            values = result.get("probabilities") or result["scores"]
            top = ", ".join(f"{label} {value:.3f}" for label, value in values.items())
            origin = "codes from the store" if result["codes"] == "store" else "codes computed now"
            print(f"{result['image']}: {result['label']}  ({top}; {origin})")
    return 1 if any("error" in result for result in results) else 0


if __name__ == "__main__":
    run(main)
