"""Feature sets: named (backbone, layer) pairs, each stored in its own store.

A feature set is what a head is trained on. Several sets of one backbone share a single
forward pass (:func:`by_backbone`), and each lives at ``<store root>/<name>`` with its own
fingerprint, so adding one never touches another's codes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from features.compute.backbones import BACKBONES, Layer, get_backbone

__all__ = ["DEFAULT_FEATURE_SETS", "NAME_PATTERN", "FeatureSet", "by_backbone"]

# Letters, digits and underscores: a folder name, and the part after the '-' of a
# train@<head>-<feature set> stage name, so a dash would make that name ambiguous.
NAME_PATTERN = re.compile(r"[A-Za-z0-9_]+")


@dataclass(frozen=True)
class FeatureSet:
    """Which network and which of its layers: ``{backbone: vgg16, layer: fc6}``."""

    backbone: str = field(default="vgg16", metadata={"choices": tuple(BACKBONES)})
    layer: str = "fc6"  # one of the backbone's layers (features/compute/backbones.py)

    @property
    def spec(self) -> Layer:
        return get_backbone(self.backbone).layer(self.layer)


DEFAULT_FEATURE_SETS = {"vgg16_fc6": FeatureSet("vgg16", "fc6")}


def by_backbone(sets: dict[str, FeatureSet]) -> dict[str, dict[str, FeatureSet]]:
    """The sets grouped by backbone, in the order given: one forward pass per group."""
    groups: dict[str, dict[str, FeatureSet]] = {}
    for name, feature_set in sets.items():
        groups.setdefault(feature_set.backbone, {})[name] = feature_set
    return groups
