"""Fetch a dataset archive, refuse it unless its SHA-256 matches, unpack it safely."""

from __future__ import annotations

import hashlib
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from features.errors import UserError

__all__ = ["DownloadError", "download_dataset", "unpack_archive"]


class DownloadError(UserError):
    """The archive could not be fetched, or is not the one that was pinned."""


def _fetch(url: str, target: Path) -> str:
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(target, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc="download") as bar:
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


def unpack_archive(archive: Path, destination: Path) -> None:
    """Unpack into ``destination``, dropping the archive's single top-level folder.

    ``filter="data"`` refuses absolute paths, ``..``, device files and links that escape,
    so a hostile archive cannot write outside the destination.
    """
    staging = Path(tempfile.mkdtemp(dir=destination.parent, prefix=".unpack-"))
    try:
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(staging, filter="data")
        except tarfile.FilterError as error:
            raise DownloadError(
                f"refused to unpack {archive}: {error} (a member would land outside the "
                f"destination, or is a device or unsafe link)"
            ) from error
        except (tarfile.TarError, EOFError, OSError) as error:
            raise DownloadError(f"cannot unpack {archive}: {error}") from error
        entries = [p for p in staging.iterdir() if not p.name.startswith(".")]
        top = entries[0] if len(entries) == 1 and entries[0].is_dir() else staging
        if destination.exists():
            shutil.rmtree(destination)
        top.replace(destination)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


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
