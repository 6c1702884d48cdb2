"""Compare (head, feature set) entries: load their metrics and predictions, pair them, and
summarise for DVC.

Every score comes with its bootstrap interval, and the best entry is tested against each
other entry on the same images, so a difference that is noise reads as noise. Entries on
different feature sets of one dataset share their test images, so they pair as well.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from classifiers.stats import discordant_counts, json_safe, mcnemar_exact
from features.errors import UserError

__all__ = [
    "ALPHA",
    "Entry",
    "Metrics",
    "MissingMetricsError",
    "Predictions",
    "Versus",
    "against_best",
    "chosen_C",
    "grid_axes",
    "load_metrics",
    "load_predictions",
    "rank",
    "summarise",
    "versus_best",
]

ALPHA = 0.05
_SUMMARY_KEYS = (
    "accuracy",
    "accuracy_ci",
    "balanced_accuracy",
    "macro_f1",
    "macro_f1_ci",
    "ece",
    "fit_seconds",
    "predict_ms_per_1000",
    "model_bytes",
    "n_train",
    "n_test",
    "without_leaked",  # the figures without test images near-duplicated in train (audit)
)

Predictions = dict[str, tuple[str, str]]  # image sha256 -> (actual, predicted)


@dataclass(frozen=True)
class Entry:
    """One head trained on one feature set: what a ``train@<head>-<feature set>`` stage makes
    (``train_block@`` for a head on maps, ``finetune@<head>`` for a fine-tuned network)."""

    head: str
    features: str
    stage_kind: str = "train"  # train | train_block | finetune

    @property
    def name(self) -> str:
        """``<head>-<feature set>``, as in the stage name (feature set names have no dash)."""
        return f"{self.head}-{self.features}"

    @property
    def predicts_from(self) -> str:
        """What a new image costs this entry: frozen heads and blocks reuse what ``extract``
        stores (the backbone runs once per image, ever); a fine-tuned network reruns it all."""
        return {
            "train": "stored codes",
            "train_block": "stored maps",
            "finetune": "images (whole network)",
        }[self.stage_kind]

    @property
    def stage(self) -> str:
        if self.stage_kind == "finetune":
            return f"finetune@{self.head}"
        return f"{self.stage_kind}@{self.name}"


Metrics = dict[Entry, dict[str, Any]]


class MissingMetricsError(UserError):
    """A train stage's metrics file is absent: that stage has not run."""


def load_metrics(files: dict[Entry, Path]) -> Metrics:
    """Each entry's metrics JSON; every missing file is named with the stage that writes it."""
    missing = [(entry, path) for entry, path in files.items() if not Path(path).is_file()]
    if missing:
        listed = "; ".join(f"{path} (stage {entry.stage})" for entry, path in missing)
        stages = " ".join(entry.stage for entry, _ in missing)
        raise MissingMetricsError(
            f"metrics not found: {listed}; run `dvc repro {stages}`, or `dvc repro` for all"
        )
    return {entry: json.loads(Path(path).read_text()) for entry, path in files.items()}


def load_predictions(files: dict[Entry, Path]) -> dict[Entry, Predictions | None]:
    """Each entry's predictions by image hash (the train stage's CSV); None where missing."""
    predictions: dict[Entry, Predictions | None] = {}
    for entry, path in files.items():
        if not Path(path).is_file():
            predictions[entry] = None
            continue
        with Path(path).open(newline="") as stream:
            rows = csv.DictReader(stream)
            predictions[entry] = {row["sha256"]: (row["actual"], row["predicted"]) for row in rows}
    return predictions


@dataclass(frozen=True)
class Versus:
    """The best entry against one other on the same images: an exact McNemar test, or why
    none was run."""

    best: Entry
    other: Entry
    images: int = 0
    best_only: int = 0  # images the best entry got right and the other did not
    other_only: int = 0
    p_value: float | None = None
    untested: str = ""

    @property
    def points(self) -> float:
        """Accuracy difference on the paired images, in percentage points."""
        return 100.0 * (self.best_only - self.other_only) / self.images

    @property
    def significant(self) -> bool:
        return self.p_value is not None and self.p_value < ALPHA

    def sentence(self) -> str:
        """The result in plain words, for the report."""
        best, other = self.best.name, self.other.name
        if self.p_value is None:
            return f"{best} vs {other}: not tested, {self.untested}."
        verdict = (
            f"significant at {ALPHA}"
            if self.significant
            else f"not distinguishable on these {self.images} images"
        )
        return (
            f"{best} vs {other}: {self.points:.1f} points, p = {self.p_value:.3g} — {verdict} "
            f"({best} alone right on {self.best_only}, {other} alone on {self.other_only})."
        )

    def summary(self) -> dict[str, Any]:
        if self.p_value is None:
            return {"p_value": None, "untested": self.untested}
        return {
            "points": self.points,
            "p_value": self.p_value,
            "significant": self.significant,
            "images": self.images,
        }


def versus_best(best: Entry, other: Entry, predictions: dict[Entry, Predictions | None]) -> Versus:
    """Pair the two entries' predictions image by image (by sha256) and test the difference.

    Entries evaluated on different images, or on different labels for one image, cannot be
    paired: that is reported rather than tested.
    """
    missing = [entry.name for entry in (best, other) if predictions.get(entry) is None]
    if missing:
        return Versus(best, other, untested=f"no predictions for {', '.join(missing)}")
    first, second = predictions[best], predictions[other]
    if first.keys() != second.keys() or any(first[h][0] != second[h][0] for h in first):
        shared = len(first.keys() & second.keys())
        return Versus(
            best,
            other,
            untested=f"evaluated on different images ({len(first)} and {len(second)} images, "
            f"{shared} shared)",
        )
    if not first:
        return Versus(best, other, untested="no evaluated images")
    hashes = sorted(first)
    b, c = discordant_counts(
        [first[h][0] for h in hashes], [first[h][1] for h in hashes], [second[h][1] for h in hashes]
    )
    return Versus(best, other, len(hashes), b, c, mcnemar_exact(b, c))


def rank(metrics: Metrics) -> list[Entry]:
    """The entries, best accuracy first; ties by name."""
    return sorted(metrics, key=lambda entry: (-metrics[entry]["accuracy"], entry.name))


def grid_axes(entries: list[Entry] | Metrics) -> tuple[list[str], list[str]]:
    """The heads (rows) and feature sets (columns) of the accuracy grid, in the order they
    first appear: the caller's order, which is params.yaml's."""
    heads = list(dict.fromkeys(entry.head for entry in entries))
    return heads, list(dict.fromkeys(entry.features for entry in entries))


def against_best(metrics: Metrics, predictions: dict[Entry, Predictions | None]) -> list[Versus]:
    """The best entry (by accuracy) tested against every other, in rank order."""
    best, *others = rank(metrics)
    return [versus_best(best, other, predictions) for other in others]


def _best(metrics: Metrics) -> dict[str, Any] | None:
    if not metrics:
        return None
    best = rank(metrics)[0]
    return {"head": best.head, "features": best.features, "accuracy": metrics[best]["accuracy"]}


def chosen_C(m: dict[str, Any]) -> dict[str, Any]:
    """A linear head's C and how it was set (``sweep`` or ``by hand``); empty for others."""
    probe = m.get("probe")
    if not probe:
        return {}
    return {"C": probe["chosen"], "C_set_by": "by hand" if probe["fixed_by_hand"] else "sweep"}


def summarise(metrics: Metrics, versus: list[Versus]) -> dict[str, Any]:
    """Flat per-entry numbers, best first, keyed like the train stages: what ``dvc metrics
    show`` lists.

    Metrics written before intervals existed give null there; nothing non-finite is kept.
    """
    return json_safe(
        {
            "best": _best(metrics),
            "random_weights": any(m.get("random_weights") for m in metrics.values()),
            "entries": {
                entry.name: {
                    **{key: metrics[entry].get(key) for key in _SUMMARY_KEYS},
                    **chosen_C(metrics[entry]),
                    "predicts_from": entry.predicts_from,
                }
                for entry in rank(metrics)
            },
            "vs_best": {v.other.name: v.summary() for v in versus},
        }
    )
