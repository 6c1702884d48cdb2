"""Stage outputs written whole or not at all, so a killed stage never leaves half a report."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["write_json"]


def write_json(path: Path, data: object) -> None:
    """Write ``data`` as indented JSON via a temporary file and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)
