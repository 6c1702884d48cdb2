"""What a run computes with: the backbone, its layers, device, precision and verified
weights, resolved once, and the fingerprint that names each layer's codes.

Resolving is cheap (weights hashed, not loaded): a store refuses a mismatched
fingerprint before the network is ever built, in :meth:`Backend.encoder`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import partial

import torch
import torchvision

from features.compute.backbones import BackboneSpec, Layer, build_layers_extractor, get_backbone
from features.compute.config import ExtractConfig
from features.compute.encoder import Encoder, resolve_device, resolve_precision
from features.compute.weights import ResolvedWeights, identify_weights
from features.store.fingerprint import Fingerprint

__all__ = ["Backend", "make_fingerprint", "random_weights_banner", "resolve_backend"]


def random_weights_banner(identity: str) -> str:
    return (
        f"NOTE: {identity} - codes come from RANDOM weights, not ImageNet. They exercise the "
        f"pipeline; any accuracy built on them says nothing about transfer learning."
    )


def make_fingerprint(
    config: ExtractConfig, weights_identity: str, precision: str, layer: Layer | None = None
) -> Fingerprint:
    """The identity of ``layer``'s codes (default: the backbone's default layer)."""
    spec = get_backbone(config.backbone)
    layer = layer or spec.layer(spec.default_layer)
    return Fingerprint(
        backbone=spec.name,
        layer=layer.identity,
        dim=layer.dim,
        weights=weights_identity,
        preprocessing=json.dumps(config.preprocessing.describe(), sort_keys=True),
        precision=precision,
        dtype=config.dtype,
        torch=torch.__version__.split("+")[0],
        torchvision=torchvision.__version__.split("+")[0],
    )


@dataclass(frozen=True)
class Backend:
    """What a run computes with, resolved once: network, layers, device, precision, weights."""

    spec: BackboneSpec
    device: torch.device
    precision: str
    weights: ResolvedWeights
    fingerprints: dict[str, Fingerprint]  # layer name -> its codes' identity, in column order

    @property
    def layers(self) -> tuple[str, ...]:
        return tuple(self.fingerprints)

    @property
    def fingerprint(self) -> Fingerprint:
        """The fingerprint of a one-layer backend (``predict``, single-store callers)."""
        if len(self.fingerprints) != 1:
            raise ValueError(f"{len(self.fingerprints)} layers, so no single fingerprint")
        return next(iter(self.fingerprints.values()))

    def columns(self) -> dict[str, slice]:
        """Where each layer's codes sit in the encoder's output rows."""
        columns, start = {}, 0
        for layer, fingerprint in self.fingerprints.items():
            columns[layer] = slice(start, start + fingerprint.dim)
            start += fingerprint.dim
        return columns

    def with_layers(self, layers: Sequence[str]) -> Backend:
        return replace(self, fingerprints={layer: self.fingerprints[layer] for layer in layers})

    def encoder(self, config: ExtractConfig, compile_batch: int | None = None) -> Encoder:
        """The network on the device; in fp16/bf16 it can build its fp32 twin for retries."""
        extractor = build_layers_extractor(
            self.spec, self.layers, self.weights.state_dict, config.seed
        )
        twin = replace(self, precision="fp32")
        return Encoder(
            extractor,
            config.preprocessing,
            self.device,
            self.precision,
            config.dtype,
            config.channels_last,
            compile_batch,
            fp32=None if self.precision == "fp32" else partial(twin.encoder, config),
        )


def resolve_backend(config: ExtractConfig, layers: Sequence[str] | None = None) -> Backend:
    """Fetch and verify weights, pick device and precision, and fingerprint each layer.

    ``layers`` are names from the backbone's registry entry; None: its default layer.

    Nothing heavy happens here: the tensors load, and the network is built, only in
    :meth:`Backend.encoder`, after the store has accepted the lock and the fingerprint.
    """
    spec = get_backbone(config.backbone)
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    weights = identify_weights(spec, config.weights, config.seed, config.weights_sha256)
    fingerprints = {
        name: make_fingerprint(config, weights.identity, precision, spec.layer(name))
        for name in dict.fromkeys(layers or (spec.default_layer,))
    }
    return Backend(spec, device, precision, weights, fingerprints)
