"""``predict``'s inputs: files, folders and ``@list`` files, one row per image file, each
hashed (or given its error) before anything is computed."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from features.data.scan import SKIPPED, image_files
from features.errors import UserError
from features.files import file_sha256

__all__ = ["Prediction", "by_hash", "collect_inputs"]


@dataclass
class Prediction:
    """One input file's row: its label and every class's value, or why it has none."""

    path: str
    sha256: str = ""
    label: str = ""
    values: dict[str, float] = field(default_factory=dict)  # ranked, best first
    codes: str = ""  # store | computed | network (a fine-tuned network ran on the image)
    error: str = ""


def _list_entries(argument: str) -> list[Path]:
    """The paths an ``@list.txt`` argument names; a list that cannot be read is a user error."""
    listing = Path(argument[1:])
    try:
        lines = listing.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise UserError(f"cannot read the list {listing}: {reason}") from error
    entries = (line.strip() for line in lines)
    return [listing.parent / entry for entry in entries if entry and not entry.startswith("#")]


def _rows_for(path: Path) -> list[Prediction]:
    """A folder's images by prepare's rules (files it refuses become error rows), or the path."""
    if not path.is_dir():
        return [Prediction(str(path))]
    return [
        Prediction(
            str(path / found.path),
            error=f"{found.reason}: {found.detail}" if found.bucket == SKIPPED else "",
        )
        for found in image_files(path)
    ]


def collect_inputs(arguments: Sequence[str]) -> list[Prediction]:
    """One row per file the arguments name; every ``@list`` is read before any folder walk."""
    paths = [
        path
        for argument in arguments
        for path in (_list_entries(argument) if argument.startswith("@") else [Path(argument)])
    ]
    rows = [row for path in paths for row in _rows_for(path)]
    if not rows:
        raise UserError(f"no images in {' '.join(arguments)}; give image files or folders")
    return rows


def _hash(row: Prediction) -> None:
    """Fill in the file's content hash, or its error; only regular files are opened."""
    if row.error:
        return
    path = Path(row.path)
    if not path.exists():
        row.error = "missing: no such file"
    elif not path.is_file():
        row.error = "unreadable: not a regular file (a folder, FIFO, socket or device)"
    else:
        try:
            row.sha256 = file_sha256(path)
        except OSError as error:
            row.error = f"unreadable: {error.strerror}"


def by_hash(rows: list[Prediction]) -> dict[str, list[Prediction]]:
    """The rows still to label, by content hash: one computation per distinct image."""
    rows_of: dict[str, list[Prediction]] = defaultdict(list)
    for row in rows:
        _hash(row)
        if not row.error:
            rows_of[row.sha256].append(row)
    return rows_of
