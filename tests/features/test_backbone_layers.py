"""The layer registry and the multi-layer extractor: each layer equals a plain forward pass.

Random weights, fp32, CPU, 64 px inputs (torchvision's VGG16 pools adaptively to 7x7).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision import models
from torchvision.models.feature_extraction import create_feature_extractor

from features.compute.backbones import BACKBONES, build_extractor, build_layers_extractor
from features.compute.backend import make_fingerprint
from features.compute.config import ExtractConfig
from features.errors import UserError

VGG16 = BACKBONES["vgg16"]


@pytest.fixture(scope="module")
def vgg16() -> nn.Module:
    torch.manual_seed(0)
    return models.vgg16(weights=None).eval()


@pytest.fixture(scope="module")
def batch() -> torch.Tensor:
    return torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def vgg16_layers(vgg16: nn.Module, batch: torch.Tensor) -> dict[str, torch.Tensor]:
    names = ["fc6", "fc7", "pool5", "pool5_map"]
    extractor = build_layers_extractor(VGG16, names, vgg16.state_dict(), 9)
    with torch.inference_mode():
        return extractor(batch)


def _plain_vgg16(model: nn.Module, batch: torch.Tensor) -> dict[str, torch.Tensor]:
    """The four layers by hand from torchvision's modules."""
    maps = model.features(batch)
    flat = torch.flatten(model.avgpool(maps), 1)
    fc6 = model.classifier[1](model.classifier[0](flat.clone()))
    fc7 = model.classifier[4](model.classifier[3](fc6))  # classifier[2] is eval-mode dropout
    return {"fc6": fc6, "fc7": fc7, "pool5": maps.mean((2, 3)), "pool5_map": flat}


def test_registry_lists_layers_and_keeps_the_default_layer():
    assert [(layer.name, layer.node, layer.dim) for layer in VGG16.layers] == [
        ("fc6", "classifier.1", 4096),
        ("fc7", "classifier.4", 4096),
        ("pool5", "features.30", 512),
        ("pool5_map", "flatten", 25088),
    ]
    assert VGG16.layer("pool5").reduction == "global_mean_hw"
    assert BACKBONES["resnet50"].layer_names == ("pool",)
    for name, node, dim in [("vgg16", "classifier.1", 4096), ("resnet50", "flatten", 2048)]:
        fingerprint = make_fingerprint(ExtractConfig(backbone=name), "weights", "fp32")
        assert (fingerprint.layer, fingerprint.dim) == (node, dim)


def test_vgg16_layers_match_a_plain_forward_pass(vgg16, batch, vgg16_layers):
    with torch.inference_mode():
        expected = _plain_vgg16(vgg16, batch)
    for name, codes in vgg16_layers.items():
        assert codes.shape == (3, VGG16.layer(name).dim)
        torch.testing.assert_close(codes, expected[name], atol=1e-5, rtol=0)
    assert (vgg16_layers["fc6"] >= 0).all() and (vgg16_layers["fc7"] >= 0).all(), "ReLUs"


def test_layers_together_equal_each_alone(vgg16, batch, vgg16_layers):
    together = build_layers_extractor(VGG16, ["fc7", "fc6"], vgg16.state_dict(), 0)
    with torch.inference_mode():
        pair = together(batch)
        for name in ("fc6", "fc7"):
            alone = build_layers_extractor(VGG16, [name], vgg16.state_dict(), 0)(batch)
            assert list(alone) == [name]
            assert torch.equal(pair[name], alone[name])
            assert torch.equal(vgg16_layers[name], alone[name])
    assert list(pair) == ["fc7", "fc6"], "in the order asked"


def test_single_layer_extractor_is_unchanged(vgg16, batch, vgg16_layers):
    """``build_extractor`` (what stores are filled with today) still gives the same bits."""
    before = create_feature_extractor(vgg16, return_nodes={"classifier.1": "codes"})
    with torch.inference_mode():
        codes = build_extractor(VGG16, vgg16.state_dict(), seed=5)(batch)["codes"]
        assert torch.equal(codes, before(batch)["codes"])
    assert torch.equal(codes, vgg16_layers["fc6"])


def test_resnet50_pool_matches_the_model_without_its_classifier(batch):
    torch.manual_seed(0)
    reference = models.resnet50(weights=None).eval()
    spec = BACKBONES["resnet50"]
    extractor = build_layers_extractor(spec, ["pool"], reference.state_dict(), 0)
    with torch.inference_mode():
        codes = extractor(batch)["pool"]
        single = build_extractor(spec, reference.state_dict(), 0)(batch)["codes"]
        reference.fc = nn.Identity()
        expected = reference(batch)
    assert codes.shape == (3, 2048)
    torch.testing.assert_close(codes, expected, atol=1e-5, rtol=0)
    assert torch.equal(codes, single)


@pytest.mark.parametrize("names", [["fc6", "fc8"], []])
def test_unknown_or_no_layer_names_the_available_ones(names):
    with pytest.raises(UserError, match="available: fc6, fc7, pool5, pool5_map"):
        build_layers_extractor(VGG16, names, None, 0)
