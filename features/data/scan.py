"""Walk a dataset folder and put every file in exactly one bucket: used, ignored or skipped.

Layouts: ``<root>/<class>/...`` or ``<root>/{train,val,test}/<class>/...``; files nested
deeper inside a class folder belong to that class.

Symlinks: a link to a file inside the root is followed (its bytes are hashed like any
file's, so a link to an image of another class is a label conflict); a link that leaves
the root is never followed and is skipped as ``outside_root``. Links to folders are never
followed: one inside the root is an alias of a folder the walk reaches by its real path
anyway (``ignored`` as ``folder_symlink``), one that points at its own ancestor, or at
itself, is a ``symlink_loop``. The walk therefore visits each real folder once, in an
order that does not depend on link names, and cannot loop. Only regular files are ever
opened: a FIFO named ``.jpg`` would block the scan forever.

Every candidate image is hashed and fully decoded here, before any batch runs, so a bad
file is a recorded skip and never a crash hours into extraction. A rerun reads only what
changed: a file whose path, size, mtime and inode match the scan cache keeps its hash and
verdict unread (:mod:`features.data.validate`).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from joblib import Parallel, delayed

from features.data.images import ImageLimits
from features.data.scan_cache import ScanCache, Verdict
from features.data.validate import recall, validate
from features.errors import UserError

__all__ = [
    "IMAGE_EXTENSIONS",
    "SPLITS",
    "FileOutcome",
    "class_folders",
    "detect_layout",
    "image_files",
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
# Lower-cased names of files and folders that operating systems and archivers leave behind.
SYSTEM_NAMES = frozenset({"thumbs.db", "desktop.ini", "icon\r", "ehthumbs.db", "__macosx"})
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


def _is_hidden_or_system(name: str) -> bool:
    return name.startswith(".") or name.lower() in SYSTEM_NAMES


def _real_folders(parent: Path) -> list[os.DirEntry]:
    """Sub-folders that are neither hidden, system nor symlinks (which are never entered)."""
    return [
        entry
        for entry in os.scandir(parent)
        if entry.is_dir(follow_symlinks=False) and not _is_hidden_or_system(entry.name)
    ]


def detect_layout(root: Path) -> bool:
    """True when ``root`` holds predefined ``train``/``val``/``test`` folders."""
    folders = {entry.name for entry in _real_folders(root)}
    return bool(folders) and "train" in folders and folders <= set(SPLITS)


def class_folders(root: Path, predefined: bool) -> set[str]:
    """Names of the class folders, whether or not they hold usable images."""
    parents = (
        [root / split for split in SPLITS if (root / split).is_dir()] if predefined else [root]
    )
    names = {entry.name for parent in parents for entry in _real_folders(parent)}
    for name in names:
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            shown = os.fsencode(name).decode("utf-8", "backslashreplace")
            raise UserError(
                f"class folder '{shown}' under {root} has a name that is not valid UTF-8; "
                f"rename it (class names are written to UTF-8 reports and models)"
            ) from None
    return names


def _symlink_problem(path: Path, real_root: Path) -> str:
    """'' for a link to a regular file inside the root, else ``bucket:reason:detail``."""
    try:
        target = path.resolve(strict=True)
    except RuntimeError:  # Python < 3.13 reports a loop this way
        return f"{SKIPPED}:symlink_loop:symlink resolves to itself"
    except OSError as error:
        if error.errno == errno.ELOOP:
            return f"{SKIPPED}:symlink_loop:{error.strerror}"
        return f"{SKIPPED}:unreadable:broken symlink ({error.strerror})"
    if not target.is_relative_to(real_root):
        return f"{SKIPPED}:outside_root:symlink leads outside data.root; not followed"
    if target.is_dir():
        if path.parent.resolve().is_relative_to(target):
            return f"{SKIPPED}:symlink_loop:symlink to a folder that contains it; not followed"
        shown = target.relative_to(real_root).as_posix()
        return f"{IGNORED}:folder_symlink:alias of {shown}/, which is scanned where it lives"
    return ""


def _walk(root: Path) -> Iterator[tuple[str, Path, str]]:
    """Yield ``(relative, path, problem)`` for every non-folder entry under ``root``.

    ``problem`` is ``bucket:reason:detail`` for an entry that must not be opened, or ''.
    """
    real_root = root.resolve()
    seen = {(os.stat(real_root).st_dev, os.stat(real_root).st_ino)}  # bind mounts can loop
    stack = [(root, "")]
    while stack:
        directory, prefix = stack.pop()
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as error:
            where = prefix.rstrip("/") or "."
            yield where, directory, f"{SKIPPED}:unreadable:folder: {error.strerror}"
            continue
        for entry in entries:
            relative, path = f"{prefix}{entry.name}", Path(entry.path)
            if entry.is_symlink():
                problem = _symlink_problem(path, real_root)
                if problem:
                    yield relative, path, problem
                    continue
            elif entry.is_dir(follow_symlinks=False):
                stat = entry.stat(follow_symlinks=False)
                if (stat.st_dev, stat.st_ino) in seen:
                    yield relative, path, f"{SKIPPED}:symlink_loop:folder already visited"
                    continue
                seen.add((stat.st_dev, stat.st_ino))
                stack.append((path, relative + "/"))
                continue
            yield relative, path, ""


def _outcome(candidate: _Candidate, found: tuple[str, Verdict]) -> FileOutcome:
    sha, verdict = found
    bucket = SKIPPED if verdict["reason"] else USED
    relative, label, split = candidate.relative, candidate.label, candidate.split
    return FileOutcome(relative, bucket, verdict["reason"], verdict["detail"], sha, label, split)


def _screen(relative: str, path: Path, problem: str) -> FileOutcome | None:
    """The outcome of a file that is never opened as an image, or None for a candidate."""
    if problem:
        bucket, reason, detail = problem.split(":", 2)
        return FileOutcome(relative, bucket, reason, detail)
    if any(_is_hidden_or_system(part) for part in relative.split("/")):
        return FileOutcome(relative, IGNORED, "hidden_or_system")
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        extension = f"extension {path.suffix or '(none)'!r}"
        return FileOutcome(relative, IGNORED, "not_an_image_extension", extension)
    return None


def image_files(root: Path) -> list[FileOutcome]:
    """Files under ``root`` that ``prepare`` would open as images, by its rules, sorted.

    ``used`` (not yet validated) for a candidate; ``skipped`` for one it refuses to open
    (a symlink leaving ``root``, a loop, an unreadable folder). Ignored files (hidden,
    system, other extensions, folder links) are left out. For folders without classes,
    such as ``predict``'s inputs, so every command agrees on what counts as an image.
    """
    outcomes = (
        _screen(relative, path, problem) or FileOutcome(relative, USED)
        for relative, path, problem in _walk(Path(root))
    )
    return sorted(
        (outcome for outcome in outcomes if outcome.bucket != IGNORED), key=lambda o: o.path
    )


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
        if (screened := _screen(relative, path, problem)) is not None:
            outcomes.append(screened)
        elif (place := _place(relative, predefined)) is None:
            where = "a split's class folder" if predefined else "a class folder"
            outcomes.append(
                FileOutcome(
                    relative, IGNORED, "outside_class_folder", f"{path.name} is not inside {where}"
                )
            )
        else:
            candidates.append(_Candidate(path, relative, *place))
    # Unchanged files are settled here, a stat each; only the rest go to the threads.
    found = [recall(c.path, c.relative, limits, cache) for c in candidates]
    todo = [i for i, known in enumerate(found) if known is None]
    validated = Parallel(n_jobs=n_jobs, prefer="threads")(
        delayed(validate)(candidates[i].path, candidates[i].relative, limits, cache) for i in todo
    )
    for i, result in zip(todo, validated, strict=True):
        found[i] = result
    outcomes.extend(map(_outcome, candidates, found))
    outcomes.sort(key=lambda outcome: outcome.path)
    return outcomes, predefined
