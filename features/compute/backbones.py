"""The backbone registry: which network, which node, and where its weights come from.

A backbone is data: a torchvision constructor, the graph node whose output we store
(named, never sliced out of the network by hand), the code width, and the pinned ImageNet
checkpoint. Adding ResNet50's pooled features is one more entry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torchvision import models
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

__all__ = ["BACKBONES", "BackboneSpec", "Checkpoint", "build_extractor", "get_backbone"]


@dataclass(frozen=True)
class Checkpoint:
    """A published ImageNet checkpoint, pinned by its full SHA-256."""

    url: str
    sha256: str
    size: int  # bytes, to say how big the download is before it starts

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class BackboneSpec:
    """One registry entry."""

    name: str
    constructor: Callable[..., nn.Module]
    node: str  # graph node whose output is the code, see get_graph_node_names
    dim: int
    imagenet: Checkpoint


BACKBONES: dict[str, BackboneSpec] = {
    "vgg16": BackboneSpec(
        name="vgg16",
        constructor=models.vgg16,
        node="classifier.1",  # the ReLU after fc6 (classifier.0 is fc6 itself)
        dim=4096,
        imagenet=Checkpoint(
            url=models.VGG16_Weights.IMAGENET1K_V1.url,
            sha256="397923af8e79cdbb6a7127f12361acd7a2f83e06b05044ddf496e83de57a5bf0",
            size=553_433_881,
        ),
    ),
    "resnet50": BackboneSpec(
        name="resnet50",
        constructor=models.resnet50,
        node="flatten",  # global-average-pooled features, before the classifier
        dim=2048,
        imagenet=Checkpoint(
            url=models.ResNet50_Weights.IMAGENET1K_V2.url,
            sha256="11ad3fa62ca79e40addfd354a8ec4b7c75143b3038b8d2a807fbc68deab379ca",
            size=102_540_417,
        ),
    ),
}


def get_backbone(name: str) -> BackboneSpec:
    try:
        return BACKBONES[name]
    except KeyError:
        raise KeyError(
            f"unknown backbone {name!r}; available: {', '.join(sorted(BACKBONES))}"
        ) from None


def build_extractor(
    spec: BackboneSpec, state_dict: dict[str, torch.Tensor] | None, seed: int
) -> nn.Module:
    """The backbone truncated at ``spec.node``, in eval mode, returning ``{"codes": ...}``.

    With no ``state_dict`` the weights are torchvision's random initialisation under
    ``seed``, identical on every machine for the same torch version.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = spec.constructor(weights=None)
    if state_dict is not None:
        model.load_state_dict(state_dict, strict=True)
    model.eval()
    _, eval_nodes = get_graph_node_names(model)
    if spec.node not in eval_nodes:
        raise KeyError(f"node {spec.node!r} is not in {spec.name}; see get_graph_node_names")
    return create_feature_extractor(model, return_nodes={spec.node: "codes"}).eval()
