"""``python -m pipeline.predict --head NAME INPUT...``: label and class probabilities per image.

An INPUT is an image file, a folder (walked recursively by ``prepare``'s rules: image
extensions only, hidden and system files ignored, symlinks leaving it not followed) or
``@list.txt`` (a file or folder per line, relative to the list's folder or absolute; blank
lines and ``#`` comments ignored). Images already in the store reuse their stored codes
(identified by content, wherever the file now lives); the others are read, decoded and
encoded in batches exactly as the head's training codes were. A file that cannot be
predicted gets an error row and every other file is still predicted: exit 1 then.
"""

from __future__ import annotations

import csv
import json
import sys
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from classifiers.persist import load_head
from features.compute.encode import encode_files
from features.compute.extract import random_weights_banner
from features.compute.loader import ImageRef
from features.data.scan import SKIPPED, image_files
from features.errors import UserError
from features.files import atomic_open, file_sha256
from features.store import FeatureStore
from features.store.fingerprint import Fingerprint
from pipeline.cli import ArgumentParser, run
from pipeline.params import load_params

STORE, COMPUTED = "store", "computed"


@dataclass
class Prediction:
    """One input file's row: its label and every class's value, or why it has none."""

    path: str
    sha256: str = ""
    label: str = ""
    values: dict[str, float] = field(default_factory=dict)  # ranked, best first
    codes: str = ""  # store | computed
    error: str = ""


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


def _list_entries(argument: str) -> list[Path]:
    """The paths an ``@list.txt`` argument names; a list that cannot be read is a user error."""
    listing = Path(argument[1:])
    try:
        lines = listing.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise UserError(f"cannot read the list {listing}: {reason}") from error
    entries = (line.strip() for line in lines)
    return [listing.parent / entry for entry in entries if entry and not entry.startswith("#")]


def _rows_for(path: Path) -> list[Prediction]:
    """A folder's images by prepare's rules (files it refuses become error rows), or the path."""
    if not path.is_dir():
        return [Prediction(str(path))]
    return [
        Prediction(
            str(path / found.path),
            error=f"{found.reason}: {found.detail}" if found.bucket == SKIPPED else "",
        )
        for found in image_files(path)
    ]


def collect_inputs(arguments: Sequence[str]) -> list[Prediction]:
    """One row per file the arguments name; every ``@list`` is read before any folder walk."""
    paths = [
        path
        for argument in arguments
        for path in (_list_entries(argument) if argument.startswith("@") else [Path(argument)])
    ]
    rows = [row for path in paths for row in _rows_for(path)]
    if not rows:
        raise UserError(f"no images in {' '.join(arguments)}; give image files or folders")
    return rows


def _hash(row: Prediction) -> None:
    """Fill in the file's content hash, or its error; only regular files are opened."""
    if row.error:
        return
    path = Path(row.path)
    if not path.exists():
        row.error = "missing: no such file"
    elif not path.is_file():
        row.error = "unreadable: not a regular file (a folder, FIFO, socket or device)"
    else:
        try:
            row.sha256 = file_sha256(path)
        except OSError as error:
            row.error = f"unreadable: {error.strerror}"


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
        ranked = dict(sorted(zip(head.classes, values.tolist(), strict=True), key=lambda p: -p[1]))
        for row in rows_of.pop(sha):
            row.label, row.values, row.codes = next(iter(ranked)), ranked, origin


def predict(
    head_name: str, arguments: Sequence[str], params_path: Path, features: str | None = None
) -> tuple[list[Prediction], Head]:
    """One row per input file, in input order, and the head (trained on the feature set
    ``features``, by default the only one) that labelled them."""
    params = load_params(params_path)
    features = params.feature_set(features, head_name)
    model, sidecar = load_head(params.paths.model_for(head_name, features))
    head = Head(model, Fingerprint.from_json(sidecar.fingerprint))
    rows = collect_inputs(arguments)
    rows_of: dict[str, list[Prediction]] = defaultdict(list)
    for row in rows:
        _hash(row)
        if not row.error:
            rows_of[row.sha256].append(row)
    chunk = params.extract.batch_size
    store = params.paths.store_for(features)
    for hashes, codes in _stored(store, head.fingerprint, list(rows_of), chunk):
        _label(rows_of, head, hashes, codes, STORE)
    if rows_of:
        refs = [ImageRef(sha, Path(group[0].path)) for sha, group in rows_of.items()]
        limits = params.data.limits
        for batch in encode_files(refs, params.extract, limits, expected=head.fingerprint):
            for failure in batch.failures:
                for row in rows_of.pop(failure.sha256):
                    row.error = f"{failure.reason}: {failure.detail}"
            if batch.hashes:
                _label(rows_of, head, batch.hashes, batch.codes.numpy(), COMPUTED)
    return rows, head


def _json_text(name: str, rows: Sequence[Prediction], head: Head) -> str:
    results = []
    for row in rows:
        fields = asdict(row)
        fields[head.kind] = fields.pop("values")
        results.append(fields)
    document = {
        "head": name,
        "weights": head.fingerprint.weights,
        "random_weights": head.fingerprint.is_random,
        "results": results,
    }
    return json.dumps(document, indent=2) + "\n"


def write_csv(path: Path, rows: Sequence[Prediction], head: Head) -> None:
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
    origin = "codes from the store" if row.codes == STORE else "codes computed now"
    return f"{row.path}: {row.label}  ({top}; {origin})"


def _write(out: Path, as_json: bool, name: str, rows: Sequence[Prediction], head: Head) -> None:
    """The table, written whole or not at all; what happened goes to stderr."""
    if as_json:
        with atomic_open(out) as stream:
            stream.write(_json_text(name, rows, head))
    else:
        write_csv(out, rows, head)
    if head.fingerprint.is_random:
        print(random_weights_banner(head.fingerprint.weights), file=sys.stderr)
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
        if head.fingerprint.is_random:
            print(random_weights_banner(head.fingerprint.weights))
        for row in rows:
            print(_line(row))
    failed = sum(bool(row.error) for row in rows)
    if failed:
        print(f"{failed} of {len(rows)} files could not be predicted", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    run(main)
