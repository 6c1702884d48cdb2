"""Stage ``compare`` on params with two feature sets: it finds every train stage's files
under the given roots, writes one plot per entry, and names a missing stage."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from classifiers.compare import Entry
from pipeline import compare
from pipeline.cli import run
from tests.classifiers.test_compare import ACTUAL, BEST, HASHES, OTHER, THIRD, entry_metrics
from tests.conftest import TEST_PARAMS

FEATURES = {"vgg16_fc6": {"backbone": "vgg16", "layer": "fc6"}}
FEATURES["vgg16_fc7"] = {"backbone": "vgg16", "layer": "fc7"}
ANSWERS = {
    Entry("svm", "vgg16_fc6"): THIRD,
    Entry("logreg", "vgg16_fc6"): OTHER,
    Entry("svm", "vgg16_fc7"): BEST,
    Entry("logreg", "vgg16_fc7"): OTHER,
}
ARGV = ["--metrics", "m", "--predictions", "p", "--summary", "summary.json"]
ARGV += ["--report", "compare.md", "--plots", "plots", "--tradeoff", "tradeoff.csv"]


def _write_train_outputs(entry: Entry, predicted: list[str]) -> None:
    """What train@<head>-<feature set> leaves under the roots m/ and p/."""
    metrics = Path("m") / entry.features / f"{entry.head}.json"
    metrics.parent.mkdir(parents=True, exist_ok=True)
    metrics.write_text(json.dumps(entry_metrics(entry, ACTUAL, predicted)))
    predictions = Path("p") / entry.features / f"{entry.head}.csv"
    predictions.parent.mkdir(parents=True, exist_ok=True)
    with predictions.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["sha256", "actual", "predicted"])
        writer.writerows(zip(HASHES, ACTUAL, predicted, strict=True))


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    params = {**TEST_PARAMS, "heads": {"svm": {}, "logreg": {}}, "features": FEATURES}
    Path("params.yaml").write_text(yaml.safe_dump(params))
    for entry, predicted in ANSWERS.items():
        _write_train_outputs(entry, predicted)
    return tmp_path


def test_compare_stage_compares_every_head_on_every_feature_set(project: Path) -> None:
    compare.main(ARGV)

    summary = json.loads(Path("summary.json").read_text())
    assert summary["best"] == {"head": "svm", "features": "vgg16_fc7", "accuracy": 0.9}
    assert set(summary["entries"]) == {e.name for e in ANSWERS}
    assert summary["vs_best"]["svm-vgg16_fc6"]["images"] == 20
    report = Path("compare.md").read_text()
    assert "| head | vgg16_fc6 | vgg16_fc7 |" in report
    assert "svm-vgg16_fc7 vs logreg-vgg16_fc6: 25.0 points" in report
    plots = sorted(p.name for p in Path("plots").iterdir())
    assert plots == [
        "accuracy_heatmap.png",
        "accuracy_vs_fit_time.png",
        *sorted(f"confusion_{e.name}.png" for e in ANSWERS),
    ]
    with Path("tradeoff.csv").open(newline="") as stream:
        assert len(list(csv.DictReader(stream))) == 4


def test_a_missing_metrics_file_names_it_and_its_stage(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    Path("m/vgg16_fc7/logreg.json").unlink()
    with pytest.raises(SystemExit) as exited:
        run(compare.main, ARGV)
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert "m/vgg16_fc7/logreg.json (stage train@logreg-vgg16_fc7)" in error
    assert not Path("summary.json").exists()
