"""The comparison report: intervals, McNemar sentences, per-class tables, old metrics."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from classifiers.compare import Versus, against_best, summarise, versus_best
from classifiers.evaluate import evaluate
from classifiers.report import write_markdown
from pipeline import compare
from tests.conftest import TEST_PARAMS

CLASSES = ["daisy", "roses", "tulips"]


class _Fixed:
    """A fitted head that answers with given predictions: evaluate() needs only predict."""

    def __init__(self, predicted: list[str]) -> None:
        self.predicted = np.array(predicted)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.predicted


def _head_metrics(head: str, actual: list[str], predicted: list[str]) -> dict[str, Any]:
    """What train@<head> writes, built by the real evaluate()."""
    metrics, _ = evaluate(_Fixed(predicted), np.zeros((len(actual), 1)), np.array(actual), CLASSES)
    metrics.update(
        head=head,
        fit_seconds=0.5,
        model_bytes=2048,
        n_train=100,
        n_test=metrics.pop("n"),
        backbone="vgg16",
        weights="imagenet",
        random_weights=False,
    )
    return metrics


def _predictions(hashes: list[str], actual: list[str], predicted: list[str]) -> dict:
    return {h: (a, p) for h, a, p in zip(hashes, actual, predicted, strict=True)}


def _wrong(label: str) -> str:
    return CLASSES[(CLASSES.index(label) + 1) % len(CLASSES)]


# 20 images. best is wrong on 18 and 19, other on 0-5 and 19: only best is right on 6
# images (McNemar's b), only other on 1 (c, image 18); accuracies 0.90 and 0.65.
HASHES = [f"{i:064x}" for i in range(20)]
ACTUAL = [CLASSES[i % 3] for i in range(20)]
BEST = [_wrong(a) if i in (18, 19) else a for i, a in enumerate(ACTUAL)]
OTHER = [_wrong(a) if i < 6 or i == 19 else a for i, a in enumerate(ACTUAL)]


def test_mcnemar_pairs_images_by_hash_not_by_row_order() -> None:
    shuffled = _predictions(HASHES[::-1], ACTUAL[::-1], OTHER[::-1])
    versus = versus_best(
        "svm", "logreg", {"svm": _predictions(HASHES, ACTUAL, BEST), "logreg": shuffled}
    )
    assert (versus.images, versus.best_only, versus.other_only) == (20, 6, 1)
    assert versus.p_value == pytest.approx(0.125, abs=1e-12)
    assert versus.points == pytest.approx(25.0)
    assert versus.sentence() == (
        "svm vs logreg: 25.0 points, p = 0.125 — not distinguishable on these 20 images "
        "(svm alone right on 6, logreg alone on 1)."
    )


def test_a_clear_difference_is_reported_significant() -> None:
    versus = Versus("svm", "mlp", images=150, best_only=10, other_only=0, p_value=2 / 1024)
    assert versus.significant
    assert "significant at 0.05" in versus.sentence()


def test_heads_on_different_images_are_not_tested() -> None:
    predictions = {
        "svm": _predictions(HASHES, ACTUAL, BEST),
        "logreg": _predictions(HASHES[:15], ACTUAL[:15], OTHER[:15]),
        "mlp": None,
    }
    different = versus_best("svm", "logreg", predictions)
    assert different.p_value is None
    assert different.sentence() == (
        "svm vs logreg: not tested, evaluated on different images (20 and 15 images, 15 shared)."
    )
    relabelled = _predictions(HASHES, ["daisy"] * 20, OTHER)
    assert versus_best("svm", "x", {**predictions, "x": relabelled}).p_value is None
    assert "no predictions for mlp" in versus_best("svm", "mlp", predictions).sentence()


def _report(tmp_path: Path, metrics: dict, versus: list[Versus]) -> tuple[dict, str]:
    summary = summarise(metrics, versus)
    json.dumps(summary, allow_nan=False)
    write_markdown(tmp_path / "compare.md", metrics, versus)
    return summary, (tmp_path / "compare.md").read_text()


def test_report_shows_intervals_tests_and_per_class_tables(tmp_path: Path) -> None:
    metrics = {
        "svm": _head_metrics("svm", ACTUAL, BEST),
        "logreg": _head_metrics("logreg", ACTUAL, OTHER),
    }
    predictions = {
        "svm": _predictions(HASHES, ACTUAL, BEST),
        "logreg": _predictions(HASHES, ACTUAL, OTHER),
    }
    summary, report = _report(tmp_path, metrics, against_best(metrics, predictions))

    interval = summary["heads"]["svm"]["accuracy_ci"]
    assert interval["low"] <= summary["heads"]["svm"]["accuracy"] == 0.9 <= interval["high"]
    assert summary["vs_best"]["logreg"]["p_value"] == pytest.approx(0.125)
    assert summary["vs_best"]["logreg"]["significant"] is False
    assert f"| 1 | svm | 0.900 [{interval['low']:.3f}, {interval['high']:.3f}] |" in report
    assert "- svm vs logreg: 25.0 points, p = 0.125 — not distinguishable" in report
    assert (
        "Best by accuracy: **svm**, but not distinguishable from logreg on these images." in report
    )
    assert "### logreg" in report and "| tulips |" in report
    assert "nan" not in report.lower()


def test_a_class_without_test_images_reads_n_a(tmp_path: Path) -> None:
    actual = ["daisy", "roses"] * 5
    metrics = {"svm": _head_metrics("svm", actual, actual)}
    summary, report = _report(tmp_path, metrics, [])
    assert "| tulips | n/a | n/a | n/a | 0 |" in report
    assert "Only one head: nothing to compare." in report
    assert summary["heads"]["svm"]["accuracy_ci"] == {"low": 1.0, "high": 1.0}


def test_metrics_from_before_intervals_do_not_crash(tmp_path: Path) -> None:
    """Old JSON: no intervals, no per-class scores, even a NaN; the report says n/a."""
    old = _head_metrics("svm", ACTUAL, BEST)
    for key in ("accuracy_ci", "macro_f1_ci", "bootstrap", "per_class"):
        del old[key]
    old["balanced_accuracy"] = float("nan")
    summary, report = _report(tmp_path, {"svm": old}, [])
    assert summary["heads"]["svm"]["accuracy_ci"] is None
    assert summary["heads"]["svm"]["balanced_accuracy"] is None
    assert "| 1 | svm | 0.900 [n/a] | n/a |" in report
    assert "Intervals: not recorded" in report and "Not recorded in these metrics" in report
    assert "nan" not in report.lower()


def test_compare_stage_reads_predictions_from_params_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    params = {**TEST_PARAMS, "heads": {"svm": {}, "logreg": {}}}
    Path("params.yaml").write_text(yaml.safe_dump(params))
    for head, predicted in (("svm", BEST), ("logreg", OTHER)):
        metrics_path = Path("metrics/heads") / f"{head}.json"
        metrics_path.parent.mkdir(parents=True, exist_ok=True)
        metrics_path.write_text(json.dumps(_head_metrics(head, ACTUAL, predicted)))
        csv_path = Path(params["paths"]["predictions"]) / f"{head}.csv"
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        with csv_path.open("w", newline="") as stream:
            writer = csv.writer(stream)
            writer.writerow(["sha256", "actual", "predicted"])
            writer.writerows(zip(HASHES, ACTUAL, predicted, strict=True))
    argv = ["--metrics", "metrics/heads", "--summary", "summary.json", "--report", "compare.md"]
    argv += ["--plots", "plots", "--tradeoff", "tradeoff.csv"]

    compare.main(argv)

    summary = json.loads(Path("summary.json").read_text())
    assert summary["best"] == "svm" and summary["vs_best"]["logreg"]["images"] == 20
    assert "svm vs logreg: 25.0 points" in Path("compare.md").read_text()
