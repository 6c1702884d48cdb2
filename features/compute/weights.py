"""Where backbone weights come from, and proof they are the weights we think they are.

Three sources (``extract.weights``):

- ``imagenet``: torchvision's published checkpoint, cached under ``$TORCH_HOME/hub/checkpoints``
  and checked against its full SHA-256 before *every* load (torchvision only checks an
  8-character prefix, and only at download time);
- a path to a local state-dict file, checked against ``extract.weights_sha256`` when given;
- ``random``: torchvision's initialisation under a seed, for tests and offline demos.

Every file is loaded with ``torch.load(weights_only=True)``: a checkpoint that carries
pickled code is refused rather than executed.
"""

from __future__ import annotations

import pickle
import urllib.error
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch

from features.compute.backbones import BackboneSpec
from features.errors import UserError
from features.files import file_sha256

__all__ = ["ResolvedWeights", "WeightsError", "identify_weights", "resolve_weights"]

RANDOM = "random"
IMAGENET = "imagenet"


class WeightsError(UserError):
    """Weights that cannot be obtained or trusted; the message says how to fix it."""


@dataclass(frozen=True)
class ResolvedWeights:
    """Verified weights: their identity for the fingerprint, the tensors loaded on first use.

    Hashing comes before loading, so a run that will be refused (a locked store, codes of
    another fingerprint) is refused before it pays for reading hundreds of MB of tensors.
    """

    identity: str  # "sha256:<hex>" or "random:<seed>"
    path: Path | None = None  # None: torchvision's seeded random initialisation

    @property
    def is_random(self) -> bool:
        return self.path is None

    @cached_property
    def state_dict(self) -> dict[str, torch.Tensor] | None:
        return None if self.path is None else _load_state_dict(self.path)


def _checkpoint_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def _download(spec: BackboneSpec, target: Path) -> None:
    checkpoint = spec.imagenet
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(target.suffix + ".partial")
    try:
        torch.hub.download_url_to_file(checkpoint.url, str(partial), progress=True)
    except (urllib.error.URLError, OSError, TimeoutError) as error:
        partial.unlink(missing_ok=True)
        raise WeightsError(
            f"cannot download the ImageNet weights for {spec.name} "
            f"({checkpoint.size / 1e6:.0f} MB) from {checkpoint.url}: {error}. "
            f"This machine looks offline. Either download that file elsewhere and copy it "
            f"to {target} (SHA-256 {checkpoint.sha256}), or set extract.weights to the path "
            f"of a local state-dict file, or use extract.weights: random for a pipeline "
            f"smoke test (random-weight codes carry no transferable features)."
        ) from error
    try:
        _verified(partial, checkpoint.sha256, "downloaded checkpoint")
    except WeightsError:
        partial.unlink(missing_ok=True)  # never leave a bad download where a load would find it
        raise
    partial.replace(target)


def _verified(path: Path, expected: str | None, what: str) -> str:
    actual = file_sha256(path)
    if expected is not None and actual != expected.lower():
        raise WeightsError(
            f"{what} {path} has SHA-256 {actual}, expected {expected}. The file is corrupt, "
            f"truncated or a different checkpoint: delete it and download it again."
        )
    return actual


def _refusal_reason(error: Exception) -> str:
    """The line of torch's message that names the forbidden object, not its advice to
    retry with ``weights_only=False`` (which is exactly what must not be done)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return next((line for line in lines if "global" in line.lower()), lines[-1] if lines else "")


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise WeightsError(
            f"refused to load {path}: it contains pickled objects other than tensors, which "
            f"could run code ({_refusal_reason(error)}). If you trust the file, re-save it "
            f"as a plain state dict: torch.save(model.state_dict(), path)."
        ) from error
    except (RuntimeError, OSError, EOFError) as error:
        raise WeightsError(f"cannot read weights file {path}: {error}") from error
    if (
        isinstance(loaded, dict)
        and "state_dict" in loaded
        and isinstance(loaded["state_dict"], dict)
    ):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict) or not all(
        isinstance(value, torch.Tensor) for value in loaded.values()
    ):
        raise WeightsError(f"{path} is not a state dict (a mapping of names to tensors)")
    return loaded


def identify_weights(
    spec: BackboneSpec, setting: str, seed: int, expected_sha256: str | None = None
) -> ResolvedWeights:
    """Fetch (if needed) and verify the weights ``setting`` names, without loading them."""
    if setting == RANDOM:
        return ResolvedWeights(identity=f"random:{seed}")
    if setting == IMAGENET:
        target = _checkpoint_dir() / spec.imagenet.filename
        if not target.exists():
            _download(spec, target)
        digest = _verified(target, spec.imagenet.sha256, "ImageNet checkpoint")
        return ResolvedWeights(f"sha256:{digest}", target)
    path = Path(setting).expanduser()
    if not path.is_file():
        raise WeightsError(
            f"extract.weights={setting!r} is neither 'imagenet', 'random' nor an existing file"
        )
    digest = _verified(path, expected_sha256, "weights file")
    return ResolvedWeights(f"sha256:{digest}", path)


def resolve_weights(
    spec: BackboneSpec, setting: str, seed: int, expected_sha256: str | None = None
) -> ResolvedWeights:
    """:func:`identify_weights`, then load the tensors: a file that is not one fails here."""
    weights = identify_weights(spec, setting, seed, expected_sha256)
    _ = weights.state_dict
    return weights
