"""Dataset walk: one bucket per file, symlinks that cannot escape or loop, stable verdicts."""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from features.data.images import ImageLimits
from features.data.manifest import build_manifest, read_manifest, write_manifest
from features.data.scan import class_folders, scan_dataset
from features.data.scan_cache import ScanCache
from features.data.scan_cache_file import load_scan_cache, save_scan_cache
from features.errors import UserError

LIMITS = ImageLimits()


def _image(path: Path, seed: int = 0, size: tuple[int, int] = (32, 24)) -> Path:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format="PNG" if path.suffix == ".png" else "JPEG")
    return path


def _scan(root: Path, cache: ScanCache | None = None) -> dict[str, tuple[str, str]]:
    outcomes, _ = scan_dataset(root, LIMITS, cache, n_jobs=1)
    assert len({o.path for o in outcomes}) == len(outcomes), "a file was reported twice"
    return {o.path: (o.bucket, o.reason) for o in outcomes}


def _entries_on_disk(root: Path) -> set[str]:
    """Every non-folder entry under ``root``, links not followed: what must be reported."""
    found = set()
    for folder, dirs, files in os.walk(root):
        base = Path(folder).relative_to(root)
        found.update((base / name).as_posix() for name in files)
        found.update(
            (base / name).as_posix() for name in dirs if (Path(folder) / name).is_symlink()
        )
    return found


def _within(seconds: float, work: Callable[[], object]) -> object:
    """Run ``work`` in a daemon thread; fail (instead of hanging the suite) if it does not end."""
    result: dict[str, object] = {}
    thread = threading.Thread(target=lambda: result.setdefault("value", work()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"did not finish within {seconds} s"
    return result["value"]


def test_every_file_lands_in_exactly_one_bucket(tmp_path):
    root = tmp_path / "data"
    _image(root / "cats" / "a.jpg", 1)
    _image(root / "dogs" / "b.jpg", 2)
    (root / "dogs" / "notes.txt").write_text("not an image")
    (root / "dogs" / "README").write_text("no extension")
    (root / "stray.jpg").write_bytes((root / "cats" / "a.jpg").read_bytes())
    (root / "cats" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "cats" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    (root / "cats" / "desktop.ini").write_text("[.ShellClassInfo]")
    (root / "cats" / "._a.jpg").write_bytes(b"\0\5\26\7" + bytes(60))
    (root / "__MACOSX" / "cats").mkdir(parents=True)
    (root / "__MACOSX" / "cats" / "._a.jpg").write_bytes(b"\0\5\26\7")
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    found = _scan(root)
    assert set(found) == _entries_on_disk(root)
    assert found == {
        "cats/a.jpg": ("used", ""),
        "dogs/b.jpg": ("used", ""),
        "dogs/notes.txt": ("ignored", "not_an_image_extension"),
        "dogs/README": ("ignored", "not_an_image_extension"),
        "stray.jpg": ("ignored", "outside_class_folder"),
        "cats/.DS_Store": ("ignored", "hidden_or_system"),
        "cats/Thumbs.db": ("ignored", "hidden_or_system"),
        "cats/desktop.ini": ("ignored", "hidden_or_system"),
        "cats/._a.jpg": ("ignored", "hidden_or_system"),
        "__MACOSX/cats/._a.jpg": ("ignored", "hidden_or_system"),
        ".git/HEAD": ("ignored", "hidden_or_system"),
    }
    assert class_folders(root, predefined=False) == {"cats", "dogs"}, "__MACOSX is no class"


def test_nested_folders_belong_to_their_class_and_names_survive(tmp_path):
    root = tmp_path / "data"
    names = [
        "cats/2019/summer/deep.jpg",
        "cats/UPPER CASE.JPG",
        "cats/mixed.JpEg",
        "cats/a photo with spaces.png",
        "dogs/café crème ü.jpg",
        "dogs/日本語.jpg",
    ]
    for seed, name in enumerate(names):
        _image(root / name, seed)
    outcomes, _ = scan_dataset(root, LIMITS, n_jobs=1)
    by_path = {o.path: o for o in outcomes}
    assert {o.bucket for o in outcomes} == {"used"}
    assert by_path["cats/2019/summer/deep.jpg"].label == "cats"
    assert by_path["dogs/café crème ü.jpg"].label == "dogs"
    assert by_path["cats/a photo with spaces.png"].detail.startswith("PNG")
    rows, _, _ = build_manifest(outcomes, root, False, "salt", 0.5)
    write_manifest(tmp_path / "manifest.csv", rows)
    again = read_manifest(tmp_path / "manifest.csv")
    assert {row.path for row in again} == set(names)
    for row in again:
        assert (root / row.path).is_file()
        assert not Path(row.path).is_absolute() and ".." not in Path(row.path).parts


def test_predefined_splits_give_label_and_split(tmp_path):
    root = tmp_path / "data"
    _image(root / "train" / "cats" / "nested" / "a.jpg", 1)
    _image(root / "train" / "dogs" / "b.jpg", 2)
    _image(root / "test" / "cats" / "c.jpg", 3)
    (root / "train" / ".DS_Store").write_bytes(b"Bud1")
    (root / "__MACOSX").mkdir()
    outcomes, predefined = scan_dataset(root, LIMITS, n_jobs=1)
    assert predefined, "a __MACOSX folder must not hide the train/test layout"
    placed = {o.path: (o.label, o.split) for o in outcomes if o.bucket == "used"}
    assert placed == {
        "train/cats/nested/a.jpg": ("cats", "train"),
        "train/dogs/b.jpg": ("dogs", "train"),
        "test/cats/c.jpg": ("cats", "test"),
    }


def test_file_name_that_is_not_utf8_still_works(tmp_path):
    root = tmp_path / "data"
    _image(root / "cats" / "a.jpg", 1)
    _image(root / "dogs" / "b.jpg", 2)
    latin1 = os.fsdecode(b"caf\xe9.jpg")  # a Latin-1 name from an old archive
    try:
        _image(root / "cats" / latin1, 3)
    except OSError:
        pytest.skip("this file system refuses names that are not UTF-8")
    outcomes, _ = scan_dataset(root, LIMITS, n_jobs=1)
    rows, _, _ = build_manifest(outcomes, root, False, "salt", 0.5)
    write_manifest(tmp_path / "manifest.csv", rows)
    paths = {row.path for row in read_manifest(tmp_path / "manifest.csv")}
    assert f"cats/{latin1}" in paths
    assert (root / f"cats/{latin1}").is_file()


def test_class_folder_name_that_is_not_utf8_is_a_user_error(tmp_path):
    root = tmp_path / "data"
    _image(root / "cats" / "a.jpg", 1)
    try:
        _image(root / os.fsdecode(b"chi\xe9ns") / "b.jpg", 2)
    except OSError:
        pytest.skip("this file system refuses names that are not UTF-8")
    with pytest.raises(UserError, match=r"'chi\\xe9ns'.*not valid UTF-8"):
        class_folders(root, predefined=False)


def test_symlink_outside_the_root_is_reported_and_not_followed(tmp_path):
    root = tmp_path / "data"
    _image(root / "cats" / "a.jpg", 1)
    _image(root / "dogs" / "b.jpg", 2)
    outside = _image(tmp_path / "elsewhere" / "secret.jpg", 3)
    (root / "cats" / "leak.jpg").symlink_to(outside)
    (root / "cats" / "relative_leak.jpg").symlink_to(Path("..", "..", "elsewhere", "secret.jpg"))
    (root / "birds").symlink_to(outside.parent, target_is_directory=True)
    outcomes, _ = scan_dataset(root, LIMITS, n_jobs=1)
    by_path = {o.path: o for o in outcomes}
    for name in ("cats/leak.jpg", "cats/relative_leak.jpg", "birds"):
        assert (by_path[name].bucket, by_path[name].reason) == ("skipped", "outside_root")
        assert by_path[name].sha256 == "", "a file outside the root must not even be read"
    assert not any(o.path.startswith("birds/") for o in outcomes)
    assert "birds" not in class_folders(root, predefined=False)
    rows, _, _ = build_manifest(outcomes, root, False, "salt", 0.5)  # no "empty class" error
    assert {row.label for row in rows} == {"cats", "dogs"}


def test_symlink_loops_do_not_hang_the_scan(tmp_path):
    root = tmp_path / "data"
    _image(root / "cats" / "a.jpg", 1)
    _image(root / "dogs" / "b.jpg", 2)
    (root / "cats" / "self.jpg").symlink_to("self.jpg")
    (root / "cats" / "ping").symlink_to("pong")
    (root / "cats" / "pong").symlink_to("ping")
    (root / "cats" / "up").symlink_to("..", target_is_directory=True)
    (root / "cats" / "here").symlink_to(".", target_is_directory=True)
    (root / "dogs" / "root").symlink_to(root.resolve(), target_is_directory=True)
    found = _within(20, lambda: _scan(root))
    assert set(found) == _entries_on_disk(root)
    for name in ("cats/self.jpg", "cats/ping", "cats/pong", "cats/up", "cats/here", "dogs/root"):
        assert found[name] == ("skipped", "symlink_loop"), name
    assert found["cats/a.jpg"] == found["dogs/b.jpg"] == ("used", "")


def test_folder_alias_never_relabels_the_real_folder(tmp_path):
    # "aardvarks/alias" sorts and is reached before "zebras" itself; the zebras must stay
    # zebras whatever the walk order, and the alias is reported, not followed.
    root = tmp_path / "data"
    _image(root / "aardvarks" / "a.jpg", 1)
    _image(root / "zebras" / "z.jpg", 2)
    (root / "aardvarks" / "alias").symlink_to(Path("..", "zebras"), target_is_directory=True)
    (root / "aardvarks" / "also_alias").symlink_to(root / "zebras", target_is_directory=True)
    outcomes, _ = scan_dataset(root, LIMITS, n_jobs=1)
    by_path = {o.path: o for o in outcomes}
    assert by_path["zebras/z.jpg"].label == "zebras"
    for name in ("aardvarks/alias", "aardvarks/also_alias"):
        assert (by_path[name].bucket, by_path[name].reason) == ("ignored", "folder_symlink")
        assert "zebras/" in by_path[name].detail
    assert set(by_path) == {
        "aardvarks/a.jpg",
        "zebras/z.jpg",
        *("aardvarks/alias", "aardvarks/also_alias"),
    }


def test_symlink_to_a_file_inside_the_root_is_followed(tmp_path):
    root = tmp_path / "data"
    target = _image(root / "dogs" / "b.jpg", 2)
    _image(root / "dogs" / "d.jpg", 4)
    _image(root / "cats" / "a.jpg", 1)
    _image(root / "cats" / "c.jpg", 3)
    (root / "cats" / "same_class.jpg").symlink_to(Path("c.jpg"))
    (root / "cats" / "other_class.jpg").symlink_to(target)
    (root / "cats" / "broken.jpg").symlink_to(Path("does-not-exist.jpg"))
    outcomes, _ = scan_dataset(root, LIMITS, n_jobs=1)
    rows, outcomes, _ = build_manifest(outcomes, root, False, "salt", 0.5)
    found = {o.path: (o.bucket, o.reason) for o in outcomes}
    assert found["cats/same_class.jpg"] == ("used", ""), "a duplicate of c.jpg, computed once"
    assert found["cats/other_class.jpg"] == found["dogs/b.jpg"] == ("skipped", "label_conflict")
    assert found["cats/broken.jpg"] == ("skipped", "unreadable")
    assert {row.path for row in rows} == {"cats/a.jpg", "cats/c.jpg", "dogs/d.jpg"}


def test_fifo_named_like_an_image_is_never_opened(tmp_path):
    root = tmp_path / "data"
    _image(root / "cats" / "a.jpg", 1)
    _image(root / "dogs" / "b.jpg", 2)
    fifo = root / "cats" / "pipe.jpg"
    os.mkfifo(fifo)
    try:
        found = _within(20, lambda: _scan(root))
    finally:
        _release_readers(fifo)
    assert found["cats/pipe.jpg"] == ("skipped", "unreadable")


def _release_readers(fifo: Path) -> None:
    """Let a (buggy) scan blocked opening the FIFO go, so a failure cannot hang the suite."""
    with contextlib.suppress(OSError):  # ENXIO: no reader, the scan never opened it
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


def test_missing_root_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not a folder"):
        scan_dataset(tmp_path / "nowhere", LIMITS)


def _bad_and_good(root: Path) -> tuple[Path, Path]:
    _image(root / "cats" / "a.jpg", 1)
    _image(root / "dogs" / "b.jpg", 2)
    broken = root / "cats" / "broken.jpg"
    broken.write_bytes(_image(root / "dogs" / "c.jpg", 3).read_bytes()[:200])
    return broken, root / "dogs" / "c.jpg"


def _reloaded(cache: ScanCache, path: Path) -> ScanCache:
    save_scan_cache(path, cache)
    return load_scan_cache(path)


def test_verdicts_are_cached_by_content_hash(tmp_path):
    root = tmp_path / "data"
    broken, good = _bad_and_good(root)
    cache = ScanCache()
    first = _scan(root, cache)
    assert first["cats/broken.jpg"] == ("skipped", "corrupt")
    saved = tmp_path / "scan.sqlite"
    save_scan_cache(saved, cache)
    # A verdict is looked up, not recomputed: plant one for the good file's bytes.
    planted = load_scan_cache(saved)
    outcomes, _ = scan_dataset(root, LIMITS, planted, n_jobs=1)
    good_hash = next(o.sha256 for o in outcomes if o.path == "dogs/c.jpg")
    planted.put(good_hash, LIMITS, {"reason": "corrupt", "detail": "planted"})
    assert _scan(root, planted)["dogs/c.jpg"] == ("skipped", "corrupt")
    # The same bytes under new limits are judged again.
    assert _scan(root, load_scan_cache(saved))["dogs/c.jpg"] == ("used", "")
    outcomes, _ = scan_dataset(root, ImageLimits(min_side=30), planted, n_jobs=1)
    assert {o.path: o.reason for o in outcomes}["dogs/c.jpg"] == "too_small"
    # New bytes, new verdict.
    broken.write_bytes(good.read_bytes())
    assert _scan(root, load_scan_cache(saved))["cats/broken.jpg"] == ("used", "")


def test_cache_keeps_only_what_this_run_used_and_drops_stale_formats(tmp_path):
    root = tmp_path / "data"
    broken, _ = _bad_and_good(root)
    cache = ScanCache()
    _scan(root, cache)
    assert len(cache.used_verdicts()) == 4
    broken.unlink()
    again = _reloaded(cache, tmp_path / "scan.sqlite")
    _scan(root, again)
    assert len(again.used_verdicts()) == 3
    assert len(_reloaded(again, tmp_path / "scan.sqlite").entries) == 3
    legacy = tmp_path / "scan.json"
    for stale in ({"format": 2, "decoder": "Pillow 1.0", "entries": {}}, {"entries": []}, [1]):
        legacy.write_text(json.dumps(stale))
        assert load_scan_cache(legacy).entries == {}
        assert "stale" in load_scan_cache(legacy).origin


def test_flower_dataset_report(flowers):
    outcomes, predefined = scan_dataset(flowers, LIMITS)
    rows, outcomes, report = build_manifest(outcomes, flowers, predefined, "split-v1", 0.2)
    assert predefined
    ds_store = [o for o in outcomes if o.path.endswith(".DS_Store")]
    assert len(ds_store) == 5
    assert {(o.bucket, o.reason) for o in ds_store} == {("ignored", "hidden_or_system")}
    assert len(report.duplicates) == 3
    assert Counter(group["conflict"] for group in report.duplicates) == {False: 2, True: 1}
    (conflict,) = report.conflicts
    assert conflict["labels"] == ["roses", "tulips"]
    conflicted = {o.path for o in outcomes if o.reason == "label_conflict"}
    assert conflicted == {f["path"] for f in conflict["files"]}
    assert all(o.bucket == "skipped" for o in outcomes if o.path in conflicted)
    assert conflict["sha256"] not in {row.sha256 for row in rows}
    assert (
        report.files["total"] == len(outcomes) == sum(1 for p in flowers.rglob("*") if p.is_file())
    )
    assert report.files["used"] + report.files["ignored"] + report.files["skipped"] == len(outcomes)
    assert report.skipped == {"label_conflict": 2}
    assert len(rows) == report.files["used"] - 2, "two same-label copies are computed once"
