"""``reports/index.html`` from hand-written stage outputs: every section renders, mistakes
come most confident first, labels are escaped, the page stays small, no audit is fine."""

from __future__ import annotations

import base64
import csv
import io
import os
import re
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
from PIL import Image

from classifiers.html import Sources, build_page, render, write_page
from classifiers.html.gather import MAX_MISTAKES
from classifiers.html.page import RANDOM_WEIGHTS_WARNING
from classifiers.html.thumbnails import THUMB_SIDE, thumbnail
from features.data.manifest import ManifestRow, write_manifest
from features.data.synthetic import make_dataset
from features.errors import UserError
from features.files import file_sha256, write_json
from pipeline import html_report
from pipeline.workspace import PROJECT_ROOT

BEST, OLD = "logreg-vgg16_fc7", "svm-vgg16_fc6"
SCRIPT = "<script>alert(1)</script>"
# Mistakes of the best head: (image index, confidence); most confident first on the page.
MISTAKES = [(0, "0.55"), (1, "0.95"), (2, "nan"), (3, "0.75")]
EXPECTED_ORDER = [1, 3, 0, 2]


def _write_csv(path: Path, header: list[str], rows: list[list[object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as stream:
        csv.writer(stream).writerows([header, *rows])


def _summary(random_weights: bool) -> dict[str, object]:
    best = {
        "accuracy": 0.75,
        "accuracy_ci": {"low": 0.5, "high": 0.9},
        "macro_f1": 0.7,
        "macro_f1_ci": {"low": 0.45, "high": 0.88},
        "C": 0.01,
        "C_set_by": "sweep",
        "n_test": 13,
        "without_leaked": {"accuracy": 0.8125, "n": 11},
    }
    old = {"accuracy": 0.5, "accuracy_ci": {"low": None, "high": 0.7}, "macro_f1": None}
    return {
        "best": {"head": "logreg", "features": "vgg16_fc7", "accuracy": 0.75},
        "random_weights": random_weights,
        "entries": {BEST: best, OLD: old},
        "vs_best": {OLD: {"points": 25.0, "p_value": 0.03, "significant": True, "images": 13}},
    }


def _write_audit(folder: Path, rows: list[ManifestRow]) -> None:
    columns = "sha256,path,label,split,group,leaked,label_issue,label_quality"
    columns += ",predicted_label,outlier_score,outlier"
    records = [
        [r.sha256, r.path, r.label, r.split, "", 0, int(i == 5), 0.05 * i if i % 4 else "",
         SCRIPT if i == 5 else r.label, i / 20, int(i == 7)]
        for i, r in enumerate(rows)
    ]  # fmt: skip
    _write_csv(folder / "images.csv", columns.split(","), records)
    members = [
        {"sha256": r.sha256, "path": r.path, "label": r.label, "split": r.split} for r in rows
    ]
    groups = [
        {"id": 1, "leaks": False, "members": members[4:6]},
        {"id": 0, "leaks": True, "members": members[6:8]},
    ]
    write_json(folder / "groups.json", {"max_hamming": 6, "groups": groups})


def make_report_inputs(root: Path, random_weights: bool = True, audit: bool = True) -> Sources:
    """Every input of the page, as the stages would leave them under ``root``: 12 shapes
    and one file that is not an image, the best head's predictions with confidence, an old
    predictions file without, two plots and (optionally) an audit."""
    data = root / "data" / "shapes"
    files = make_dataset(data, per_class=3)
    broken = data / "circles" / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    rows = [
        ManifestRow(path.relative_to(data).as_posix(), file_sha256(path), path.parent.name,
                    "test" if i % 2 else "train")
        for i, path in enumerate([*files, broken])
    ]  # fmt: skip
    sources = Sources(
        root / "summary.json", root / "metrics", root / "predictions", root / "plots",
        root / "manifest.csv", data, root / "audit",
    )  # fmt: skip
    write_manifest(sources.manifest, rows)
    write_json(sources.summary, _summary(random_weights))
    per_class = {"circles": {"precision": 1.0, "recall": float("nan"), "f1": 0.5, "support": 3}}
    write_json(sources.metrics / "vgg16_fc7" / "logreg.json",
               {"evaluated_on": "test", "per_class": per_class})  # fmt: skip
    wrong = dict(MISTAKES) | {len(rows) - 1: "0.5"}
    _write_csv(
        sources.predictions / "vgg16_fc7" / "logreg.csv",
        ["sha256", "actual", "predicted", "confidence"],
        [[r.sha256, r.label, SCRIPT if i in wrong else r.label, wrong.get(i, "0.9")]
         for i, r in enumerate(rows)],
    )  # fmt: skip
    _write_csv(
        sources.predictions / "vgg16_fc6" / "svm.csv",
        ["sha256", "actual", "predicted"],
        [[r.sha256, r.label, "squares" if i in (1, 6, 9) else r.label] for i, r in enumerate(rows)],
    )
    for name in ("accuracy_heatmap", f"confusion_{BEST}"):
        sources.plots.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (64, 48), "navy").save(sources.plots / f"{name}.png")
    if audit:
        _write_audit(sources.audit, rows)
    return sources


def _section(html: str, anchor: str) -> str:
    """The part of the page from the heading with ``id=anchor`` to the next ``<h2``."""
    start = html.index(f'id="{anchor}"')
    end = html.find("<h2", start)
    return html[start : end if end >= 0 else len(html)]


def _visible(html: str) -> str:
    """The page without its data URIs, whose base64 could spell anything."""
    return re.sub(r"data:[^\"]+", "", html)


@pytest.fixture
def sources(tmp_path: Path) -> Sources:
    return make_report_inputs(tmp_path)


def test_page_shows_leaderboard_intervals_and_leak_free_figure(sources: Sources) -> None:
    html = render(build_page(sources))
    board = _section(html, "leaderboard")
    assert board.index(BEST) < board.index(OLD)
    assert '75.0\u00a0% <span class="ci">[50.0\u00a0%, 90.0\u00a0%]' in board
    assert "0.01 (sweep)" in board
    assert "81.2\u00a0% (n=11)" in board
    assert "p=0.030 (significant)" in board
    assert not re.search(r"\b(nan|inf|infinity)\b", _visible(html), re.IGNORECASE)
    assert board.count("n/a") == 4  # the old entry: a low bound, macro-F1 and its interval
    assert html.count("data:image/png;base64,") == 2


def test_banner_only_for_random_weights(tmp_path: Path) -> None:
    random_page = render(build_page(make_report_inputs(tmp_path / "random")))
    trained = render(build_page(make_report_inputs(tmp_path / "trained", random_weights=False)))
    assert RANDOM_WEIGHTS_WARNING in random_page
    assert 'id="random-weights"' not in trained


def test_mistakes_most_confident_first_with_confidence(sources: Sources) -> None:
    html = render(build_page(sources))
    mistakes = _section(html, f"mistakes-{BEST}")
    paths = [f"circles/circles_{i:04d}.jpg" for i in range(3)] + ["squares/squares_0000.jpg"]
    positions = [mistakes.index(f'title="{paths[i]}"') for i in EXPECTED_ORDER]
    assert positions == sorted(positions)
    assert "confidence: 95.0\u00a0%" in mistakes
    assert "5 of 13 test images misclassified" in mistakes
    assert "cannot show broken.jpg" in mistakes  # undecodable: a placeholder and a note


def test_old_predictions_keep_file_order_without_confidence(sources: Sources) -> None:
    html = render(build_page(sources, [OLD]))
    mistakes = _section(html, f"mistakes-{OLD}")
    order = ["circles/circles_0001.jpg", "stripes/stripes_0000.jpg", "triangles/triangles_0000.jpg"]
    positions = [mistakes.index(path) for path in order]
    assert positions == sorted(positions)
    assert "no confidence column" in mistakes
    assert "confidence:" not in mistakes


def test_labels_are_escaped(sources: Sources) -> None:
    html = render(build_page(sources))
    assert SCRIPT not in html and "<script" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_audit_lists_leaks_first_and_ranks_labels_and_outliers(sources: Sources) -> None:
    audit = _section(render(build_page(sources)), "audit")
    assert audit.index("group 0") < audit.index("group 1")  # the leaking group first
    assert "1 spanning splits (leakage)" in audit
    page = build_page(sources)
    assert page.audit is not None
    qualities = [item.label_quality for item in page.audit.label_errors]
    assert page.audit.label_errors[0].flagged and qualities[1:] == sorted(qualities[1:])
    scores = [item.outlier_score for item in page.audit.outliers]
    assert scores == sorted(scores, reverse=True)


def test_no_audit_dir_still_renders(tmp_path: Path) -> None:
    html = render(build_page(make_report_inputs(tmp_path, audit=False)))
    assert 'id="no-audit"' in html and "No audit run" in html


def test_lists_are_capped_with_the_count_of_the_rest(sources: Sources) -> None:
    unknown = [[f"{i:064x}", "circles", "squares", "0.5"] for i in range(MAX_MISTAKES + 7)]
    _write_csv(
        sources.predictions / "vgg16_fc7" / "logreg.csv",
        ["sha256", "actual", "predicted", "confidence"],
        unknown,
    )
    page = build_page(sources)
    assert len(page.heads[0].mistakes) == MAX_MISTAKES and page.heads[0].more == 7
    assert page.heads[0].mistakes[0].image.thumb.note == "not in the manifest"
    assert "and 7 more mistakes not shown" in render(page)


def test_thumbnails_are_small_and_the_page_bounded(sources: Sources, tmp_path: Path) -> None:
    big = tmp_path / "big.jpg"
    Image.new("RGB", (1600, 900), "olive").save(big, quality=95)
    uri = thumbnail(big).uri
    with Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) as small:
        assert small.format == "JPEG" and max(small.size) == THUMB_SIDE
    size = write_page(tmp_path / "index.html", build_page(sources, [OLD]))
    assert size == (tmp_path / "index.html").stat().st_size < 100_000


def _stage_argv(sources: Sources, out: Path) -> list[str]:
    """The stage's command line; its options are named after the fields of Sources."""
    options = {**asdict(sources), "out": out}
    return [str(arg) for name, value in options.items() for arg in (f"--{name}", value)]


def test_stage_writes_the_page_and_names_an_unknown_head(
    sources: Sources, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = _stage_argv(sources, tmp_path / "index.html")
    html_report.main([*argv, "--head", OLD])
    assert f'id="mistakes-{OLD}"' in (tmp_path / "index.html").read_text()
    assert "MB, 8 mistakes shown, 2 groups" in capsys.readouterr().out
    with pytest.raises(UserError, match="choose from"):
        html_report.main([*argv, "--head", "knn-vgg16_fc6"])


def test_stage_writes_only_through_temporary_files(sources: Sources, tmp_path: Path) -> None:
    command = ["python", "-m", "pipeline.html_report", *_stage_argv(sources, tmp_path / "i.html")]
    guard = [sys.executable, "-m", "tests.write_guard", "--root", str(tmp_path), "--", *command]
    done = subprocess.run(guard, env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "i.html").read_text().endswith("</html>\n")


def test_json_summary_missing_is_a_user_error(sources: Sources) -> None:
    sources.summary.unlink()
    with pytest.raises(UserError, match="dvc repro compare"):
        build_page(sources)
