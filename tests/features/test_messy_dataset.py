"""One folder with every kind of mess, end to end: each file in its bucket, the run completes,
and the good images get exactly the codes they get in a clean folder.

Codes are compared bit for bit, so extraction runs one image per batch: a CPU forward pass
is not bitwise independent of which other images share its batch.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from features.compute.extract import extract_codes
from features.compute.loader import ImageRef
from features.data.images import ImageLimits, decode_rgb
from features.data.manifest import DataReport, ManifestRow, build_manifest, write_files_csv
from features.data.scan import FileOutcome, scan_dataset
from features.data.scan_cache_file import load_scan_cache
from features.store import FeatureStore
from pipeline import prepare
from pipeline.workspace import merge
from tests.conftest import SMALL_CONFIG, TEST_PARAMS

# Low enough that a 256x256 image is a "bomb"; high enough for the 4000x8 strip to be
# judged on its shorter side (too_small) rather than on its pixel count.
LIMITS = ImageLimits(min_side=16, max_pixels=40_000)
ONE_PER_BATCH = replace(SMALL_CONFIG, batch_size=1)
IMAGE_REASONS = {"empty", "not_an_image", "corrupt", "decompression_bomb", "too_small"}

USED, IGNORED, SKIPPED = "used", "ignored", "skipped"


def _photo(seed: int, size: tuple[int, int] = (64, 48)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8))


def _bytes(image: Image.Image, format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _palette_with_transparency() -> bytes:
    image = _photo(30).quantize(colors=16)
    return _bytes(image, "GIF", transparency=3)


def _animated() -> bytes:
    frames = [_photo(40 + index) for index in range(3)]
    return _bytes(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=40)


def _sixteen_bit() -> bytes:
    ramp = np.linspace(0, 65535, 64 * 48).reshape(48, 64).astype(np.uint16)
    return _bytes(Image.fromarray(ramp), "PNG")


def _exif_pair() -> tuple[bytes, bytes]:
    """A JPEG tagged orientation 6, and a PNG of the same picture physically rotated."""
    exif = Image.Exif()
    exif[0x0112] = 6
    photo = _photo(50)
    plain = decode_rgb(_bytes(photo, "JPEG", quality=95), LIMITS)
    tagged = _bytes(photo, "JPEG", quality=95, exif=exif)
    return tagged, _bytes(plain.transpose(Image.Transpose.ROTATE_270), "PNG")


def build_messy_folder(root: Path, outside: Path) -> dict[str, tuple[str, str]]:
    """Write every case under ``root``; return each path's expected (bucket, reason)."""
    expected: dict[str, tuple[str, str]] = {}

    def put(path: str, data: bytes, bucket: str = USED, reason: str = "") -> None:
        _write(root / path, data)
        expected[path] = (bucket, reason)

    for index in range(3):
        put(f"cats/good_{index}.jpg", _bytes(_photo(index), "JPEG", quality=90))
        put(f"dogs/good_{index}.jpg", _bytes(_photo(10 + index), "JPEG", quality=90))
    good = (root / "cats" / "good_0.jpg").read_bytes()
    put("cats/truncated.jpg", good[: len(good) // 2], SKIPPED, "corrupt")
    put("cats/zero.jpg", b"", SKIPPED, "empty")
    put("cats/notes.jpg", b"shopping list: milk, eggs\n", SKIPPED, "not_an_image")
    put(
        "cats/._good_0.jpg",
        b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X",
        IGNORED,
        "hidden_or_system",
    )
    put("cats/.DS_Store", b"\x00\x00\x00\x01Bud1", IGNORED, "hidden_or_system")
    put("dogs/Thumbs.db", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", IGNORED, "hidden_or_system")
    png = _bytes(_photo(20), "PNG")
    put("cats/picture.png", png)
    put("cats/picture (png renamed).jpg", png)
    put("cats/cmyk.jpg", _bytes(_photo(21).convert("CMYK"), "JPEG", quality=90))
    put("cats/grey.png", _bytes(_photo(22).convert("L"), "PNG"))
    put("cats/grey_alpha.png", _bytes(_photo(23).convert("LA"), "PNG"))
    put("cats/rgba.png", _bytes(_photo(24).convert("RGBA"), "PNG"))
    put("cats/palette.gif", _palette_with_transparency())
    put("cats/animated.gif", _animated())
    put("cats/sixteen_bit.png", _sixteen_bit())
    tagged, rotated = _exif_pair()
    put("dogs/phone exif6.jpg", tagged)
    put("dogs/rotated copy.png", rotated)
    put("cats/one_pixel.png", _bytes(_photo(25, (1, 1)), "PNG"), SKIPPED, "too_small")
    put("cats/strip_4000x8.png", _bytes(_photo(26, (4000, 8)), "PNG"), SKIPPED, "too_small")
    put("cats/bomb.png", _bytes(_photo(27, (256, 256)), "PNG"), SKIPPED, "decompression_bomb")
    put("dogs/UPPER CASE.JPG", _bytes(_photo(28), "JPEG", quality=90))
    put("dogs/café crème ü.jpeg", _bytes(_photo(29), "JPEG", quality=90))
    put("dogs/2019/summer/nested.jpg", _bytes(_photo(31), "JPEG", quality=90))
    shared = _bytes(_photo(32), "JPEG", quality=90)
    put("cats/shared.jpg", shared, SKIPPED, "label_conflict")
    put("dogs/shared copy.jpg", shared, SKIPPED, "label_conflict")
    (root / "cats" / "self.jpg").symlink_to("self.jpg")
    expected["cats/self.jpg"] = (SKIPPED, "symlink_loop")
    (root / "dogs" / "up").symlink_to("..", target_is_directory=True)
    expected["dogs/up"] = (SKIPPED, "symlink_loop")
    _write(outside, _bytes(_photo(33), "JPEG"))
    (root / "cats" / "outside.jpg").symlink_to(os.path.relpath(outside, root / "cats"))
    expected["cats/outside.jpg"] = (SKIPPED, "outside_root")
    return expected


@pytest.fixture
def messy(tmp_path) -> tuple[Path, dict[str, tuple[str, str]]]:
    root = tmp_path / "messy"
    return root, build_messy_folder(root, tmp_path / "elsewhere" / "secret.jpg")


def _prepare(root: Path) -> tuple[list[ManifestRow], list[FileOutcome], DataReport]:
    outcomes, predefined = scan_dataset(root, LIMITS, n_jobs=1)
    return build_manifest(outcomes, root, predefined, "salt", 0.3)


def _clean_copy(root: Path, rows: list[ManifestRow], clean: Path) -> None:
    """Only the usable images, same bytes, same relative paths."""
    for row in rows:
        (clean / row.path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / row.path, clean / row.path)


def _codes(store: Path, hashes: list[str]) -> np.ndarray:
    with FeatureStore(store) as reader:
        return reader.get(hashes)


def test_every_case_lands_in_its_bucket_and_good_codes_match_a_clean_folder(messy, tmp_path):
    root, expected = messy
    rows, outcomes, report = _prepare(root)
    assert {o.path: (o.bucket, o.reason) for o in outcomes} == expected
    by_path = {o.path: o for o in outcomes}
    assert by_path["cats/picture (png renamed).jpg"].detail.startswith("PNG")
    assert by_path["dogs/2019/summer/nested.jpg"].label == "dogs"

    # The per-file report holds every file once, by a relative path that stays in the root.
    write_files_csv(tmp_path / "files.csv", outcomes)
    with open(tmp_path / "files.csv", newline="", encoding="utf-8") as stream:
        records = list(csv.DictReader(stream))
    assert sorted(r["path"] for r in records) == sorted(expected)
    for record in records:
        assert not Path(record["path"]).is_absolute() and ".." not in Path(record["path"]).parts
    used = sum(bucket == USED for bucket, _ in expected.values())
    assert report.files == {
        "total": len(expected),
        USED: used,
        IGNORED: sum(bucket == IGNORED for bucket, _ in expected.values()),
        SKIPPED: sum(bucket == SKIPPED for bucket, _ in expected.values()),
    }
    assert len(rows) == used - 1, "the PNG and its renamed copy are one image"
    assert sorted(g["conflict"] for g in report.duplicates) == [False, True]

    # Extraction on the manifest completes with no failure at all: prepare caught them.
    refs = [ImageRef(row.sha256, root / row.path) for row in rows]
    messy_run = extract_codes(refs, tmp_path / "messy-store", ONE_PER_BATCH, LIMITS, False)
    assert (messy_run.computed, messy_run.skipped, messy_run.retry_later) == (len(rows), 0, 0)

    clean = tmp_path / "clean"
    _clean_copy(root, rows, clean)
    clean_rows, clean_outcomes, _ = _prepare(clean)
    assert {o.bucket for o in clean_outcomes} == {USED}
    assert clean_rows == rows
    clean_refs = [ImageRef(row.sha256, clean / row.path) for row in clean_rows]
    extract_codes(clean_refs, tmp_path / "clean-store", ONE_PER_BATCH, LIMITS, False)
    hashes = [row.sha256 for row in rows]
    messy_codes = _codes(tmp_path / "messy-store", hashes)
    assert np.array_equal(messy_codes, _codes(tmp_path / "clean-store", hashes))
    assert np.isfinite(messy_codes).all() and (messy_codes > 0).any()

    # EXIF orientation 6 and a physically rotated copy: different bytes, identical codes.
    exif_row = hashes.index(by_path["dogs/phone exif6.jpg"].sha256)
    rotated_row = hashes.index(by_path["dogs/rotated copy.png"].sha256)
    assert exif_row != rotated_row
    assert np.array_equal(messy_codes[exif_row], messy_codes[rotated_row])


def test_bad_files_reaching_extraction_are_recorded_skips_not_crashes(messy, tmp_path):
    """The fallback for a file that passes prepare and fails later: recorded, never fatal,
    never replaced by another image; and reruns skip it without trying again."""
    root, _ = messy
    rows, outcomes, _ = _prepare(root)
    bad = {o.sha256: o.reason for o in outcomes if o.reason in IMAGE_REASONS}
    assert set(bad.values()) == IMAGE_REASONS
    refs = [ImageRef(row.sha256, root / row.path) for row in rows]
    refs += [ImageRef(o.sha256, root / o.path) for o in outcomes if o.reason in IMAGE_REASONS]
    refs.sort(key=lambda ref: ref.path.name)  # bad files interleaved with good ones
    store = tmp_path / "store"
    run = extract_codes(refs, store, ONE_PER_BATCH, LIMITS, progress=False)
    assert (run.computed, run.skipped) == (len(rows), len(bad))
    with FeatureStore(store) as reader:
        assert {sha: record.reason for sha, record in reader.skipped.items()} == bad
        assert sorted(reader.hashes) == sorted(row.sha256 for row in rows)
    rerun = extract_codes(refs, store, ONE_PER_BATCH, LIMITS, progress=False)
    assert (rerun.reused, rerun.computed, rerun.skipped) == (len(rows), 0, len(bad))

    clean = tmp_path / "clean"
    _clean_copy(root, rows, clean)
    clean_refs = [ImageRef(row.sha256, clean / row.path) for row in rows]
    extract_codes(clean_refs, tmp_path / "clean-store", ONE_PER_BATCH, LIMITS, False)
    hashes = [row.sha256 for row in rows]
    assert np.array_equal(_codes(store, hashes), _codes(tmp_path / "clean-store", hashes))


def _params(tmp_path: Path, root: Path) -> Path:
    base = TEST_PARAMS
    limits = {"min_side": LIMITS.min_side, "max_pixels": LIMITS.max_pixels}
    params = merge(base, {"data": {"root": str(root), "limits": limits}, "downloads": {}})
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_prepare_skips_are_stable_until_the_bytes_change(messy, tmp_path, capsys):
    root, expected = messy
    out = tmp_path / "out"
    args = ["--data", str(root), "--params", str(_params(tmp_path, root))]
    for name in ("manifest", "files", "report", "cache"):
        args += [f"--{name}", str(out / name)]

    prepare.main(args)
    summary = capsys.readouterr().out
    files = (out / "files").read_bytes()
    skipped = sum(bucket == SKIPPED for bucket, _ in expected.values())
    assert f"{len(expected)} files -> " in summary and f"{skipped} skipped" in summary
    assert "corrupt 1" in summary and "label_conflict 2" in summary
    report = json.loads((out / "report").read_text())
    assert report["skipped"]["too_small"] == 2
    cached = load_scan_cache(out / "cache").entries
    assert any(verdict["reason"] == "corrupt" for verdict in cached.values())

    prepare.main(args)
    capsys.readouterr()
    assert (out / "files").read_bytes() == files, "a rerun must report exactly the same"

    # New bytes, new verdict: the truncated download is fetched again, complete this time.
    shutil.copyfile(root / "cats" / "good_1.jpg", root / "cats" / "truncated.jpg")
    (root / "cats" / "good_1.jpg").unlink()
    prepare.main(args)
    capsys.readouterr()
    with open(out / "files", newline="", encoding="utf-8") as stream:
        now = {r["path"]: (r["bucket"], r["reason"]) for r in csv.DictReader(stream)}
    assert now["cats/truncated.jpg"] == (USED, "")
    assert now["cats/zero.jpg"] == (SKIPPED, "empty")
