"""Writer: the training state in one file, replaced whole, and read back to resume.

The checkpoint is one dict: the unfrozen modules' tensors (the frozen rest is the
starting weights, rebuilt from their verified source), the optimizer, the scheduler, the
gradient scaler, every RNG state, and :class:`TrainState` (epoch, batch position, running
loss, best epoch, curves). It is written through :func:`features.files.atomic_path`, so a
``kill -9`` at any moment leaves the previous checkpoint or the new one, never half of
either. The checkpoint written at the end of the best epoch so far is kept beside it as
``best-<epoch>.pt``: a hard link made before the new checkpoint is renamed into place, so
keeping it costs no copy, and a name no checkpoint records is removed on resume.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import random
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from classifiers.finetune.model import FinetuneNet
from features.errors import UserError
from features.files import TMP_PREFIX, atomic_path

__all__ = [
    "CHECKPOINT",
    "TrainState",
    "Trainer",
    "best_name",
    "isolated_rng",
    "load_best",
    "load_checkpoint",
    "run_identity",
    "save_checkpoint",
]

CHECKPOINT = "state.pt"


@dataclass
class TrainState:
    """Where training stands; with the tensors, all a rerun needs to carry on."""

    run: str  # identity of the settings and data: another run's checkpoint is not resumed
    epoch: int = 0  # epochs finished
    batch: int = 0  # batches of the next epoch finished
    loss_sum: float = 0.0  # train loss summed over those batches' images
    loss_images: int = 0
    best_epoch: int = 0  # 1-based; 0: none yet
    best_accuracy: float = -1.0
    best_loss: float = math.inf
    best_file: str | None = None
    stale: int = 0  # epochs since the best one
    finished: bool = False
    seconds: float = 0.0  # training time so far, over every run that contributed
    curves: list[dict[str, float]] = field(default_factory=list)  # one row per epoch


@dataclass(frozen=True)
class Trainer:
    """The objects whose state a checkpoint holds."""

    net: FinetuneNet
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler


def run_identity(**parts: Any) -> str:
    """A digest of what decides the result (settings, starting weights, the images and
    their labels): a checkpoint is resumed only by a run with the same digest."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _rng_states() -> dict[str, Any]:
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss],
        "python": random.getstate(),
    }


def _set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    kind, keys, position, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))


@contextmanager
def isolated_rng(device: torch.device, seed: int) -> Iterator[None]:
    """Training's random state, seeded, apart from the caller's: torch (CPU and CUDA),
    numpy and ``random`` are put back on exit, so training leaves no trace in them."""
    python, numpy = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)
        try:
            yield
        finally:
            random.setstate(python)
            np.random.set_state(numpy)


def _load(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError) as error:
        raise UserError(
            f"checkpoint {path} is unreadable ({error}); delete {path.parent} to start over"
        ) from error


def best_name(epoch: int) -> str:
    """The file keeping the checkpoint of ``epoch`` (1-based) while it is the best."""
    return f"best-{epoch:04d}.pt"


def _keep(written: Path, final: Path) -> None:
    """``final`` becomes a second name of the file just written (a copy where the
    filesystem has no hard links)."""
    with atomic_path(final) as tmp:
        try:
            os.link(written, tmp)
        except OSError:
            shutil.copyfile(written, tmp)


def save_checkpoint(folder: Path, state: TrainState, trainer: Trainer, best: bool) -> None:
    """Everything needed to carry on from here, replacing the previous checkpoint whole
    (and kept as ``state.best_file`` when ``best``); then the best files it no longer
    names go."""
    folder = Path(folder)
    payload = {
        "state": asdict(state),
        "model": trainer.net.trainable_state(),
        "optimizer": trainer.optimizer.state_dict(),
        "scheduler": trainer.scheduler.state_dict(),
        "scaler": trainer.scaler.state_dict(),
        "rng": _rng_states(),
    }
    with atomic_path(folder / CHECKPOINT) as tmp:
        torch.save(payload, tmp)
        if best and state.best_file is not None:
            _keep(tmp, folder / state.best_file)
    _sweep(folder, keep=state.best_file)


def _sweep(folder: Path, keep: str | None) -> None:
    """Remove what a killed run left and no checkpoint names: temporaries, stale bests."""
    for path in [*folder.glob(f"{TMP_PREFIX}*"), *folder.glob("best-*.pt")]:
        if path.name != keep:
            path.unlink(missing_ok=True)


def load_checkpoint(
    folder: Path, run: str, trainer: Trainer, log: Callable[[str], None]
) -> TrainState | None:
    """Restore ``trainer`` and the RNG states from the checkpoint of this ``run``; None
    (after clearing the folder) when there is none or it belongs to other settings."""
    folder = Path(folder)
    path = folder / CHECKPOINT
    if not path.is_file():
        if folder.is_dir():
            _sweep(folder, keep=None)
        return None
    payload = _load(path)
    state = TrainState(**payload["state"])
    if state.run != run:
        log(f"{path} is from other settings or data: starting over")
        _sweep(folder, keep=None)
        path.unlink()
        return None
    trainer.net.load_trainable_state(payload["model"])
    trainer.optimizer.load_state_dict(payload["optimizer"])
    trainer.scheduler.load_state_dict(payload["scheduler"])
    trainer.scaler.load_state_dict(payload["scaler"])
    _set_rng_states(payload["rng"])
    _sweep(folder, keep=state.best_file)
    return state


def load_best(folder: Path, state: TrainState, net: FinetuneNet) -> None:
    """Put the best epoch's weights into ``net``."""
    if state.best_file is None:
        raise UserError(f"no best epoch recorded in {folder}; delete it to start over")
    net.load_trainable_state(_load(Path(folder) / state.best_file)["model"])
