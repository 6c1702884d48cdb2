"""``python -m pipeline.predict --head NAME INPUT...``: label and class probabilities per image.

An INPUT is an image file, a folder (walked recursively by ``prepare``'s rules: image
extensions only, hidden and system files ignored, symlinks leaving it not followed) or
``@list.txt`` (a file or folder per line, relative to the list's folder or absolute; blank
lines and ``#`` comments ignored). Images already in the store reuse their stored codes
(identified by content, wherever the file now lives); the others are read, decoded and
encoded in batches exactly as the head's training codes were. A ``finetune@<name>``
network predicts from the images themselves: it runs whole for every file. A file that
cannot be predicted gets an error row and every other file is still predicted: exit 1 then.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from classifiers.finetune import FinetuneSidecar, load_finetuned, predict_images
from classifiers.persist import load_head
from features.compute.backend import random_weights_banner
from features.compute.encode import encode_files
from features.compute.loader import ImageRef
from features.files import atomic_open
from features.store import FeatureStore
from features.store.fingerprint import Fingerprint
from features.store.shards import Failure
from pipeline.cli import ArgumentParser, run
from pipeline.params import Params, load_params
from pipeline.predict_inputs import Prediction, by_hash, collect_inputs

STORE, COMPUTED, NETWORK = "store", "computed", "network"


@dataclass(frozen=True)
class Head:
    """A trained head and what its values mean: probabilities, or decision scores."""

    model: Any
    fingerprint: Fingerprint

    @property
    def kind(self) -> str:
        if hasattr(self.model, "predict_proba"):
            return "probabilities"
        return "scores" if hasattr(self.model, "decision_function") else "votes"

    @property
    def classes(self) -> list[str]:
        return [str(label) for label in self.model.classes_]

    @property
    def weights(self) -> str:
        return self.fingerprint.weights

    @property
    def is_random(self) -> bool:
        return self.fingerprint.is_random

    def values(self, codes: np.ndarray) -> np.ndarray:
        """Array of shape (n_images, n_classes), whatever the estimator returns natively."""
        codes = codes.astype(np.float32)
        if self.kind == "probabilities":
            return self.model.predict_proba(codes)
        if self.kind == "votes":  # e.g. nearest centroid with a manhattan metric: labels only
            predicted = self.model.predict(codes)
            return (predicted[:, None] == self.model.classes_[None, :]).astype(np.float64)
        scores = self.model.decision_function(codes)
        # Two classes give one score per image, positive for classes_[1].
        return np.column_stack([-scores, scores]) if scores.ndim == 1 else scores


@dataclass(frozen=True)
class FinetunedHead:
    """A ``finetune@<name>`` network, as ``predict`` reports it: probabilities always."""

    sidecar: FinetuneSidecar
    kind: str = "probabilities"

    @property
    def classes(self) -> list[str]:
        return list(self.sidecar.classes)

    @property
    def weights(self) -> str:
        return self.sidecar.weights

    @property
    def is_random(self) -> bool:
        return self.sidecar.random_weights


AnyHead = Head | FinetunedHead


def _stored(
    store_path: Path, fingerprint: Fingerprint, hashes: list[str], chunk: int
) -> Iterator[tuple[list[str], np.ndarray]]:
    """Stored codes of those ``hashes`` the store holds for the head, ``chunk`` at a time."""
    if not hashes or not (store_path / "index.h5").is_file():
        return
    with FeatureStore(store_path) as store:
        if store.fingerprint != fingerprint:
            return
        present = [sha for sha, ok in zip(hashes, store.contains(hashes), strict=True) if ok]
        for start in range(0, len(present), chunk):
            part = present[start : start + chunk]
            yield part, store.get(part)


def _label(
    rows_of: dict[str, list[Prediction]],
    head: Head,
    hashes: list[str],
    codes: np.ndarray,
    origin: str,
) -> None:
    """Label every row of every hash from its codes, and say where the codes came from."""
    for sha, values in zip(hashes, head.values(codes), strict=True):
        _label_one(rows_of, head.classes, sha, values, origin)


def _label_one(
    rows_of: dict[str, list[Prediction]],
    classes: list[str],
    sha: str,
    values: np.ndarray,
    origin: str,
) -> None:
    """Label every row of one image from its class values (ranked, best first)."""
    ranked = dict(sorted(zip(classes, values.tolist(), strict=True), key=lambda p: -p[1]))
    for row in rows_of.pop(sha):
        row.label, row.values, row.codes = next(iter(ranked)), ranked, origin


def _fail(rows_of: dict[str, list[Prediction]], failures: Sequence[Failure]) -> None:
    for failure in failures:
        for row in rows_of.pop(failure.sha256):
            row.error = f"{failure.reason}: {failure.detail}"


def _predict_finetuned(
    name: str, rows: list[Prediction], params: Params
) -> tuple[list[Prediction], FinetunedHead]:
    """Every image through the fine-tuned network, as the stage evaluated it."""
    net, sidecar = load_finetuned(params.paths.finetuned_for(name), params.extract.channels_last)
    rows_of = by_hash(rows)
    refs = [ImageRef(sha, Path(group[0].path)) for sha, group in rows_of.items()]
    head = FinetunedHead(sidecar)
    for batch in predict_images(net, sidecar, refs, params.extract, params.data.limits):
        _fail(rows_of, batch.failures)
        ranked = zip(batch.hashes, batch.probabilities, strict=True)
        for sha, values in ranked:
            _label_one(rows_of, head.classes, sha, values, NETWORK)
    return rows, head


def predict(
    head_name: str, arguments: Sequence[str], params_path: Path, features: str | None = None
) -> tuple[list[Prediction], AnyHead]:
    """One row per input file, in input order, and the head (trained on the feature set
    ``features``, by default the only one; or a fine-tuned network) that labelled them."""
    params = load_params(params_path)
    if head_name in params.finetune and head_name not in {**params.heads, **params.block_heads}:
        return _predict_finetuned(head_name, collect_inputs(arguments), params)
    features = params.feature_set(features, head_name)
    model, sidecar = load_head(params.paths.model_for(head_name, features))
    head = Head(model, Fingerprint.from_json(sidecar.fingerprint))
    rows = collect_inputs(arguments)
    rows_of = by_hash(rows)
    chunk = params.extract.batch_size
    store = params.paths.store_for(features)
    for hashes, codes in _stored(store, head.fingerprint, list(rows_of), chunk):
        _label(rows_of, head, hashes, codes, STORE)
    if rows_of:
        refs = [ImageRef(sha, Path(group[0].path)) for sha, group in rows_of.items()]
        limits = params.data.limits
        for batch in encode_files(refs, params.extract, limits, expected=head.fingerprint):
            _fail(rows_of, batch.failures)
            if batch.hashes:
                _label(rows_of, head, batch.hashes, batch.codes.numpy(), COMPUTED)
    return rows, head


def _json_text(name: str, rows: Sequence[Prediction], head: AnyHead) -> str:
    results = []
    for row in rows:
        fields = asdict(row)
        fields[head.kind] = fields.pop("values")
        results.append(fields)
    document = {
        "head": name,
        "weights": head.weights,
        "random_weights": head.is_random,
        "results": results,
    }
    return json.dumps(document, indent=2) + "\n"


def write_csv(path: Path, rows: Sequence[Prediction], head: AnyHead) -> None:
    """One line per file: a ``p_<class>`` (``score_``, ``vote_``) column per class."""
    prefix = {"probabilities": "p_", "scores": "score_", "votes": "vote_"}[head.kind]
    with atomic_open(path, "w", newline="") as stream:
        writer = csv.writer(stream)
        columns = [f"{prefix}{label}" for label in head.classes]
        writer.writerow(["path", "sha256", "label", *columns, "codes", "error"])
        for row in rows:
            values = [row.values.get(label, "") for label in head.classes]
            writer.writerow([row.path, row.sha256, row.label, *values, row.codes, row.error])


def _line(row: Prediction) -> str:
    if row.error:
        return f"{row.path}: skipped ({row.error})"
    top = ", ".join(f"{label} {value:.3f}" for label, value in row.values.items())
    origin = {
        STORE: "codes from the store",
        COMPUTED: "codes computed now",
        NETWORK: "fine-tuned network run on the image",
    }[row.codes]
    return f"{row.path}: {row.label}  ({top}; {origin})"


def _write(out: Path, as_json: bool, name: str, rows: Sequence[Prediction], head: AnyHead) -> None:
    """The table, written whole or not at all; what happened goes to stderr."""
    if as_json:
        with atomic_open(out) as stream:
            stream.write(_json_text(name, rows, head))
    else:
        write_csv(out, rows, head)
    if head.is_random:
        print(random_weights_banner(head.weights), file=sys.stderr)
    print(f"wrote {out}: {len(rows)} rows", file=sys.stderr)


def main(argv: Sequence[str]) -> int:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--head", required=True, help="a trained head, e.g. logreg")
    parser.add_argument(
        "--features", help="the feature set it was trained on (default: the only one)"
    )
    parser.add_argument("inputs", nargs="+", help="image files, folders, @list.txt files")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--out", type=Path, help="write the rows here: CSV, or JSON with --json")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    rows, head = predict(args.head, args.inputs, args.params, args.features)
    if args.out is not None:
        _write(args.out, args.json, args.head, rows, head)
    elif args.json:
        sys.stdout.write(_json_text(args.head, rows, head))
    else:
        if head.is_random:
            print(random_weights_banner(head.weights))
        for row in rows:
            print(_line(row))
    failed = sum(bool(row.error) for row in rows)
    if failed:
        print(f"{failed} of {len(rows)} files could not be predicted", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    run(main)
