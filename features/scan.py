"""Walk a dataset folder and put every file in exactly one bucket: used, ignored or skipped.

Layouts: ``<root>/<class>/...`` or ``<root>/{train,val,test}/<class>/...``; files nested
deeper inside a class folder belong to that class. Symlinks are followed only while they
stay inside the root, and a directory is entered at most once, so loops cannot hang the
walk. Every candidate image is hashed and fully decoded here, before any batch runs, so a
bad file is a recorded skip and never a crash hours into extraction.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from joblib import Parallel, delayed

from features.errors import UserError
from features.images import ImageLimits, ImageRejected, probe_image

__all__ = [
    "IMAGE_EXTENSIONS",
    "SPLITS",
    "FileOutcome",
    "ScanCache",
    "class_folders",
    "detect_layout",
    "scan_dataset",
]

IMAGE_EXTENSIONS = frozenset(
    {
        ".jpg",
        ".jpeg",
        ".jpe",
        ".png",
        ".gif",
        ".bmp",
        ".tif",
        ".tiff",
        ".webp",
        ".ppm",
        ".pgm",
        ".pbm",
    }
)
SYSTEM_FILES = frozenset({"thumbs.db", "desktop.ini", "icon\r", "ehthumbs.db"})
SPLITS = ("train", "val", "test")

USED, IGNORED, SKIPPED = "used", "ignored", "skipped"


@dataclass(frozen=True)
class FileOutcome:
    """What happened to one file under the root."""

    path: str  # relative POSIX path, never absolute, never with ".."
    bucket: str  # used | ignored | skipped
    reason: str = ""  # why it was ignored or skipped
    detail: str = ""
    sha256: str = ""
    label: str = ""
    split: str = ""  # "" when the split is assigned later, by content hash


@dataclass(frozen=True)
class _Candidate:
    path: Path
    relative: str
    label: str
    split: str


class ScanCache:
    """Validation verdicts by content hash, so reruns neither re-decode nor change their mind.

    A file that was skipped stays skipped until its bytes (hence its hash) change.
    """

    def __init__(self, entries: dict[str, dict[str, str]] | None = None) -> None:
        self.entries = entries or {}

    def get(self, sha256: str, limits: ImageLimits) -> dict[str, str] | None:
        return self.entries.get(f"{sha256}:{limits.min_side}:{limits.max_pixels}")

    def put(self, sha256: str, limits: ImageLimits, verdict: dict[str, str]) -> None:
        self.entries[f"{sha256}:{limits.min_side}:{limits.max_pixels}"] = verdict


def detect_layout(root: Path) -> bool:
    """True when ``root`` holds predefined ``train``/``val``/``test`` folders."""
    folders = {p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")}
    return bool(folders) and "train" in folders and folders <= set(SPLITS)


def class_folders(root: Path, predefined: bool) -> set[str]:
    """Names of the class folders, whether or not they hold usable images."""
    parents = (
        [root / split for split in SPLITS if (root / split).is_dir()] if predefined else [root]
    )
    return {
        child.name
        for parent in parents
        for child in parent.iterdir()
        if child.is_dir() and not _is_hidden_or_system(child.name)
    }


def _is_hidden_or_system(name: str) -> bool:
    return name.startswith(".") or name.lower() in SYSTEM_FILES


def _walk(root: Path) -> Iterator[tuple[str, Path | None, str]]:
    """Yield ``(relative, path, problem)``: a path to classify, or None with a skip reason."""
    real_root = root.resolve()
    seen_dirs = {os.stat(real_root).st_ino}
    stack = [(root, "")]
    while stack:
        directory, prefix = stack.pop()
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as error:
            yield prefix.rstrip("/") or ".", None, f"unreadable:{error.strerror}"
            continue
        for entry in entries:
            relative = f"{prefix}{entry.name}"
            path = Path(entry.path)
            if entry.is_symlink():
                try:
                    target = path.resolve(strict=True)
                except RuntimeError:
                    yield relative, None, "symlink_loop:symlink resolves to itself"
                    continue
                except OSError as error:
                    reason = "symlink_loop" if error.errno == 40 else "unreadable"
                    yield relative, None, f"{reason}:{error.strerror}"
                    continue
                if not target.is_relative_to(real_root):
                    yield relative, None, "outside_root:symlink points outside data.root"
                    continue
            try:
                is_dir = entry.is_dir()
            except OSError as error:
                yield relative, None, f"unreadable:{error.strerror}"
                continue
            if is_dir:
                inode = os.stat(path).st_ino
                if inode in seen_dirs:
                    yield relative, None, "symlink_loop:directory already visited"
                    continue
                seen_dirs.add(inode)
                stack.append((path, relative + "/"))
            else:
                yield relative, path, ""


def _hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _validate(candidate: _Candidate, limits: ImageLimits, cache: ScanCache) -> FileOutcome:
    base = FileOutcome(candidate.relative, USED, label=candidate.label, split=candidate.split)
    try:
        sha = _hash(candidate.path)
    except OSError as error:
        return replace(base, bucket=SKIPPED, reason="unreadable", detail=str(error.strerror))
    base = replace(base, sha256=sha)
    verdict = cache.get(sha, limits)
    if verdict is None:
        try:
            probe = probe_image(candidate.path, limits)
            verdict = {
                "reason": "",
                "detail": f"{probe.format} {probe.mode} {probe.width}x{probe.height}",
            }
        except ImageRejected as rejected:
            verdict = {"reason": rejected.reason, "detail": rejected.detail}
        cache.put(sha, limits, verdict)
    if verdict["reason"]:
        return replace(base, bucket=SKIPPED, reason=verdict["reason"], detail=verdict["detail"])
    return replace(base, detail=verdict["detail"])


def _place(relative: str, predefined: bool) -> tuple[str, str] | None:
    """(label, split) of a file from its folders, or None when it sits outside a class."""
    parts = relative.split("/")
    if predefined:
        if len(parts) < 3:
            return None
        return parts[1], parts[0]
    if len(parts) < 2:
        return None
    return parts[0], ""


def scan_dataset(
    root: Path, limits: ImageLimits, cache: ScanCache | None = None, n_jobs: int = -1
) -> tuple[list[FileOutcome], bool]:
    """Classify every file under ``root``; returns outcomes and whether splits are predefined."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"data.root={str(root)!r} is not a folder; point it at your images")
    cache = cache if cache is not None else ScanCache()
    predefined = detect_layout(root)
    outcomes: list[FileOutcome] = []
    candidates: list[_Candidate] = []
    for relative, path, problem in _walk(root):
        if path is None:
            reason, _, detail = problem.partition(":")
            outcomes.append(FileOutcome(relative, SKIPPED, reason, detail))
            continue
        name = path.name
        if any(_is_hidden_or_system(part) for part in relative.split("/")):
            outcomes.append(FileOutcome(relative, IGNORED, "hidden_or_system"))
        elif path.suffix.lower() not in IMAGE_EXTENSIONS:
            outcomes.append(
                FileOutcome(
                    relative,
                    IGNORED,
                    "not_an_image_extension",
                    f"extension {path.suffix or '(none)'!r}",
                )
            )
        elif (place := _place(relative, predefined)) is None:
            where = "a split's class folder" if predefined else "a class folder"
            outcomes.append(
                FileOutcome(
                    relative, IGNORED, "outside_class_folder", f"{name} is not inside {where}"
                )
            )
        else:
            candidates.append(_Candidate(path, relative, *place))
    validated = Parallel(n_jobs=n_jobs, prefer="threads")(
        delayed(_validate)(candidate, limits, cache) for candidate in candidates
    )
    outcomes.extend(validated)
    outcomes.sort(key=lambda outcome: outcome.path)
    return outcomes, predefined
