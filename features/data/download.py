"""Fetch a dataset archive, refuse it unless its SHA-256 matches, unpack it safely."""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from features.errors import UserError
from features.progress import progress

__all__ = ["DownloadError", "download_dataset", "unpack_archive"]


class DownloadError(UserError):
    """The archive could not be fetched, or is not the one that was pinned."""


def _fetch(url: str, target: Path) -> str:
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(target, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with progress(total, "download", unit="B") as bar:
                while block := response.read(1 << 20):
                    out.write(block)
                    digest.update(block)
                    bar.update(len(block))
    except (urllib.error.URLError, TimeoutError, OSError) as error:
        raise DownloadError(
            f"cannot download {url}: {error}. Offline? Fetch the archive elsewhere, unpack it "
            f"and point data.root at the folder (with `downloads: {{}}` in params.yaml)."
        ) from error
    return digest.hexdigest()


class _UnsafeLinkError(tarfile.FilterError):
    """A link that would leave the unpacked dataset, or replace its top folder."""


def _tree(name: str) -> str | None:
    """The top-level folder holding member ``name``, or None for a top-level entry."""
    parts = os.path.normpath(name).split(os.sep)
    return parts[0] if len(parts) > 1 else None


def _outside(target: str, tree: str) -> bool:
    target, tree = os.path.realpath(target), os.path.realpath(tree)
    return os.path.commonpath([target, tree]) != tree


def _member_filter(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo:
    """tarfile's ``data`` filter, stricter in two ways.

    An absolute name is refused where ``data`` would strip the slash and unpack it anyway.
    A hard link must stay inside its own top-level folder, which may become the whole
    destination once that folder is dropped; on disk it is a plain file, so it is checked
    here (symbolic links are checked once everything is unpacked, see :func:`_check_symlinks`).
    """
    if member.name.startswith(("/", os.sep)):
        raise tarfile.AbsolutePathError(member)
    member = tarfile.data_filter(member, path)
    if member.islnk():
        tree = _tree(member.name)
        if tree is None:
            raise _UnsafeLinkError(f"{member.name!r} is a link at the top level of the archive")
        if _outside(os.path.join(path, member.linkname), os.path.join(path, tree)):
            raise _UnsafeLinkError(
                f"{member.name!r} is a link to {member.linkname!r}, outside {tree!r}"
            )
    return member


def _check_symlinks(staging: Path) -> None:
    """Refuse a symlink at the top level or resolving outside its own top-level folder.

    Checked on disk after unpacking because a link's target can change meaning when a
    later member makes a folder on its path a link (``top/y -> d/../y``, then ``top/d -> .``).
    """
    for folder, dirs, files in os.walk(staging):
        for entry in (*dirs, *files):
            link = os.path.join(folder, entry)
            if not os.path.islink(link):
                continue
            name = os.path.relpath(link, staging)
            tree = _tree(name)
            if tree is None:
                raise _UnsafeLinkError(f"{name!r} is a link at the top level of the archive")
            if _outside(link, staging / tree):
                raise _UnsafeLinkError(
                    f"{name!r} is a link to {os.readlink(link)!r}, outside {tree!r}"
                )


def unpack_archive(archive: Path, destination: Path) -> None:
    """Unpack into ``destination``, dropping the archive's single top-level folder.

    tarfile's ``data`` filter, plus :func:`_member_filter` and :func:`_check_symlinks`,
    refuses absolute names, ``..``, device files and links that leave their own top-level
    folder or sit at the top level, so a hostile archive cannot write outside the
    destination or turn it into a link.
    """
    scratch = Path(tempfile.mkdtemp(dir=destination.parent, prefix=".unpack-"))
    # Not mkdtemp's 0700: with several top-level entries this folder becomes the destination.
    staging = scratch / "tree"
    staging.mkdir()
    try:
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(staging, filter=_member_filter)
            _check_symlinks(staging)
        except tarfile.FilterError as error:
            raise DownloadError(f"refused to unpack {archive}: {error}") from error
        except (tarfile.TarError, EOFError, OSError) as error:
            raise DownloadError(f"cannot unpack {archive}: {error}") from error
        entries = [p for p in staging.iterdir() if not p.name.startswith(".")]
        top = entries[0] if len(entries) == 1 and entries[0].is_dir() else staging
        if destination.is_symlink():  # left by a version that let a top-level link through
            destination.unlink()
        elif destination.exists():
            shutil.rmtree(destination)
        top.replace(destination)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def download_dataset(url: str, sha256: str, destination: Path) -> None:
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=destination.parent, prefix=".download-") as scratch:
        archive = Path(scratch) / "archive"
        actual = _fetch(url, archive)
        if actual != sha256.lower():
            raise DownloadError(
                f"{url} has SHA-256 {actual}, expected {sha256}: refusing a dataset that is "
                f"not the pinned one"
            )
        unpack_archive(archive, destination)
