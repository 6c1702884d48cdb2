"""Retrain VGG16's classifier block on stored pool5 maps: fine-tuning without the convolutions.

"Keep the convolutional layers, retrain the rest": fc6 -> ReLU -> dropout -> fc7 -> ReLU ->
dropout start from the very weights that produced the maps (pretrained or seeded random),
then a new output layer. The maps come from the store (``vgg16_pool5_map``), so an epoch
costs the block's ~0.2 GFLOP per image instead of the convolutions' ~15.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from torch import nn

from features.compute.backbones import build_backbone, get_backbone
from features.compute.encoder import resolve_device
from features.compute.weights import resolve_weights

__all__ = [
    "BlockInit",
    "ClassifierBlock",
    "ClassifierBlockClassifier",
    "block_init",
]

_BLOCK = {"fc6": "0", "fc7": "3"}  # our layer -> its index in torchvision's vgg.classifier


@dataclass(frozen=True)
class BlockInit:
    """fc6 and fc7 as the backbone that produced the maps has them, and whose they are."""

    weights: str  # the fingerprint's identity: "random:<seed>" or "sha256:<hex>"
    tensors: dict[str, torch.Tensor] = field(repr=False)  # "fc6.weight", "fc7.bias", ...


def block_init(backbone: str, weights: str, seed: int, sha256: str | None) -> BlockInit:
    """fc6/fc7 of ``backbone`` under the ``extract:`` weights setting (hash-checked)."""
    spec = get_backbone(backbone)
    resolved = resolve_weights(spec, weights, seed, sha256)
    classifier = build_backbone(spec, resolved.state_dict, seed).classifier
    tensors = {
        f"{ours}.{kind}": getattr(classifier[int(index)], kind).detach().clone()
        for ours, index in _BLOCK.items()
        for kind in ("weight", "bias")
    }
    return BlockInit(resolved.identity, tensors)


class ClassifierBlock(nn.Module):
    """VGG16's fc6 and fc7 (ReLU and dropout after each) and a new output layer."""

    def __init__(self, init: BlockInit, n_classes: int, dropout: float) -> None:
        super().__init__()
        fc6, fc7 = init.tensors["fc6.weight"], init.tensors["fc7.weight"]
        self.fc6 = nn.Linear(fc6.shape[1], fc6.shape[0])
        self.fc7 = nn.Linear(fc7.shape[1], fc7.shape[0])
        self.load_state_dict(init.tensors, strict=False)
        self.out = nn.Linear(fc7.shape[0], n_classes)
        self.dropout = nn.Dropout(dropout)

    def fc6_codes(self, maps: torch.Tensor) -> torch.Tensor:
        """What ``vgg16_fc6`` stores for these maps: the alignment check compares the two."""
        return torch.relu(self.fc6(maps))

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        hidden = self.dropout(self.fc6_codes(maps))
        return self.out(self.dropout(torch.relu(self.fc7(hidden))))


def _batches(n: int, size: int, order: torch.Tensor | None = None) -> list[torch.Tensor]:
    index = torch.arange(n) if order is None else order
    return [index[start : start + size] for start in range(0, n, size)]


class ClassifierBlockClassifier(ClassifierMixin, BaseEstimator):
    """A scikit-learn classifier around :class:`ClassifierBlock`, so persistence, ``predict``
    and ``compare`` treat it as any head.

    ``fit`` takes the block's initial weights (``init``, from :func:`block_init`) and a
    validation split: each epoch is scored on it and the best epoch's weights are kept
    (early stopping after ``patience`` epochs without a better val accuracy). Seeded, and
    deterministic on CPU; on CUDA when ``device`` resolves to it.
    """

    def __init__(
        self,
        epochs: int = 20,
        patience: int = 3,
        lr: float = 1e-4,
        weight_decay: float = 5e-4,
        batch_size: int = 64,
        dropout: float = 0.5,
        device: str = "auto",
        seed: int = 0,
    ) -> None:
        self.epochs = epochs
        self.patience = patience
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.dropout = dropout
        self.device = device
        self.seed = seed

    def _tensor(self, X: np.ndarray, index: torch.Tensor) -> torch.Tensor:
        rows = torch.from_numpy(np.asarray(X[index.numpy()], dtype=np.float32))
        return rows.to(self.device_)

    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        init: BlockInit | None = None,
        X_val: np.ndarray | None = None,
        y_val: np.ndarray | None = None,
        log: Callable[[str], None] = print,
    ) -> ClassifierBlockClassifier:
        if init is None or X_val is None or y_val is None:
            raise ValueError("the classifier block needs its initial weights and a val split")
        self.classes_ = np.unique(y)
        self.device_ = resolve_device(self.device)
        self.weights_ = init.weights
        targets = torch.from_numpy(np.searchsorted(self.classes_, y)).to(self.device_)
        val_targets = torch.from_numpy(np.searchsorted(self.classes_, y_val)).to(self.device_)
        generator = torch.Generator().manual_seed(self.seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            model = ClassifierBlock(init, len(self.classes_), self.dropout).to(self.device_)
            optimizer = torch.optim.AdamW(  # fused: half the step time on 2 CPU cores
                model.parameters(), lr=self.lr, weight_decay=self.weight_decay, fused=True
            )
            best, best_accuracy, stale = copy.deepcopy(model.state_dict()), -1.0, 0
            self.curves_: list[dict[str, float]] = []
            for epoch in range(1, self.epochs + 1):
                train_loss = self._epoch(model, optimizer, X, targets, generator)
                val_loss, val_accuracy = self._score(model, X_val, val_targets)
                self.curves_.append(
                    {
                        "epoch": epoch,
                        "train_loss": train_loss,
                        "val_loss": val_loss,
                        "val_accuracy": val_accuracy,
                    }
                )
                log(
                    f"epoch {epoch}/{self.epochs}: train loss {train_loss:.4f}, "
                    f"val loss {val_loss:.4f}, val accuracy {val_accuracy:.4f}"
                )
                if val_accuracy > best_accuracy:
                    best, best_accuracy, stale = copy.deepcopy(model.state_dict()), val_accuracy, 0
                else:
                    stale += 1
                if stale >= self.patience:
                    break
        model.load_state_dict(best)
        self.module_ = model.eval()
        self.best_epoch_ = max(self.curves_, key=lambda row: row["val_accuracy"])["epoch"]
        return self

    def _epoch(
        self,
        model: ClassifierBlock,
        optimizer: torch.optim.Optimizer,
        X: np.ndarray,
        targets: torch.Tensor,
        generator: torch.Generator,
    ) -> float:
        model.train()
        order = torch.randperm(len(targets), generator=generator)
        total = 0.0
        for index in _batches(len(targets), self.batch_size, order):
            loss = nn.functional.cross_entropy(model(self._tensor(X, index)), targets[index])
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    "the classifier block's loss became NaN or inf; lower heads.<name>.lr"
                )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(index)
        return total / len(targets)

    @torch.no_grad()
    def _logits(self, model: ClassifierBlock, X: np.ndarray) -> torch.Tensor:
        model.eval()
        return torch.cat([model(self._tensor(X, i)) for i in _batches(len(X), self.batch_size)])

    def _score(
        self, model: ClassifierBlock, X: np.ndarray, targets: torch.Tensor
    ) -> tuple[float, float]:
        logits = self._logits(model, X)
        loss = nn.functional.cross_entropy(logits, targets).item()
        return loss, (logits.argmax(1) == targets).float().mean().item()

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return torch.softmax(self._logits(self.module_, X), dim=1).cpu().numpy()

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(axis=1)]

    def __getstate__(self) -> dict:
        """Pickled on the CPU, so a head trained on CUDA loads anywhere."""
        state = self.__dict__.copy()
        if "module_" in state:
            state["module_"] = copy.deepcopy(self.module_).cpu()
            state["device_"] = torch.device("cpu")
        return state
