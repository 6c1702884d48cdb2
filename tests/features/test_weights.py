"""Security of what is loaded from disk or the network: weights, heads, dataset archives.

Nothing is loaded or unpacked before its checksum passes, and a weights file or archive
that would run code or write outside its folder is refused.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
import urllib.error
from pathlib import Path

import joblib
import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from classifiers.persist import HeadError, load_head, save_head
from features.compute.backbones import BACKBONES
from features.compute.weights import WeightsError, resolve_weights
from features.data.download import DownloadError, download_dataset, unpack_archive
from features.files import file_sha256
from features.store.fingerprint import Fingerprint

VGG16 = BACKBONES["vgg16"]


class _Payload:
    """Unpickling this object creates the folder ``marker``: proof that a load ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def _state_dict() -> dict[str, torch.Tensor]:
    return {"layer.weight": torch.arange(6.0).reshape(2, 3), "layer.bias": torch.zeros(2)}


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_weights_carrying_a_pickle_payload_are_refused_and_it_never_runs(tmp_path, zip_format):
    marker = tmp_path / "payload-ran"
    path = tmp_path / "evil.pth"
    torch.save(
        {**_state_dict(), "extra": _Payload(marker)},
        path,
        _use_new_zipfile_serialization=zip_format,
    )
    with pytest.raises(WeightsError, match=r"refused to load .*could run code") as refused:
        resolve_weights(VGG16, str(path), seed=0)
    assert "weights_only" not in str(refused.value), "never advise turning the guard off"
    assert not marker.exists()
    pickle.loads(pickle.dumps(_Payload(marker)))  # the payload is live: loading it does run
    assert marker.exists()


def test_a_plain_state_dict_loads_and_is_identified_by_its_hash(tmp_path):
    path = tmp_path / "weights.pth"
    torch.save(_state_dict(), path)
    digest = file_sha256(path)
    resolved = resolve_weights(VGG16, str(path), seed=0, expected_sha256=digest.upper())
    assert resolved.identity == f"sha256:{digest}"
    assert torch.equal(resolved.state_dict["layer.weight"], _state_dict()["layer.weight"])


def test_a_weights_pin_mismatch_is_refused(tmp_path):
    path = tmp_path / "weights.pth"
    torch.save(_state_dict(), path)
    with pytest.raises(WeightsError, match=f"SHA-256 {file_sha256(path)}, expected {'0' * 64}"):
        resolve_weights(VGG16, str(path), seed=0, expected_sha256="0" * 64)


def test_a_file_that_is_not_a_state_dict_is_refused(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(WeightsError, match="not a state dict"):
        resolve_weights(VGG16, str(path), seed=0)
    missing = tmp_path / "missing.pth"
    with pytest.raises(WeightsError, match="neither 'imagenet', 'random' nor an existing file"):
        resolve_weights(VGG16, str(missing), seed=0)


@pytest.fixture
def empty_torch_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "torch-home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home / "hub" / "checkpoints" / VGG16.imagenet.filename


def test_offline_imagenet_download_names_the_file_and_checksum(empty_torch_home, monkeypatch):
    def offline(url, dst, *args, **kwargs):
        Path(dst).write_bytes(b"half a file")  # a partial download, then the failure
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(WeightsError) as failure:
        resolve_weights(VGG16, "imagenet", seed=0)
    message = str(failure.value)
    assert str(empty_torch_home) in message
    assert VGG16.imagenet.sha256 in message
    assert "looks offline" in message and "extract.weights" in message
    assert "\n" not in message
    assert not list(empty_torch_home.parent.iterdir()), "no partial file may be left behind"


def test_a_corrupt_imagenet_download_is_never_cached(empty_torch_home, monkeypatch):
    def corrupt(url, dst, *args, **kwargs):
        Path(dst).write_bytes(b"not the vgg16 checkpoint")

    monkeypatch.setattr(torch.hub, "download_url_to_file", corrupt)
    with pytest.raises(WeightsError, match=f"expected {VGG16.imagenet.sha256}"):
        resolve_weights(VGG16, "imagenet", seed=0)
    assert not list(empty_torch_home.parent.iterdir())


def test_a_tampered_cached_imagenet_checkpoint_is_refused(empty_torch_home):
    empty_torch_home.parent.mkdir(parents=True)
    torch.save(_state_dict(), empty_torch_home)
    with pytest.raises(WeightsError) as refused:
        resolve_weights(VGG16, "imagenet", seed=0)
    assert str(empty_torch_home) in str(refused.value)
    assert "delete it and download it again" in str(refused.value)


# Heads: joblib files are pickles, so they load only when their sidecar vouches for them.


def _saved_head(tmp_path: Path) -> tuple[Path, Fingerprint]:
    fingerprint = Fingerprint(
        "vgg16", "classifier.1", 4, "random:0", "{}", "fp32", "float32", "2", "0"
    )
    features = np.array([[0.0, 0, 0, 1], [1, 0, 0, 0], [0, 1, 0, 1], [1, 1, 0, 0]])
    model = make_pipeline(LogisticRegression()).fit(features, ["a", "b", "a", "b"])
    path = tmp_path / "models" / "logreg.joblib"
    save_head(model, path, "logreg", "logreg", fingerprint, ["a", "b"], {})
    return path, fingerprint


def test_a_head_loads_when_its_sidecar_matches(tmp_path):
    path, fingerprint = _saved_head(tmp_path)
    model, sidecar = load_head(path, expected=fingerprint)
    assert sidecar.sha256 == file_sha256(path)
    assert list(model.predict([[0.0, 0, 0, 1]])) == ["a"]


def test_a_tampered_head_is_refused_before_it_is_unpickled(tmp_path):
    path, _ = _saved_head(tmp_path)
    marker = tmp_path / "payload-ran"
    joblib.dump(_Payload(marker), path)  # swapped for a pickle that runs code when loaded
    with pytest.raises(HeadError, match=r"refused to load .*does not match the sidecar"):
        load_head(path)
    assert not marker.exists()


def test_a_missing_head_is_a_user_error(tmp_path):
    path, _ = _saved_head(tmp_path)
    path.with_suffix(".json").unlink()  # a head without its sidecar is not trusted either
    with pytest.raises(HeadError, match="no trained head"):
        load_head(path)
    with pytest.raises(HeadError, match="no trained head"):
        load_head(tmp_path / "models" / "unknown.joblib")


# Dataset archives: fetched from a file:// URL, so no network is involved.


def _tar(path: Path, members: dict[str, bytes | tarfile.TarInfo]) -> Path:
    """A gzipped tar of files (bytes) and links or folders (a TarInfo), in this order."""
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            if isinstance(data, tarfile.TarInfo):
                data.name = name
                tar.addfile(data)
            else:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def _entry(kind: bytes, target: str = "", mode: int = 0o644) -> tarfile.TarInfo:
    info = tarfile.TarInfo()
    info.type, info.linkname, info.mode = kind, target, mode
    return info


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_good_archive_unpacks_with_its_top_folder_stripped(tmp_path):
    archive = _tar(
        tmp_path / "flowers.tgz",
        {"flower_photos/roses/a.jpg": b"rose", "flower_photos/LICENSE.txt": b"cc-by"},
    )
    destination = tmp_path / "data" / "flowers"
    download_dataset(archive.as_uri(), _sha256(archive).upper(), destination)
    assert (destination / "roses" / "a.jpg").read_bytes() == b"rose"
    assert (destination / "LICENSE.txt").read_bytes() == b"cc-by"
    assert sorted(p.name for p in destination.parent.iterdir()) == ["flowers"], "no leftovers"


def test_an_archive_with_the_wrong_checksum_is_refused(tmp_path):
    archive = _tar(tmp_path / "flowers.tgz", {"flower_photos/roses/a.jpg": b"rose"})
    destination = tmp_path / "data" / "flowers"
    with pytest.raises(DownloadError, match=f"SHA-256 {_sha256(archive)}, expected {'0' * 64}"):
        download_dataset(archive.as_uri(), "0" * 64, destination)
    assert not destination.exists()


@pytest.mark.parametrize("member", ["../escaped.txt", "top/../../escaped.txt"])
def test_an_archive_escaping_its_destination_is_refused(tmp_path, member):
    archive = _tar(tmp_path / "hostile.tgz", {"top/ok.txt": b"ok", member: b"pwned"})
    destination = tmp_path / "deep" / "data" / "flowers"
    destination.parent.mkdir(parents=True)
    with pytest.raises(DownloadError, match="refused to unpack"):
        download_dataset(archive.as_uri(), _sha256(archive), destination)
    assert not destination.exists()
    assert not any(p.name == "escaped.txt" for p in tmp_path.rglob("*"))


def test_an_absolute_member_is_refused(tmp_path):
    outside = tmp_path / "outside.txt"
    archive = _tar(tmp_path / "absolute.tgz", {"top/ok.txt": b"ok", str(outside): b"pwned"})
    destination = tmp_path / "data" / "flowers"
    destination.parent.mkdir(parents=True)
    with pytest.raises(DownloadError) as error:
        unpack_archive(archive, destination)
    assert f"refused to unpack {archive}: member {str(outside)!r} has an absolute path" == str(
        error.value
    )
    assert not outside.exists()
    assert not destination.exists()


@pytest.mark.parametrize(
    ("members", "named"),
    [
        ({"flower_photos": _entry(tarfile.SYMTYPE, ".")}, "flower_photos"),
        ({"top/a.jpg": b"rose", "a.jpg": _entry(tarfile.LNKTYPE, "top/a.jpg")}, "a.jpg"),
    ],
    ids=["symlink-to-itself", "hardlink"],
)
def test_a_link_at_the_top_level_is_refused(tmp_path, members, named):
    archive = _tar(tmp_path / "links.tgz", members)
    destination = tmp_path / "data" / "flowers"
    destination.parent.mkdir(parents=True)
    with pytest.raises(DownloadError, match=f"'{named}' is a link at the top level"):
        unpack_archive(archive, destination)
    assert not destination.exists() and not destination.is_symlink()
    assert sorted(p.name for p in destination.parent.iterdir()) == [], "no leftovers"


@pytest.mark.parametrize(
    ("members", "named"),
    [
        ({"top/up": _entry(tarfile.SYMTYPE, "..")}, "top/up"),
        ({"other/x": b"x", "top/x": _entry(tarfile.SYMTYPE, "../other/x")}, "top/x"),
        ({"other/x": b"x", "top/x": _entry(tarfile.LNKTYPE, "other/x")}, "top/x"),
        (  # each link looks harmless when it is unpacked; together they leave "top"
            {"top/y": _entry(tarfile.SYMTYPE, "d/../y"), "top/d": _entry(tarfile.SYMTYPE, ".")},
            "top/y",
        ),
    ],
    ids=["up", "sibling-symlink", "sibling-hardlink", "through-a-later-link"],
)
def test_a_link_leaving_its_own_top_level_folder_is_refused(tmp_path, members, named):
    archive = _tar(tmp_path / "links.tgz", members)
    destination = tmp_path / "data" / "flowers"
    destination.parent.mkdir(parents=True)
    with pytest.raises(DownloadError, match=f"'{named}' is a link to .* outside 'top'"):
        unpack_archive(archive, destination)
    assert not destination.exists()


def test_links_inside_their_folder_are_kept(tmp_path):
    archive = _tar(
        tmp_path / "links.tgz",
        {
            "top/roses/a.jpg": b"rose",
            "top/latest.jpg": _entry(tarfile.SYMTYPE, "roses/a.jpg"),
            "top/copy.jpg": _entry(tarfile.LNKTYPE, "top/roses/a.jpg"),
        },
    )
    destination = tmp_path / "data" / "flowers"
    destination.parent.mkdir(parents=True)
    unpack_archive(archive, destination)
    assert (destination / "latest.jpg").is_symlink()
    assert (destination / "latest.jpg").read_bytes() == b"rose"
    assert (destination / "copy.jpg").read_bytes() == b"rose"


@pytest.mark.parametrize(
    "members",
    [
        {"a": _entry(tarfile.DIRTYPE, mode=0o700), "a/x.jpg": b"x", "b/y.jpg": b"y"},
        {"top": _entry(tarfile.DIRTYPE, mode=0o700), "top/a/x.jpg": b"x", "top/b/y.jpg": b"y"},
    ],
    ids=["several-top-entries", "one-top-folder"],
)
def test_unpacked_folders_are_readable_by_everyone(tmp_path, umask_022, members):
    archive = _tar(tmp_path / "flowers.tgz", members)
    destination = tmp_path / "data" / "flowers"
    destination.parent.mkdir(parents=True)
    unpack_archive(archive, destination)
    for folder in (destination, destination / "a", destination / "b"):
        assert folder.stat().st_mode & 0o055 == 0o055, f"{folder}: {folder.stat().st_mode:o}"


def test_a_destination_left_as_a_link_by_an_earlier_version_is_replaced(tmp_path):
    destination = tmp_path / "data" / "flowers"
    destination.parent.mkdir(parents=True)
    (destination.parent / "keep.txt").write_text("other data")
    destination.symlink_to(".")
    archive = _tar(tmp_path / "flowers.tgz", {"flower_photos/roses/a.jpg": b"rose"})
    unpack_archive(archive, destination)
    assert not destination.is_symlink()
    assert (destination / "roses" / "a.jpg").read_bytes() == b"rose"
    assert (destination.parent / "keep.txt").read_text() == "other data"


def test_an_archive_with_an_escaping_symlink_is_refused(tmp_path):
    archive = tmp_path / "links.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        link = tarfile.TarInfo("top/passwd")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    destination = tmp_path / "data" / "flowers"
    destination.parent.mkdir(parents=True)
    with pytest.raises(DownloadError, match="refused to unpack"):
        unpack_archive(archive, destination)
    assert not destination.exists()


def test_a_file_that_is_not_an_archive_is_a_download_error(tmp_path):
    archive = tmp_path / "page.html"
    archive.write_text("<html>rate limited</html>")
    destination = tmp_path / "data" / "flowers"
    destination.parent.mkdir(parents=True)
    with pytest.raises(DownloadError, match="cannot unpack"):
        unpack_archive(archive, destination)


def test_an_unreachable_url_is_a_download_error(tmp_path):
    missing = tmp_path / "missing.tgz"
    with pytest.raises(DownloadError, match="cannot download"):
        download_dataset(missing.as_uri(), "0" * 64, tmp_path / "data" / "flowers")
    assert not os.path.exists(tmp_path / "data" / "flowers")
