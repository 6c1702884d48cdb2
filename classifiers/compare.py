"""Compare heads: load their metrics and predictions, pair them, and summarise for DVC.

Every score comes with its bootstrap interval, and the best head is tested against each
other head on the same images, so a difference that is noise reads as noise.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from classifiers.stats import discordant_counts, json_safe, mcnemar_exact

__all__ = [
    "ALPHA",
    "Predictions",
    "Versus",
    "against_best",
    "load_head_metrics",
    "load_predictions",
    "rank_heads",
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
    "fit_seconds",
    "predict_ms_per_1000",
    "model_bytes",
    "n_train",
    "n_test",
)

Predictions = dict[str, tuple[str, str]]  # image sha256 -> (actual, predicted)


def load_head_metrics(directory: Path, heads: list[str]) -> dict[str, dict[str, Any]]:
    metrics = {}
    for head in heads:
        path = Path(directory) / f"{head}.json"
        if not path.is_file():
            raise FileNotFoundError(f"metrics for head {head!r} not found at {path}")
        metrics[head] = json.loads(path.read_text())
    return metrics


def load_predictions(directory: Path, heads: list[str]) -> dict[str, Predictions | None]:
    """Each head's predictions by image hash (the train stage's CSVs); None where missing."""
    predictions: dict[str, Predictions | None] = {}
    for head in heads:
        path = Path(directory) / f"{head}.csv"
        if not path.is_file():
            predictions[head] = None
            continue
        with path.open(newline="") as stream:
            rows = csv.DictReader(stream)
            predictions[head] = {row["sha256"]: (row["actual"], row["predicted"]) for row in rows}
    return predictions


@dataclass(frozen=True)
class Versus:
    """The best head against one other on the same images: an exact McNemar test, or why
    none was run."""

    best: str
    other: str
    images: int = 0
    best_only: int = 0  # images the best head got right and the other did not
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
        pair = f"{self.best} vs {self.other}"
        if self.p_value is None:
            return f"{pair}: not tested, {self.untested}."
        verdict = (
            f"significant at {ALPHA}"
            if self.significant
            else f"not distinguishable on these {self.images} images"
        )
        return (
            f"{pair}: {self.points:.1f} points, p = {self.p_value:.3g} — {verdict} "
            f"({self.best} alone right on {self.best_only}, {self.other} alone on "
            f"{self.other_only})."
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


def versus_best(best: str, other: str, predictions: dict[str, Predictions | None]) -> Versus:
    """Pair the two heads' predictions image by image (by sha256) and test the difference.

    Heads evaluated on different images, or on different labels for one image, cannot be
    paired: that is reported rather than tested.
    """
    missing = [head for head in (best, other) if predictions[head] is None]
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
    hashes = sorted(first)
    b, c = discordant_counts(
        [first[h][0] for h in hashes], [first[h][1] for h in hashes], [second[h][1] for h in hashes]
    )
    return Versus(best, other, len(hashes), b, c, mcnemar_exact(b, c))


def rank_heads(metrics: dict[str, dict[str, Any]]) -> list[str]:
    """Head names, best accuracy first; ties by name."""
    return sorted(metrics, key=lambda head: (-metrics[head]["accuracy"], head))


def against_best(
    metrics: dict[str, dict[str, Any]], predictions: dict[str, Predictions | None]
) -> list[Versus]:
    """The best head (by accuracy) tested against every other, in rank order."""
    best, *others = rank_heads(metrics)
    return [versus_best(best, other, predictions) for other in others]


def summarise(metrics: dict[str, dict[str, Any]], versus: list[Versus]) -> dict[str, Any]:
    """Flat per-head numbers, best head first: what ``dvc metrics show`` lists.

    Metrics written before intervals existed give null there; nothing non-finite is kept.
    """
    ranked = rank_heads(metrics)
    random = any(m.get("random_weights") for m in metrics.values())
    return json_safe(
        {
            "best": ranked[0] if ranked else None,
            "random_weights": random,
            "heads": {
                head: {key: metrics[head].get(key) for key in _SUMMARY_KEYS} for head in ranked
            },
            "vs_best": {v.other: v.summary() for v in versus},
        }
    )
