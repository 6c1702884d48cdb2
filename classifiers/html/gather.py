"""Everything the page shows, read from what the stages wrote: nothing is recomputed.

The leaderboard comes from ``compare``'s summary, the mistakes from the train stages'
prediction CSVs, the plots from ``compare``'s folder, and images from the manifest by
content hash. Each list is capped, so the page stays small on a large dataset; the count
of the rest is kept, so nothing is hidden silently.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from classifiers.html.thumbnails import PLACEHOLDER, Thumb, file_uri, thumbnail
from features.data.manifest import read_manifest
from features.errors import UserError

__all__ = [
    "MAX_MISTAKES",
    "ClassScore",
    "HeadReport",
    "Images",
    "Mistake",
    "Plot",
    "Shown",
    "Sources",
    "Standing",
    "finite",
    "largest_first",
    "read_csv",
    "read_head",
    "read_heads",
    "read_plots",
    "read_standings",
    "read_summary",
]

MAX_MISTAKES = 60  # per head: the most confident ones carry the lesson, the rest a count


@dataclass(frozen=True)
class Sources:
    """The stage outputs a page is built from (the audit folder may not exist)."""

    summary: Path
    metrics: Path  # root of <feature set>/<head>.json
    predictions: Path  # root of <feature set>/<head>.csv
    plots: Path
    manifest: Path
    data: Path  # the data root that manifest paths are relative to
    audit: Path


@dataclass(frozen=True)
class Shown:
    """One image on the page: its thumbnail and the file it came from."""

    sha256: str
    path: str
    thumb: Thumb


class Images:
    """Finds images by content hash through the manifest and thumbnails each one once."""

    def __init__(self, manifest: Path, root: Path) -> None:
        self._paths = {row.sha256: row.path for row in read_manifest(manifest)}
        self._root = Path(root)
        self._shown: dict[str, Shown] = {}

    def show(self, sha256: str, path: str = "") -> Shown:
        """The image with this hash; ``path`` (relative to the data root) where the
        manifest does not list it."""
        if sha256 not in self._shown:
            path = self._paths.get(sha256, path)
            thumb = (
                thumbnail(self._root / path) if path else Thumb(PLACEHOLDER, "not in the manifest")
            )
            self._shown[sha256] = Shown(sha256, path, thumb)
        return self._shown[sha256]


@dataclass(frozen=True)
class Standing:
    """One leaderboard row: a (head, feature set) entry as ``compare`` summarised it."""

    name: str
    best: bool
    scores: dict[str, Any]  # summary.json's entry: accuracy, accuracy_ci, C, ...
    versus: dict[str, Any] | None  # paired test against the best entry


@dataclass(frozen=True)
class Plot:
    title: str
    uri: str


@dataclass(frozen=True)
class Mistake:
    image: Shown
    actual: str
    predicted: str
    confidence: float | None  # max predicted probability; None in old prediction files


@dataclass(frozen=True)
class ClassScore:
    label: str
    precision: float | None
    recall: float | None
    f1: float | None
    support: int


@dataclass(frozen=True)
class HeadReport:
    """A head's misclassified evaluation images, most confident first, and its per-class
    scores."""

    name: str
    evaluated_on: str
    evaluated: int
    mistakes: list[Mistake]
    total_mistakes: int
    has_confidence: bool
    per_class: list[ClassScore] = field(default_factory=list)

    @property
    def more(self) -> int:
        return self.total_mistakes - len(self.mistakes)


def finite(value: Any) -> float | None:
    """A JSON number or CSV cell as a finite float; None for an empty, missing or non-finite
    one, which the page shows as n/a."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = float(value)
    except ValueError as error:
        raise UserError(f"{value!r} is not a number; rerun the stage that wrote it") from error
    return number if math.isfinite(number) else None


def largest_first(value: float | None) -> tuple[bool, float]:
    """A sort key: larger values first, missing ones last."""
    return (value is None, -value if value is not None else 0.0)


def read_csv(path: Path, required: Iterable[str]) -> tuple[list[str], list[dict[str, str]]]:
    """A CSV's columns and rows, after checking that ``required`` columns are there."""
    with Path(path).open(newline="", encoding="utf-8", errors="surrogateescape") as stream:
        reader = csv.DictReader(stream)
        columns = list(reader.fieldnames or [])
        missing = [name for name in required if name not in columns]
        if missing:
            raise UserError(f"{path} lacks columns {missing} (has {columns}); rerun its stage")
        return columns, list(reader)


def read_summary(path: Path) -> dict[str, Any]:
    if not Path(path).is_file():
        raise UserError(f"summary {path} does not exist: run `dvc repro compare` first")
    return json.loads(Path(path).read_text())


def read_standings(summary: dict[str, Any]) -> list[Standing]:
    """The leaderboard in the summary's order (best first)."""
    best = summary.get("best") or {}
    best_name = f"{best.get('head')}-{best.get('features')}"
    versus = summary.get("vs_best") or {}
    return [
        Standing(name, name == best_name, scores, versus.get(name))
        for name, scores in summary.get("entries", {}).items()
    ]


def read_plots(folder: Path) -> list[Plot]:
    """Every PNG in ``folder``: the overview plots first, then the confusion matrices."""
    files = sorted(Path(folder).glob("*.png")) if Path(folder).is_dir() else []
    files.sort(key=lambda path: path.stem.startswith("confusion_"))
    return [Plot(_plot_title(path.stem), file_uri(path)) for path in files]


def _plot_title(stem: str) -> str:
    if stem.startswith("confusion_"):
        return f"confusion matrix: {stem.removeprefix('confusion_')}"
    return stem.replace("_", " ")


def _split_name(name: str, known: Sequence[str]) -> tuple[str, str]:
    """``<head>-<feature set>`` as (head, feature set); feature set names have no dash."""
    if name not in known:
        raise UserError(f"head {name!r} is not in the summary; choose from {sorted(known)}")
    head, _, features = name.rpartition("-")
    return head, features


def _per_class(metrics_file: Path) -> tuple[str, list[ClassScore]]:
    """The split the head was evaluated on and its per-class scores, if its metrics exist."""
    if not metrics_file.is_file():
        return "", []
    metrics = json.loads(metrics_file.read_text())
    scores = [
        ClassScore(
            label,
            finite(s.get("precision")),
            finite(s.get("recall")),
            finite(s.get("f1")),
            int(s.get("support", 0)),
        )
        for label, s in (metrics.get("per_class") or {}).items()
    ]
    return str(metrics.get("evaluated_on", "")), scores


def _mistake(row: dict[str, str], images: Images) -> Mistake:
    confidence = finite(row.get("confidence"))
    return Mistake(images.show(row["sha256"]), row["actual"], row["predicted"], confidence)


def read_head(name: str, metrics: Path, predictions: Path, images: Images) -> HeadReport:
    """One head's mistakes from its predictions CSV, most confident first (in file order
    when the file has no confidence column), capped at :data:`MAX_MISTAKES`."""
    if not predictions.is_file():
        raise UserError(f"predictions {predictions} do not exist: rerun that head's train stage")
    columns, rows = read_csv(predictions, ("sha256", "actual", "predicted"))
    has_confidence = "confidence" in columns
    wrong = [row for row in rows if row["actual"] != row["predicted"]]
    if has_confidence:
        # Unscored rows last; sort() is stable, so ties keep the file's order.
        wrong.sort(key=lambda row: largest_first(finite(row["confidence"])))
    evaluated_on, per_class = _per_class(metrics)
    shown = [_mistake(row, images) for row in wrong[:MAX_MISTAKES]]
    return HeadReport(name, evaluated_on, len(rows), shown, len(wrong), has_confidence, per_class)


def read_heads(
    summary: dict[str, Any], extra: Sequence[str], sources: Sources, images: Images
) -> list[HeadReport]:
    """The best head's mistakes, then those of each extra head asked for (once each)."""
    best = summary.get("best") or {}
    names = [f"{best['head']}-{best['features']}"] if best else []
    names += [name for name in dict.fromkeys(extra) if name not in names]
    known = list(summary.get("entries", {}))
    reports = []
    for name in names:
        head, features = _split_name(name, known)
        metrics = sources.metrics / features / f"{head}.json"
        predictions = sources.predictions / features / f"{head}.csv"
        reports.append(read_head(name, metrics, predictions, images))
    return reports
