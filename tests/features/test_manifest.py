"""Manifest: duplicates computed once, conflicts left out, unusable datasets refused, safe paths."""

from __future__ import annotations

import csv
import gc
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from features.data.images import ImageLimits
from features.data.manifest import (
    ManifestRow,
    build_manifest,
    read_manifest,
    write_files_csv,
    write_manifest,
)
from features.data.scan import FileOutcome, scan_dataset
from features.errors import UserError

LIMITS = ImageLimits()
REPO = Path(__file__).resolve().parents[2]


def _image(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, size=(24, 32, 3), dtype=np.uint8)).save(path)
    return path


def _manifest(root: Path, test_fraction: float = 0.5):
    outcomes, predefined = scan_dataset(root, LIMITS, n_jobs=1)
    return build_manifest(outcomes, root, predefined, "salt", test_fraction)


def test_same_bytes_under_two_labels_is_a_conflict_and_left_out(tmp_path):
    root = tmp_path / "data"
    shared = _image(root / "cats" / "shared.jpg", 1)
    (root / "dogs").mkdir()
    (root / "dogs" / "copy of shared.jpg").write_bytes(shared.read_bytes())
    _image(root / "cats" / "a.jpg", 2)
    _image(root / "dogs" / "b.jpg", 3)
    rows, outcomes, report = _manifest(root)
    found = {o.path: o for o in outcomes}
    for path in ("cats/shared.jpg", "dogs/copy of shared.jpg"):
        assert (found[path].bucket, found[path].reason) == ("skipped", "label_conflict")
    assert "dogs/copy of shared.jpg" in found["cats/shared.jpg"].detail
    assert found["cats/shared.jpg"].sha256 not in {row.sha256 for row in rows}
    (conflict,) = report.conflicts
    assert conflict["labels"] == ["cats", "dogs"]
    assert report.skipped == {"label_conflict": 2}
    assert [group["conflict"] for group in report.duplicates] == [True]


def test_same_bytes_under_one_label_is_one_image_computed_once(tmp_path):
    root = tmp_path / "data"
    original = _image(root / "cats" / "a.jpg", 1)
    (root / "cats" / "z_copy.jpg").write_bytes(original.read_bytes())
    _image(root / "dogs" / "b.jpg", 2)
    rows, outcomes, report = _manifest(root)
    assert {o.bucket for o in outcomes} == {"used"}
    assert sorted(row.path for row in rows) == ["cats/a.jpg", "dogs/b.jpg"]
    (group,) = report.duplicates
    assert (group["kept"], group["conflict"]) == ("cats/a.jpg", False)
    assert "duplicate of cats/a.jpg" in {o.path: o for o in outcomes}["cats/z_copy.jpg"].detail


def test_report_counts_every_file_once(tmp_path):
    root = tmp_path / "data"
    _image(root / "cats" / "a.jpg", 1)
    _image(root / "dogs" / "b.jpg", 2)
    (root / "dogs" / "empty.jpg").write_bytes(b"")
    (root / "dogs" / ".DS_Store").write_bytes(b"Bud1")
    _, outcomes, report = _manifest(root)
    assert report.files == {"total": 4, "used": 2, "ignored": 1, "skipped": 1}
    assert report.ignored == {"hidden_or_system": 1}
    assert report.skipped == {"empty": 1}
    summary = report.summary()
    assert "4 files -> 2 used, 1 ignored, 1 skipped" in summary
    assert "skipped: empty 1" in summary
    write_files_csv(tmp_path / "files.csv", outcomes)
    with open(tmp_path / "files.csv", newline="", encoding="utf-8") as stream:
        records = list(csv.DictReader(stream))
    assert sorted(r["path"] for r in records) == sorted(o.path for o in outcomes)
    assert {r["path"]: r["reason"] for r in records}["dogs/empty.jpg"] == "empty"


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ({"cats": 2, "dogs": 0}, r"class folder\(s\) \['dogs'\].*no usable images"),
        ({"cats": 2, "dogs": -1}, r"class folder\(s\) \['dogs'\].*no usable images"),
        ({"cats": -1, "dogs": -1}, "no usable images under"),
        ({}, "no usable images under"),
        ({"cats": 3}, r"only one class \('cats'\).*at least two"),
    ],
    ids=["empty-class", "class-of-junk-only", "no-images", "no-folders", "single-class"],
)
def test_unusable_datasets_are_user_errors(tmp_path, layout, message):
    """``n`` images per class; -1 means the folder holds only junk (.DS_Store, a text file)."""
    root = tmp_path / "data"
    root.mkdir()
    (root / "notes.txt").write_text("a folder with no images")
    seed = 0
    for label, count in layout.items():
        (root / label).mkdir()
        if count < 0:
            (root / label / ".DS_Store").write_bytes(b"Bud1")
            (root / label / "broken.jpg").write_text("not an image")
        for index in range(max(count, 0)):
            seed += 1
            _image(root / label / f"{index}.jpg", seed)
    with pytest.raises(UserError, match=message):
        _manifest(root)


@pytest.mark.parametrize("bad", ["/etc/passwd", "../outside.jpg", "cats/../../outside.jpg", ""])
def test_manifest_refuses_paths_that_leave_the_root(tmp_path, bad):
    row = ManifestRow(bad, "0" * 64, "cats", "train")
    with pytest.raises(UserError, match=r"not relative to data\.root"):
        write_manifest(tmp_path / "manifest.csv", [row])
    assert not (tmp_path / "manifest.csv").exists()
    with pytest.raises(UserError, match=r"not relative to data\.root"):
        write_files_csv(tmp_path / "files.csv", [FileOutcome(bad, "used")])
    # A hand-edited manifest is refused on read, before extraction could open the path.
    (tmp_path / "edited.csv").write_text(f"path,sha256,label,split\n{bad},{'0' * 64},cats,train\n")
    with pytest.raises(UserError, match=r"not relative to data\.root"):
        read_manifest(tmp_path / "edited.csv")


def test_manifest_round_trip(tmp_path):
    root = tmp_path / "data"
    _image(root / "cats" / "a, with comma.jpg", 1)
    _image(root / "dogs" / 'b "quoted".jpg', 2)
    rows, _, _ = _manifest(root)
    write_manifest(tmp_path / "manifest.csv", rows)
    assert read_manifest(tmp_path / "manifest.csv") == rows


def test_a_row_with_the_wrong_number_of_fields_is_refused_with_its_line(tmp_path):
    good = f"cats/a.jpg,{'0' * 64},cats,train"
    (tmp_path / "edited.csv").write_text(f"path,sha256,label,split\n{good}\n{good},extra\n")
    with pytest.raises(UserError, match=r"line 3: 5 fields, expected 4"):
        read_manifest(tmp_path / "edited.csv")


def test_read_manifest_restores_the_garbage_collector(tmp_path):
    rows = [ManifestRow(f"c{i % 3}/{i}.jpg", f"{i:064x}", f"c{i % 3}", "train") for i in range(50)]
    write_manifest(tmp_path / "manifest.csv", rows)
    assert gc.isenabled()
    assert read_manifest(tmp_path / "manifest.csv") == rows
    assert gc.isenabled()
    gc.disable()
    try:
        read_manifest(tmp_path / "manifest.csv")
        assert not gc.isenabled()  # a caller's choice is left as it was
    finally:
        gc.enable()


def test_reading_a_manifest_imports_no_torch():
    """A process that only reads a manifest (extract's lock check, train, a bench step)
    does not pay ~500 MiB and ~3 s for torch, which ``features.data.preprocess`` needs."""
    code = (
        "import sys\n"
        "import features.data.manifest, features.data\n"
        "from features.data import read_manifest, ScanCache\n"
        "heavy = sorted(m for m in ('torch', 'torchvision', 'sklearn') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
        "import features.data.preprocess\n"
        "assert 'torch' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_missing_manifest_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="run the prepare stage"):
        read_manifest(tmp_path / "manifest.csv")


def test_warnings_name_the_split_that_will_be_scored(tmp_path):
    """train/ + val/ is short of nothing; with a test/ split, a class without test is named."""
    root = tmp_path / "tutorial"
    for split, seeds in (("train", (0, 1)), ("val", (2, 3))):
        for label, seed in zip(("ants", "bees"), seeds, strict=True):
            _image(root / split / label / f"{seed}.jpg", seed)
    _, _, report = _manifest(root)
    assert report.warnings == []
    _image(root / "test" / "ants" / "4.jpg", 4)
    _, _, report = _manifest(root)
    assert report.warnings == ["class 'bees' has no test images"]
