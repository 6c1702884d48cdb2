"""Scan cache: an unchanged file is neither read nor decoded again; identity stays content."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from features.data import validate
from features.data.images import ImageLimits
from features.data.scan import scan_dataset
from features.data.scan_cache import ScanCache
from features.data.scan_cache_file import load_scan_cache, save_scan_cache

LIMITS = ImageLimits()
OLD_NS = 1_600_000_000 * 10**9  # 2020: a dataset unpacked long before the scan


def _image(path: Path, seed: int) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(24, 32, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format="PNG")
    os.utime(path, ns=(OLD_NS, OLD_NS))
    return path


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    for seed, name in enumerate(("cats/a.png", "cats/b.png", "dogs/c.png", "dogs/d.png")):
        _image(root / name, seed)
    return root


@pytest.fixture
def reads(monkeypatch) -> dict[str, list[str]]:
    """Every file hashed and every image decoded by the scan, by relative name."""
    seen: dict[str, list[str]] = {"hashed": [], "decoded": []}
    real_hash, real_probe = validate.file_sha256, validate.probe_image
    monkeypatch.setattr(
        validate, "file_sha256", lambda p: seen["hashed"].append(p.name) or real_hash(p)
    )
    monkeypatch.setattr(
        validate, "probe_image", lambda p, lim: seen["decoded"].append(p.name) or real_probe(p, lim)
    )
    return seen


def _rescan(root: Path, cache_path: Path, reads: dict[str, list[str]]) -> dict[str, str]:
    """One ``prepare``-like pass: load, scan, save; the sha256 of each used file."""
    for names in reads.values():
        names.clear()
    cache = load_scan_cache(cache_path)
    outcomes, _ = scan_dataset(root, LIMITS, cache, n_jobs=1)
    save_scan_cache(cache_path, cache)
    return {o.path: o.sha256 for o in outcomes if o.bucket == "used"}


def test_an_unchanged_file_is_not_read_again(dataset, tmp_path, reads):
    cache = tmp_path / "scan.sqlite"
    first = _rescan(dataset, cache, reads)
    assert len(reads["hashed"]) == 4 and len(reads["decoded"]) == 4
    assert _rescan(dataset, cache, reads) == first
    assert reads == {"hashed": [], "decoded": []}


@pytest.mark.parametrize("change", ["mtime", "size", "inode"])
def test_a_changed_stat_is_hashed_again(dataset, tmp_path, reads, change):
    cache = tmp_path / "scan.sqlite"
    first = _rescan(dataset, cache, reads)
    target = dataset / "cats" / "a.png"
    if change == "mtime":
        os.utime(target, ns=(OLD_NS + 1, OLD_NS + 1))
    elif change == "size":
        with open(target, "ab") as stream:
            stream.write(b"\0")  # bytes after IEND: still a PNG, a new hash
        os.utime(target, ns=(OLD_NS, OLD_NS))
    else:  # same bytes, same size and mtime, a new file: replaced by a copy
        shutil.copy2(target, tmp_path / "copy.png")
        os.replace(tmp_path / "copy.png", target)
        os.utime(target, ns=(OLD_NS, OLD_NS))
    again = _rescan(dataset, cache, reads)
    assert reads["hashed"] == ["a.png"]
    assert (again["cats/a.png"] == first["cats/a.png"]) == (change != "size")
    assert reads["decoded"] == (["a.png"] if change == "size" else [])


def test_the_same_bytes_moved_keep_their_hash_and_verdict(dataset, tmp_path, reads):
    cache = tmp_path / "scan.sqlite"
    first = _rescan(dataset, cache, reads)
    (dataset / "cats" / "a.png").rename(dataset / "cats" / "moved.png")
    again = _rescan(dataset, cache, reads)
    assert again["cats/moved.png"] == first["cats/a.png"]
    assert reads == {"hashed": ["moved.png"], "decoded": []}  # known content: not decoded
    assert "cats/a.png" not in load_scan_cache(cache).files  # the old path leaves the cache


def test_a_file_written_just_now_is_hashed_but_not_remembered(dataset, tmp_path, reads):
    """Git's racy rule: a second write in the same timestamp tick would go unseen."""
    cache = tmp_path / "scan.sqlite"
    fresh = dataset / "dogs" / "fresh.png"
    _image(fresh, 9)
    os.utime(fresh)  # now
    _rescan(dataset, cache, reads)
    _rescan(dataset, cache, reads)
    assert reads["hashed"] == ["fresh.png"] and reads["decoded"] == []


def test_non_utf8_names_round_trip(tmp_path, reads):
    root = tmp_path / "data"
    name = os.fsdecode(b"caf\xe9.png")  # a Latin-1 name: surrogate escapes in Python
    _image(root / "cats" / name, 1)
    _image(root / "dogs" / "d.png", 2)
    cache = tmp_path / "scan.sqlite"
    first = _rescan(root, cache, reads)
    assert _rescan(root, cache, reads) == first and reads["hashed"] == []


def test_the_json_cache_of_format_2_is_migrated(dataset, tmp_path, reads):
    """Its verdicts are kept (nothing is decoded); it has no stats, so files are hashed."""
    fresh = ScanCache()
    scan_dataset(dataset, LIMITS, fresh, n_jobs=1)
    legacy = {"format": 2, "decoder": ScanCache.DECODER, "entries": fresh.used_verdicts()}
    cache = tmp_path / "scan.json"
    cache.write_text(json.dumps(legacy, indent=2))
    assert "migrated" in load_scan_cache(cache).origin
    _rescan(dataset, cache, reads)
    assert len(reads["hashed"]) == 4 and reads["decoded"] == []
    assert cache.read_bytes().startswith(b"SQLite format 3\x00")  # saved in the new format
    _rescan(dataset, cache, reads)
    assert reads == {"hashed": [], "decoded": []}


def test_a_damaged_or_stale_cache_is_rebuilt_and_says_why(dataset, tmp_path, reads):
    cache = tmp_path / "scan.sqlite"
    assert "no cache" in load_scan_cache(cache).origin
    cache.write_bytes(b"SQLite format 3\x00" + b"\xff" * 200)
    damaged = load_scan_cache(cache)
    assert damaged.files == {} and "unreadable" in damaged.origin
    _rescan(dataset, cache, reads)
    with sqlite3.connect(cache) as db:
        db.execute("UPDATE meta SET decoder = 'Pillow 1.0'")
    db.close()
    stale = load_scan_cache(cache)
    assert stale.files == {} and stale.entries == {} and "stale" in stale.origin


def test_a_crash_while_saving_leaves_the_old_cache(dataset, tmp_path, reads, monkeypatch):
    cache = tmp_path / "scan.sqlite"
    _rescan(dataset, cache, reads)
    before = cache.read_bytes()
    loaded = load_scan_cache(cache)
    scan_dataset(dataset, LIMITS, loaded, n_jobs=1)

    def interrupted() -> dict:
        raise KeyboardInterrupt  # Ctrl-C after the files table, before the verdicts

    monkeypatch.setattr(loaded, "used_verdicts", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_scan_cache(cache, loaded)
    assert cache.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "scan.sqlite"]
    assert len(load_scan_cache(cache).files) == 4


def test_a_prepare_rerun_reads_no_unchanged_file(dataset, tmp_path, reads, capsys):
    from pipeline import prepare
    from tests.conftest import TEST_PARAMS_FILE

    out = tmp_path / "out"
    args = ["--data", str(dataset), "--params", str(TEST_PARAMS_FILE)]
    for name in ("manifest", "files", "report", "cache"):
        args += [f"--{name}", str(out / name)]
    prepare.main(args)
    assert "no cache" in capsys.readouterr().out and len(reads["hashed"]) == 4
    manifest = (out / "manifest").read_bytes()
    for names in reads.values():
        names.clear()
    prepare.main(args)
    assert "4 files, 4 verdicts" in capsys.readouterr().out
    assert reads == {"hashed": [], "decoded": []}
    assert (out / "manifest").read_bytes() == manifest
