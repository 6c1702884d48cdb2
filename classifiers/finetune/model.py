"""The network being fine-tuned: a registry backbone, frozen up to a named graph node,
with a new output layer for our classes.

Where training starts is data, as everywhere else in the project: a graph node of
torchvision's ``get_graph_node_names`` (``classifier.0``, ``layer4.2.conv3``) or a module
holding several (``layer4``), never a slice of the network. Frozen modules keep their
parameters fixed and stay in eval mode (no dropout, no batch-norm statistics drift), so
the frozen part computes exactly what ``extract`` computes.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torchvision.models.feature_extraction import get_graph_node_names

from features.compute.backbones import BackboneSpec
from features.data.preprocess import Preprocessing
from features.errors import UserError

__all__ = ["FinetuneNet", "build_network", "finetune_net", "output_layer", "unfrozen_modules"]


def _leaf_nodes(net: nn.Module) -> list[str]:
    """Graph nodes in execution order (the training graph: dropout and batch norm live)."""
    train_nodes, _ = get_graph_node_names(net)
    return train_nodes


def output_layer(net: nn.Module) -> str:
    """The name of the last ``nn.Linear`` the forward pass runs: the layer we replace."""
    modules = dict(net.named_modules())
    linear = [node for node in _leaf_nodes(net) if isinstance(modules.get(node), nn.Linear)]
    if not linear:
        raise UserError(f"{type(net).__name__} has no linear output layer to replace")
    return linear[-1]


def unfrozen_modules(net: nn.Module, unfreeze_from: str, backbone: str) -> frozenset[str]:
    """Modules that train: those the forward pass reaches at or after ``unfreeze_from``.

    ``unfreeze_from`` is a graph node or a module containing graph nodes (``layer4``);
    a name that is neither is refused with the list of nodes to choose from.
    """
    nodes = _leaf_nodes(net)
    inside = [i for i, node in enumerate(nodes) if node.startswith(f"{unfreeze_from}.")]
    if unfreeze_from in nodes:
        start = nodes.index(unfreeze_from)
    elif inside:
        start = inside[0]
    else:
        raise UserError(
            f"finetune.unfreeze_from: {unfreeze_from!r} is not a graph node of {backbone}; "
            f"allowed, in forward order (the first trains everything): {', '.join(nodes[1:])}, "
            f"or a module holding some of them"
        )
    modules = dict(net.named_modules())
    return frozenset(node for node in nodes[start:] if node in modules)


def build_network(
    spec: BackboneSpec,
    state_dict: Mapping[str, torch.Tensor] | None,
    seed: int,
    n_classes: int,
) -> tuple[nn.Module, str]:
    """The backbone from its weights (seeded random init without any) with its output layer
    replaced by a seeded new ``nn.Linear`` for ``n_classes``; and that layer's name."""
    with torch.random.fork_rng(devices=[]):  # as extract builds it: same seed, same weights
        torch.manual_seed(seed)
        net = spec.constructor(weights=None)
    if state_dict is not None:
        net.load_state_dict(dict(state_dict), strict=True)
    name = output_layer(net)
    old = net.get_submodule(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        new = nn.Linear(old.in_features, n_classes)
    net.set_submodule(name, new)
    return net, name


class FinetuneNet(nn.Module):
    """uint8 pixels of shape (B, 3, crop, crop) in, class logits of shape (B, n_classes) out.

    Normalisation runs inside, on the device, as in the extract encoder. ``train()`` puts
    only the unfrozen modules in training mode; :meth:`trainable_state` is what a
    checkpoint must hold, since the rest is the starting weights, unchanged.
    """

    def __init__(
        self,
        net: nn.Module,
        output_layer: str,
        unfrozen: frozenset[str],
        preprocessing: Preprocessing,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.net = net
        self.output_layer = output_layer  # the new layer's name, e.g. classifier.6
        self.unfrozen = unfrozen
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        shift = torch.tensor(preprocessing.mean, dtype=torch.float32) * 255.0
        scale = torch.tensor(preprocessing.std, dtype=torch.float32) * 255.0
        self.register_buffer("shift", shift.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", scale.view(1, 3, 1, 1), persistent=False)
        for name, parameter in net.named_parameters():
            parameter.requires_grad_(name.rpartition(".")[0] in unfrozen)
        self.net.to(memory_format=self.memory_format)
        self.train(False)

    def train(self, mode: bool = True) -> FinetuneNet:
        super().train(mode)
        for name, module in self.net.named_modules():
            if name not in self.unfrozen and not any(module.children()):
                module.train(False)
        return self

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        pixels = pixels.contiguous(memory_format=self.memory_format)
        return self.net((pixels.float() - self.shift) / self.scale)

    def _trainable_keys(self) -> list[str]:
        return [key for key in self.net.state_dict() if key.rpartition(".")[0] in self.unfrozen]

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """Parameters and buffers (batch-norm statistics) of the unfrozen modules."""
        state = self.net.state_dict()
        return {key: state[key].detach().clone() for key in self._trainable_keys()}

    def load_trainable_state(self, state: Mapping[str, torch.Tensor]) -> None:
        expected = set(self._trainable_keys())
        if set(state) != expected:
            raise UserError(
                f"the checkpoint trains {len(state)} tensors, this network {len(expected)}; "
                f"delete the checkpoint folder to start over"
            )
        self.net.load_state_dict(dict(state), strict=False)


def finetune_net(
    spec: BackboneSpec,
    state_dict: Mapping[str, torch.Tensor] | None,
    seed: int,
    n_classes: int,
    unfreeze_from: str,
    preprocessing: Preprocessing,
    channels_last: bool = False,
) -> FinetuneNet:
    """:func:`build_network`, trained from ``unfreeze_from`` on; the new layer always trains."""
    net, output = build_network(spec, state_dict, seed, n_classes)
    unfrozen = unfrozen_modules(net, unfreeze_from, spec.name) | {output}
    return FinetuneNet(net, output, unfrozen, preprocessing, channels_last)
