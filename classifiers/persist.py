"""Save and load heads: a joblib file plus a JSON sidecar that vouches for it.

A joblib file is a pickle, and unpickling runs code: **only load heads you trust**. The
sidecar records the SHA-256 of the joblib bytes and is checked *before* unpickling, on the
very bytes that are then unpickled, so a file that was swapped or tampered with after
training is refused, not executed. The check proves the file is the one training wrote
next to that sidecar; it cannot stop someone who can rewrite both files, which is why
the models folder must be as trusted as the code. The sidecar also carries the store
fingerprint, so a head is never applied to codes computed another way.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import joblib
import sklearn
from sklearn.pipeline import Pipeline

from features.errors import UserError
from features.files import atomic_path, file_sha256, write_text
from features.store.fingerprint import Fingerprint

__all__ = [
    "HeadError",
    "HeadSidecar",
    "load_head",
    "read_sidecar",
    "save_head",
    "sidecar_path",
    "verified_bytes",
]

_Sidecar = TypeVar("_Sidecar")


class HeadError(UserError):
    """A head that is missing, tampered with, or fitted on different codes."""


@dataclass(frozen=True)
class HeadSidecar:
    """What a saved head is, and the checksum that proves it is still that."""

    name: str
    kind: str
    sha256: str
    fingerprint: str  # Fingerprint JSON of the store it was fitted on
    classes: list[str]
    params: dict[str, Any]
    sklearn: str
    created: float


def sidecar_path(model_path: Path) -> Path:
    return Path(model_path).with_suffix(".json")


def save_head(
    model: Pipeline,
    path: Path,
    name: str,
    kind: str,
    fingerprint: Fingerprint,
    classes: list[str],
    params: dict[str, Any],
) -> HeadSidecar:
    """Write ``path`` (joblib) and its sidecar, each atomically; the sidecar goes last."""
    path = Path(path)
    with atomic_path(path) as tmp:
        joblib.dump(model, tmp)
    sidecar = HeadSidecar(
        name,
        kind,
        file_sha256(path),
        fingerprint.to_json(),
        classes,
        params,
        sklearn.__version__,
        time.time(),
    )
    write_text(sidecar_path(path), json.dumps(asdict(sidecar), indent=2, default=str))
    return sidecar


def read_sidecar(path: Path, cls: type[_Sidecar]) -> _Sidecar:
    """The sidecar next to the model file ``path``, as ``cls``; both files must exist."""
    meta = sidecar_path(path)
    if not Path(path).is_file() or not meta.is_file():
        raise HeadError(
            f"no trained head at {path} (with sidecar {meta.name}); run "
            f"`dvc repro` or check the head name"
        )
    try:
        return cls(**json.loads(meta.read_text()))
    except (json.JSONDecodeError, TypeError) as error:
        raise HeadError(f"sidecar {meta} is unreadable: {error}") from error


def verified_bytes(path: Path, sha256: str) -> bytes:
    """The bytes of ``path``, refused unless they hash to ``sha256``.

    The caller deserialises these very bytes, never the file again: no swap in between.
    """
    data = Path(path).read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise HeadError(
            f"refused to load {path}: its SHA-256 {actual[:16]}... does not match the sidecar "
            f"({sha256[:16]}...). The file changed after training; retrain it."
        )
    return data


def load_head(path: Path, expected: Fingerprint | None = None) -> tuple[Pipeline, HeadSidecar]:
    """Verify the sidecar's checksum (and fingerprint), then unpickle."""
    path = Path(path)
    sidecar = read_sidecar(path, HeadSidecar)
    data = verified_bytes(path, sidecar.sha256)
    if expected is not None:
        Fingerprint.from_json(sidecar.fingerprint).require_same(
            expected,
            f"head {path}",
            ours="the head was trained on",
            theirs="the store holds",
            fix=f"Retrain it: `dvc repro train@{sidecar.name}`.",
        )
    return joblib.load(io.BytesIO(data)), sidecar
