"""Save and load a fine-tuned network: a ``.pt`` state dict plus a JSON sidecar vouching
for it, as heads are saved (:mod:`classifiers.persist`).

The sidecar records the SHA-256 of the ``.pt`` bytes, checked before anything is
deserialised, on the very bytes that are then read; and those are read with
``torch.load(weights_only=True)``, which refuses pickled code outright. It also says
what the network is (backbone, classes, the layer replaced, where training started) and
how its inputs were prepared, so ``predict`` prepares new images the same way.
"""

from __future__ import annotations

import io
import json
import pickle
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from classifiers.finetune.model import FinetuneNet
from classifiers.persist import HeadError, read_sidecar, sidecar_path, verified_bytes
from features.compute.backbones import get_backbone
from features.data.preprocess import Preprocessing
from features.files import atomic_path, file_sha256, write_text

__all__ = ["KIND", "FinetuneSidecar", "load_finetuned", "save_finetuned"]

KIND = "finetune"


@dataclass(frozen=True)
class FinetuneSidecar:
    """What a saved fine-tuned network is, and the checksum that proves it is still that."""

    name: str
    kind: str  # always "finetune": tells it from a head's sidecar
    sha256: str
    backbone: str
    unfreeze_from: str
    output_layer: str  # the replaced layer, e.g. classifier.6: n_classes outputs
    classes: list[str]
    weights: str  # the starting weights' identity: "sha256:<hex>" or "random:<seed>"
    preprocessing: dict[str, Any]  # Preprocessing's fields
    params: dict[str, Any]  # the finetune params it was trained with
    best_epoch: int
    torch: str
    created: float

    @property
    def random_weights(self) -> bool:
        return self.weights.startswith("random:")

    @property
    def preprocessing_config(self) -> Preprocessing:
        fields = dict(self.preprocessing)
        return Preprocessing(
            **{**fields, "mean": tuple(fields["mean"]), "std": tuple(fields["std"])}
        )


def save_finetuned(
    net: FinetuneNet,
    path: Path,
    sidecar: FinetuneSidecar,
) -> FinetuneSidecar:
    """Write the whole network's state dict to ``path`` and then the sidecar (with the
    file's SHA-256 filled in), each atomically; return the sidecar written."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(net.net.state_dict(), tmp)
    written = FinetuneSidecar(
        **{**asdict(sidecar), "sha256": file_sha256(path), "created": time.time()}
    )
    write_text(sidecar_path(path), json.dumps(asdict(written), indent=2))
    return written


def _skeleton(sidecar: FinetuneSidecar) -> nn.Module:
    """The architecture with no weights at all (meta tensors): loading fills it in."""
    spec = get_backbone(sidecar.backbone)
    with torch.device("meta"):
        net = spec.constructor(weights=None)
        old = net.get_submodule(sidecar.output_layer)
        net.set_submodule(sidecar.output_layer, nn.Linear(old.in_features, len(sidecar.classes)))
    return net


def load_finetuned(path: Path, channels_last: bool = False) -> tuple[FinetuneNet, FinetuneSidecar]:
    """The network at ``path`` in eval mode and its sidecar; a file whose bytes do not
    match the sidecar, or that holds anything but tensors, is refused unread."""
    path = Path(path)
    sidecar = read_sidecar(path, FinetuneSidecar)
    if sidecar.kind != KIND:
        raise HeadError(f"{path} is a {sidecar.kind!r} model, not a fine-tuned network")
    data = verified_bytes(path, sidecar.sha256)
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise HeadError(f"refused to load {path}: it holds more than tensors") from error
    net = _skeleton(sidecar)
    try:
        net.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as error:
        raise HeadError(f"{path} does not fit its sidecar's {sidecar.backbone}: {error}") from error
    model = FinetuneNet(
        net, sidecar.output_layer, frozenset(), sidecar.preprocessing_config, channels_last
    )
    return model.eval(), sidecar
