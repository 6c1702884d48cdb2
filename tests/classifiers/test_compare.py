"""The comparison of (head, feature set) entries: the grid, the best pair, McNemar across
feature sets, the summary for DVC, the heatmap and the report on old metrics."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import matplotlib.image
import numpy as np
import pytest

from classifiers.compare import (
    Entry,
    MissingMetricsError,
    Versus,
    against_best,
    load_metrics,
    summarise,
    versus_best,
)
from classifiers.evaluate import evaluate
from classifiers.plots import plot_accuracy_heatmap
from classifiers.report import write_markdown, write_tradeoff_csv
from features.errors import UserError

CLASSES = ["daisy", "roses", "tulips"]
FC6, FC7 = "vgg16_fc6", "vgg16_fc7"


class _Fixed:
    """A fitted head that answers with given predictions: evaluate() needs only predict."""

    def __init__(self, predicted: list[str]) -> None:
        self.predicted = np.array(predicted)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.predicted


def entry_metrics(entry: Entry, actual: list[str], predicted: list[str]) -> dict[str, Any]:
    """What train@<head>-<feature set> writes, built by the real evaluate()."""
    metrics, _ = evaluate(_Fixed(predicted), np.zeros((len(actual), 1)), np.array(actual), CLASSES)
    metrics.update(
        head=entry.head,
        features=entry.features,
        layer=entry.features.removeprefix("vgg16_"),
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


# 20 images. BEST is wrong on 18 and 19 (accuracy 0.90), OTHER on 0-5 and 19 (0.65),
# THIRD on 0-3 (0.80). BEST vs OTHER: only BEST right on 6 images (McNemar's b), only
# OTHER on 1 (c, image 18). BEST vs THIRD: b = 4 (images 0-3), c = 2 (18, 19).
HASHES = [f"{i:064x}" for i in range(20)]
ACTUAL = [CLASSES[i % 3] for i in range(20)]
BEST = [_wrong(a) if i in (18, 19) else a for i, a in enumerate(ACTUAL)]
OTHER = [_wrong(a) if i < 6 or i == 19 else a for i, a in enumerate(ACTUAL)]
THIRD = [_wrong(a) if i < 4 else a for i, a in enumerate(ACTUAL)]
SVM, LOGREG = Entry("svm", FC6), Entry("logreg", FC6)
SVM7, LOGREG7 = Entry("svm", FC7), Entry("logreg", FC7)


def _grid() -> tuple[dict, dict]:
    """Two heads on two feature sets; the best pair is svm on fc7."""
    answers = {SVM: THIRD, LOGREG: OTHER, SVM7: BEST, LOGREG7: OTHER}
    metrics = {e: entry_metrics(e, ACTUAL, predicted) for e, predicted in answers.items()}
    predictions = {e: _predictions(HASHES, ACTUAL, predicted) for e, predicted in answers.items()}
    return metrics, predictions


def _cell(m: dict) -> str:
    interval = m["accuracy_ci"]
    return f"{m['accuracy']:.3f} [{interval['low']:.3f}, {interval['high']:.3f}]"


def test_entries_are_named_like_their_train_stages() -> None:
    assert SVM7.name == "svm-vgg16_fc7" and SVM7.stage == "train@svm-vgg16_fc7"


def test_mcnemar_pairs_images_by_hash_not_by_row_order() -> None:
    shuffled = _predictions(HASHES[::-1], ACTUAL[::-1], OTHER[::-1])
    versus = versus_best(SVM, LOGREG, {SVM: _predictions(HASHES, ACTUAL, BEST), LOGREG: shuffled})
    assert (versus.images, versus.best_only, versus.other_only) == (20, 6, 1)
    assert versus.p_value == pytest.approx(0.125, abs=1e-12)
    assert versus.points == pytest.approx(25.0)
    assert versus.sentence() == (
        "svm-vgg16_fc6 vs logreg-vgg16_fc6: 25.0 points, p = 0.125 — not distinguishable on "
        "these 20 images (svm-vgg16_fc6 alone right on 6, logreg-vgg16_fc6 alone on 1)."
    )


def test_a_clear_difference_is_reported_significant() -> None:
    versus = Versus(SVM, Entry("mlp", FC6), images=150, best_only=10, other_only=0, p_value=2e-3)
    assert versus.significant
    assert "significant at 0.05" in versus.sentence()


def test_entries_on_different_images_are_not_tested() -> None:
    mlp, relabelled = Entry("mlp", FC6), Entry("x", FC7)
    predictions = {
        SVM: _predictions(HASHES, ACTUAL, BEST),
        LOGREG: _predictions(HASHES[:15], ACTUAL[:15], OTHER[:15]),
        mlp: None,
        relabelled: _predictions(HASHES, ["daisy"] * 20, OTHER),
    }
    different = versus_best(SVM, LOGREG, predictions)
    assert different.p_value is None
    assert different.sentence() == (
        "svm-vgg16_fc6 vs logreg-vgg16_fc6: not tested, evaluated on different images "
        "(20 and 15 images, 15 shared)."
    )
    assert versus_best(SVM, relabelled, predictions).p_value is None
    assert "no predictions for mlp-vgg16_fc6" in versus_best(SVM, mlp, predictions).sentence()


def test_the_best_pair_is_tested_against_every_entry_across_feature_sets() -> None:
    metrics, predictions = _grid()
    versus = {v.other: v for v in against_best(metrics, predictions)}
    assert {v.best for v in versus.values()} == {SVM7}
    assert set(versus) == {SVM, LOGREG, LOGREG7}
    same_head = versus[SVM]  # svm on fc7 vs svm on fc6: the same images, another layer
    assert (same_head.images, same_head.best_only, same_head.other_only) == (20, 4, 2)
    assert same_head.p_value == pytest.approx(44 / 64)
    assert versus[LOGREG].p_value == versus[LOGREG7].p_value == pytest.approx(0.125)


def test_summary_names_the_best_pair_and_keys_entries_like_stages() -> None:
    metrics, predictions = _grid()
    summary = summarise(metrics, against_best(metrics, predictions))
    json.dumps(summary, allow_nan=False)
    assert set(summary) == {"best", "random_weights", "entries", "vs_best"}
    assert summary["best"] == {"head": "svm", "features": FC7, "accuracy": 0.9}
    assert summary["random_weights"] is False
    assert list(summary["entries"]) == [
        "svm-vgg16_fc7",
        "svm-vgg16_fc6",
        "logreg-vgg16_fc6",
        "logreg-vgg16_fc7",
    ]
    assert summary["entries"]["svm-vgg16_fc6"]["accuracy"] == 0.8
    assert summary["entries"]["logreg-vgg16_fc7"]["n_test"] == 20
    assert set(summary["vs_best"]) == {"svm-vgg16_fc6", "logreg-vgg16_fc6", "logreg-vgg16_fc7"}
    assert summary["vs_best"]["svm-vgg16_fc6"] == {
        "points": pytest.approx(10.0),
        "p_value": pytest.approx(44 / 64),
        "significant": False,
        "images": 20,
    }


def _report(tmp_path: Path, metrics: dict, versus: list[Versus]) -> tuple[dict, str]:
    summary = summarise(metrics, versus)
    json.dumps(summary, allow_nan=False)
    write_markdown(tmp_path / "compare.md", metrics, versus)
    return summary, (tmp_path / "compare.md").read_text()


def test_report_opens_with_the_grid_of_heads_by_feature_sets(tmp_path: Path) -> None:
    metrics, predictions = _grid()
    del metrics[LOGREG7]  # an entry not (yet) trained reads n/a in its cell
    _, report = _report(tmp_path, metrics, against_best(metrics, predictions))
    lines = report.splitlines()
    header = lines.index("| head | vgg16_fc6 | vgg16_fc7 |")
    assert lines[header + 1 : header + 4] == [
        "|---|---:|---:|",
        f"| svm | {_cell(metrics[SVM])} | **{_cell(metrics[SVM7])}** |",
        f"| logreg | {_cell(metrics[LOGREG])} | n/a |",
    ]
    assert header < report.index("## Ranking") < report.index("## Is the best pair")
    assert (
        f"Best: **svm** on **vgg16_fc7** (`train@svm-vgg16_fc7`), test accuracy "
        f"{_cell(metrics[SVM7])}." in report
    )
    assert "(`vgg16_fc6` = vgg16 fc6, `vgg16_fc7` = vgg16 fc7)" in report
    assert f"| 2 | svm | vgg16_fc6 | {_cell(metrics[SVM])} |" in report
    assert "### svm-vgg16_fc7" in report and "### logreg-vgg16_fc6" in report


def test_report_with_one_feature_set_has_one_column_and_the_tests(tmp_path: Path) -> None:
    metrics = {SVM: entry_metrics(SVM, ACTUAL, BEST), LOGREG: entry_metrics(LOGREG, ACTUAL, OTHER)}
    predictions = {
        SVM: _predictions(HASHES, ACTUAL, BEST),
        LOGREG: _predictions(HASHES, ACTUAL, OTHER),
    }
    summary, report = _report(tmp_path, metrics, against_best(metrics, predictions))

    interval = summary["entries"]["svm-vgg16_fc6"]["accuracy_ci"]
    assert interval["low"] <= summary["entries"]["svm-vgg16_fc6"]["accuracy"] == 0.9
    assert 0.9 <= interval["high"]
    assert summary["vs_best"]["logreg-vgg16_fc6"]["p_value"] == pytest.approx(0.125)
    assert "| head | vgg16_fc6 |\n|---|---:|\n" in report
    assert f"| svm | **{_cell(metrics[SVM])}** |\n| logreg | {_cell(metrics[LOGREG])} |" in report
    assert "- svm-vgg16_fc6 vs logreg-vgg16_fc6: 25.0 points, p = 0.125 — not" in report
    assert (
        "Best by accuracy: **svm-vgg16_fc6**, but not distinguishable from logreg-vgg16_fc6 "
        "on these images." in report
    )
    assert "| tulips |" in report
    assert "nan" not in report.lower()


def test_a_class_without_test_images_reads_n_a(tmp_path: Path) -> None:
    actual = ["daisy", "roses"] * 5
    summary, report = _report(tmp_path, {SVM: entry_metrics(SVM, actual, actual)}, [])
    assert "| tulips | n/a | n/a | n/a | 0 |" in report
    assert "Only one entry: nothing to compare." in report
    assert summary["entries"]["svm-vgg16_fc6"]["accuracy_ci"] == {"low": 1.0, "high": 1.0}


def test_metrics_from_before_intervals_do_not_crash(tmp_path: Path) -> None:
    """Old JSON: no intervals, layer or per-class scores, even a NaN; the report says n/a."""
    old = entry_metrics(SVM, ACTUAL, BEST)
    for key in ("accuracy_ci", "macro_f1_ci", "bootstrap", "per_class", "layer"):
        del old[key]
    old["balanced_accuracy"] = float("nan")
    summary, report = _report(tmp_path, {SVM: old}, [])
    assert summary["entries"]["svm-vgg16_fc6"]["accuracy_ci"] is None
    assert summary["entries"]["svm-vgg16_fc6"]["balanced_accuracy"] is None
    assert "| svm | **0.900 [n/a]** |" in report and "(`vgg16_fc6`)" in report
    assert "| 1 | svm | vgg16_fc6 | 0.900 [n/a] | n/a |" in report
    assert "Intervals: not recorded" in report and "Not recorded in these metrics" in report
    assert "nan" not in report.lower()


def test_heatmap_is_a_png_of_the_grid(tmp_path: Path) -> None:
    metrics, _ = _grid()
    del metrics[LOGREG7]
    metrics[SVM]["random_weights"] = True
    path = tmp_path / "plots" / "accuracy_heatmap.png"
    plot_accuracy_heatmap(path, metrics)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    height, width, _ = matplotlib.image.imread(path).shape
    assert width > 300 and height > 200
    assert [p.name for p in path.parent.iterdir()] == ["accuracy_heatmap.png"]  # no temp left


def test_tradeoff_csv_has_every_entry_with_its_feature_set(tmp_path: Path) -> None:
    metrics, _ = _grid()
    write_tradeoff_csv(tmp_path / "tradeoff.csv", metrics)
    with (tmp_path / "tradeoff.csv").open(newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert [(r["head"], r["features"], float(r["accuracy"])) for r in rows] == [
        ("svm", FC7, 0.9),
        ("svm", FC6, 0.8),
        ("logreg", FC6, 0.65),
        ("logreg", FC7, 0.65),
    ]
    assert {r["fit_seconds"] for r in rows} == {"0.5"}


def test_missing_metrics_name_every_file_and_the_stage_that_writes_it(tmp_path: Path) -> None:
    present = tmp_path / FC6 / "svm.json"
    present.parent.mkdir()
    present.write_text(json.dumps({"accuracy": 0.5}))
    files = {SVM: present, SVM7: tmp_path / FC7 / "svm.json", LOGREG7: tmp_path / FC7 / "x.json"}
    with pytest.raises(MissingMetricsError) as raised:
        load_metrics(files)
    message = str(raised.value)
    assert isinstance(raised.value, UserError)
    assert f"{tmp_path / FC7 / 'svm.json'} (stage train@svm-vgg16_fc7)" in message
    assert f"{tmp_path / FC7 / 'x.json'} (stage train@logreg-vgg16_fc7)" in message
    assert "dvc repro train@svm-vgg16_fc7 train@logreg-vgg16_fc7" in message
    assert "train@svm-vgg16_fc6" not in message
    assert load_metrics({SVM: present}) == {SVM: {"accuracy": 0.5}}


def test_frozen_block_and_finetuned_rows_sit_in_one_table_with_their_cost(tmp_path: Path) -> None:
    block, tuned = (
        Entry("block", "vgg16_pool5_map", "train_block"),
        Entry("top", "finetune", "finetune"),
    )
    answers = {SVM: THIRD, block: OTHER, tuned: BEST}
    metrics = {e: entry_metrics(e, ACTUAL, predicted) for e, predicted in answers.items()}
    predictions = {e: _predictions(HASHES, ACTUAL, predicted) for e, predicted in answers.items()}
    summary, report = _report(tmp_path, metrics, against_best(metrics, predictions))
    assert summary["best"] == {"head": "top", "features": "finetune", "accuracy": 0.9}
    assert summary["entries"]["top-finetune"]["predicts_from"] == "images (whole network)"
    assert summary["entries"]["svm-vgg16_fc6"]["predicts_from"] == "stored codes"
    assert f"| 1 | top | finetune | {_cell(metrics[tuned])} |" in report
    rows = {line.split(" | ")[1]: line for line in report.splitlines() if line.startswith("| ")}
    assert "| images (whole network) |" in rows["top"]
    assert "| stored maps |" in rows["block"] and "| stored codes |" in rows["svm"]
    assert "must run it for every new image" in report
    assert {v.other for v in against_best(metrics, predictions)} == {SVM, block}
