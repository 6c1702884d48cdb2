"""The backbone registry: which network, which layers, and where its weights come from.

A backbone is data: a torchvision constructor, the layers it offers (each a named graph
node, never sliced out of the network by hand, with its code width and any reduction),
the layer stored by default, and the pinned ImageNet checkpoint. Adding ResNet50's pooled
features is one more entry; adding a layer is one more :class:`Layer`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torchvision import models
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

from features.errors import UserError

__all__ = [
    "BACKBONES",
    "REDUCTIONS",
    "BackboneSpec",
    "Checkpoint",
    "Layer",
    "LayersExtractor",
    "build_backbone",
    "build_extractor",
    "build_layers_extractor",
    "get_backbone",
]

# A node's output to a (B, width) code; keyed by ``Layer.reduction``.
REDUCTIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "global_mean_hw": lambda maps: maps.mean((2, 3)),  # (B, C, H, W) -> (B, C)
}


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
class Layer:
    """One representation a backbone offers: a graph node and how it becomes a code."""

    name: str
    node: str  # graph node whose output is taken, see get_graph_node_names
    dim: int  # code width, after the reduction
    reduction: str | None = None  # a REDUCTIONS key; None: the node's output is (B, dim)
    is_map: bool = False  # a spatial map for heads that retrain layers, not a code

    @property
    def identity(self) -> str:
        """What a fingerprint records: the node, and the reduction when there is one, so
        pooled pool5 codes never pass for the raw map's."""
        return f"{self.node}:{self.reduction}" if self.reduction else self.node


@dataclass(frozen=True)
class BackboneSpec:
    """One registry entry; ``node`` and ``dim`` are those of its default layer."""

    name: str
    constructor: Callable[..., nn.Module]
    layers: tuple[Layer, ...]
    default_layer: str
    imagenet: Checkpoint

    @property
    def layer_names(self) -> tuple[str, ...]:
        return tuple(layer.name for layer in self.layers)

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise UserError(
            f"unknown layer {name!r} for {self.name}; available: {', '.join(self.layer_names)}"
        )

    def layer_with_identity(self, identity: str) -> Layer:
        """The layer a fingerprint names (its ``layer`` field is :attr:`Layer.identity`)."""
        for layer in self.layers:
            if layer.identity == identity:
                return layer
        raise UserError(
            f"{self.name} has no layer {identity!r}; its layers: "
            + ", ".join(f"{layer.name} ({layer.identity})" for layer in self.layers)
        )

    @property
    def node(self) -> str:
        return self.layer(self.default_layer).node

    @property
    def dim(self) -> int:
        return self.layer(self.default_layer).dim


BACKBONES: dict[str, BackboneSpec] = {
    "vgg16": BackboneSpec(
        name="vgg16",
        constructor=models.vgg16,
        layers=(
            # classifier.0 is fc6 itself, classifier.3 fc7: we take the ReLUs after them.
            Layer("fc6", "classifier.1", 4096),
            Layer("fc7", "classifier.4", 4096),
            # The last max-pool's (B, 512, 7, 7) map averaged to 512-d, never 25,088-d.
            Layer("pool5", "features.30", 512, reduction="global_mean_hw"),
            # The whole map as the classifier block reads it (after the 7x7 adaptive pool,
            # which is the identity at 224 px): for heads that retrain fc6 and fc7.
            Layer("pool5_map", "flatten", 25088, is_map=True),
        ),
        default_layer="fc6",
        imagenet=Checkpoint(
            url=models.VGG16_Weights.IMAGENET1K_V1.url,
            sha256="397923af8e79cdbb6a7127f12361acd7a2f83e06b05044ddf496e83de57a5bf0",
            size=553_433_881,
        ),
    ),
    "resnet50": BackboneSpec(
        name="resnet50",
        constructor=models.resnet50,
        # global-average-pooled features, before the classifier
        layers=(Layer("pool", "flatten", 2048),),
        default_layer="pool",
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


def build_backbone(
    spec: BackboneSpec, state_dict: dict[str, torch.Tensor] | None, seed: int
) -> nn.Module:
    """The whole network in eval mode, with ``state_dict`` or, without one, torchvision's
    random initialisation under ``seed``, identical on every machine for one torch version."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = spec.constructor(weights=None)
    if state_dict is not None:
        model.load_state_dict(state_dict, strict=True)
    return model.eval()


def _truncated(
    spec: BackboneSpec, state_dict: dict[str, torch.Tensor] | None, seed: int, nodes: dict[str, str]
) -> nn.Module:
    """The backbone in eval mode returning ``{name: output}`` for ``nodes`` (node -> name)."""
    model = build_backbone(spec, state_dict, seed)
    _, eval_nodes = get_graph_node_names(model)
    for node in nodes:
        if node not in eval_nodes:
            raise KeyError(f"node {node!r} is not in {spec.name}; see get_graph_node_names")
    return create_feature_extractor(model, return_nodes=nodes).eval()


def build_extractor(
    spec: BackboneSpec, state_dict: dict[str, torch.Tensor] | None, seed: int
) -> nn.Module:
    """The backbone truncated at ``spec.node``, in eval mode, returning ``{"codes": ...}``."""
    return _truncated(spec, state_dict, seed, {spec.node: "codes"})


class LayersExtractor(nn.Module):
    """Several layers from one forward pass: ``{layer name: (B, dim) codes}``.

    The reductions run inside the module, so a caller (and a compiled graph) sees only
    codes, and pool5's 25,088-d map never leaves it.
    """

    def __init__(self, body: nn.Module, layers: Sequence[Layer]) -> None:
        super().__init__()
        self.body = body
        self.layers = tuple(layers)

    def forward(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        outputs = self.body(pixels)
        return {
            layer.name: REDUCTIONS[layer.reduction](outputs[layer.name])
            if layer.reduction
            else outputs[layer.name]
            for layer in self.layers
        }


def build_layers_extractor(
    spec: BackboneSpec,
    layer_names: Sequence[str],
    state_dict: dict[str, torch.Tensor] | None,
    seed: int,
) -> LayersExtractor:
    """One extractor for ``layer_names``: the shared trunk runs once for all of them.

    Raises :class:`UserError` naming the available layers for an unknown name.
    """
    if not layer_names:
        raise UserError(f"no layers asked of {spec.name}; available: {', '.join(spec.layer_names)}")
    layers = [spec.layer(name) for name in dict.fromkeys(layer_names)]
    body = _truncated(spec, state_dict, seed, {layer.node: layer.name for layer in layers})
    return LayersExtractor(body, layers).eval()
