"""Runner: the training loop, top to bottom, stoppable at any moment.

Each epoch is SGD over augmented batches, then a pass over val; training stops early
when val accuracy has not improved for ``patience`` epochs (equal accuracy with a lower
val loss counts as better). A checkpoint is written after every epoch, and within an
epoch every ``checkpoint_seconds``; a rerun resumes from it, and on the CPU the weights
it ends with are bit-identical to an uninterrupted run's. Ctrl-C is noted and acted on
at the next batch boundary: the checkpoint is saved, then ``KeyboardInterrupt`` goes up
to the CLI (exit 130). A second Ctrl-C stops at once; the last checkpoint stands.
"""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F

from classifiers.finetune.checkpoint import (
    Trainer,
    TrainState,
    best_name,
    isolated_rng,
    load_best,
    load_checkpoint,
    save_checkpoint,
)
from classifiers.finetune.data import TrainImages, batches_per_epoch, train_loader
from classifiers.finetune.evaluate import require_usable
from classifiers.finetune.model import FinetuneNet
from classifiers.finetune.predict import forward_batches
from classifiers.finetune.runtime import Runtime
from features.compute.loader import ImageRef
from features.data.images import ImageLimits
from features.data.preprocess import Preprocessing
from features.errors import UserError
from features.progress import progress as show_progress

__all__ = ["Job", "NonFiniteLoss", "Settings", "TrainResult", "finetune"]

REPORT_BATCHES = 3  # timed batches after the warm-up one before the speed is reported...
REPORT_SECONDS = 10.0  # ...or this long, whichever comes first


class Settings(Protocol):
    """The ``finetune:`` params the loop reads (``pipeline.params.FinetuneParams``)."""

    epochs: int
    patience: int
    lr: float
    momentum: float
    weight_decay: float
    batch_size: int
    checkpoint_seconds: float
    seed: int


class NonFiniteLoss(UserError):
    """The loss became NaN or inf: nothing from that epoch is saved or reported."""


@dataclass(frozen=True)
class Job:
    """What one run trains on, validates on and with."""

    train: TrainImages
    val: list[ImageRef]
    val_labels: dict[str, int]  # sha256 -> class index
    settings: Settings
    runtime: Runtime
    preprocessing: Preprocessing
    limits: ImageLimits
    folder: Path  # the checkpoint folder
    run: str  # identity of the settings and data, see checkpoint.TrainState


@dataclass(frozen=True)
class TrainResult:
    curves: list[dict[str, float]]  # epoch, train_loss, val_loss, val_accuracy
    best_epoch: int
    best_accuracy: float
    stopped_early: bool
    seconds: float  # training time, over every run that contributed


@contextmanager
def _deferred_interrupt(log: Callable[[str], None]) -> Iterator[Callable[[], bool]]:
    """Note the first Ctrl-C instead of raising it mid-step; yields 'was it pressed?'."""
    pressed = False

    def note(signum: int, frame: object) -> None:
        nonlocal pressed
        pressed = True
        signal.signal(signal.SIGINT, previous)  # a second Ctrl-C stops at once
        log("interrupted: saving a checkpoint after this batch (Ctrl-C again: stop now)")

    try:
        previous = signal.signal(signal.SIGINT, note)
    except ValueError:  # not the main thread: Ctrl-C is not ours to handle
        yield lambda: False
        return
    try:
        yield lambda: pressed
    finally:
        signal.signal(signal.SIGINT, previous)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class _Speed:
    """Training throughput after the warm-up batch, and one early estimate of the run."""

    def __init__(self) -> None:
        self.batches = self.images = 0
        self.seconds = 0.0
        self.reported = False

    def add(self, images: int, seconds: float) -> None:
        self.batches += 1
        if self.batches > 1:
            self.images += images
            self.seconds += seconds

    def due(self) -> bool:
        timed = self.batches - 1
        return (
            not self.reported
            and timed > 0
            and (timed >= REPORT_BATCHES or self.seconds >= REPORT_SECONDS)
        )

    def report(self, job: Job, state: TrainState, log: Callable[[str], None]) -> None:
        self.reported = True
        rate = self.images / self.seconds
        epochs = job.settings.epochs - state.epoch
        images = epochs * (len(job.train) + len(job.val)) - state.loss_images
        log(
            f"finetune: {rate:.1f} images/s on {job.runtime.describe()}; about "
            f"{_duration(images / rate)} for {epochs} more epoch(s) of {len(job.train)} train "
            f"+ {len(job.val)} val images (less if val stops improving)"
        )


class _Saver:
    """Checkpoints, now or when ``checkpoint_seconds`` have passed since the last one."""

    def __init__(self, job: Job, trainer: Trainer, state: TrainState) -> None:
        self.job, self.trainer, self.state = job, trainer, state
        self.mark = self.last = time.monotonic()

    def due(self) -> bool:
        return time.monotonic() - self.last >= self.job.settings.checkpoint_seconds

    def save(self, best: bool = False) -> None:
        now = time.monotonic()
        self.state.seconds += now - self.mark
        self.mark = now
        save_checkpoint(self.job.folder, self.state, self.trainer, best)
        self.last = time.monotonic()


def _step(trainer: Trainer, pixels: torch.Tensor, labels: torch.Tensor, runtime: Runtime) -> float:
    """One SGD step; the batch's mean loss, checked before the weights move."""
    pixels = pixels.to(runtime.device, non_blocking=True)
    labels = labels.to(runtime.device, non_blocking=True)
    with runtime.autocast():
        loss = F.cross_entropy(trainer.net(pixels), labels)
    value = loss.detach().item()
    if not math.isfinite(value):
        return value
    trainer.optimizer.zero_grad(set_to_none=True)
    trainer.scaler.scale(loss).backward()
    trainer.scaler.step(trainer.optimizer)
    trainer.scaler.update()
    return value


def _non_finite(what: str, value: float, state: TrainState, job: Job) -> NonFiniteLoss:
    return NonFiniteLoss(
        f"{what} is {value} in epoch {state.epoch + 1}; lower finetune.lr (now "
        f"{job.settings.lr}) or set extract.precision: fp32. The checkpoint before it "
        f"stands: nothing of this epoch was saved"
    )


def _train_one_epoch(
    trainer: Trainer,
    job: Job,
    state: TrainState,
    saver: _Saver,
    interrupted: Callable[[], bool],
    speed: _Speed,
    log: Callable[[str], None],
    progress: bool,
) -> None:
    """The rest of epoch ``state.epoch``, from batch ``state.batch`` on."""
    settings = job.settings
    total = batches_per_epoch(len(job.train), settings.batch_size)
    loader = train_loader(
        job.train,
        settings.batch_size,
        settings.seed,
        state.epoch,
        state.batch,
        job.runtime.workers,
        job.runtime.pin_memory,
    )
    description = f"epoch {state.epoch + 1}/{settings.epochs}"
    bar = show_progress(len(job.train) - state.loss_images, description, enabled=progress)
    trainer.net.train()
    try:
        started = time.perf_counter()
        for pixels, labels in loader:
            loss = _step(trainer, pixels, labels, job.runtime)
            if not math.isfinite(loss):
                raise _non_finite("the train loss", loss, state, job)
            state.loss_sum += loss * len(labels)
            state.loss_images += len(labels)
            state.batch += 1
            now = time.perf_counter()
            speed.add(len(labels), now - started)
            started = now
            bar.update(len(labels))
            if speed.due():
                speed.report(job, state, log)
            if state.batch < total and (interrupted() or saver.due()):
                saver.save()
                if interrupted():
                    raise KeyboardInterrupt
    finally:
        bar.close()


def _validate(net: FinetuneNet, job: Job) -> tuple[float, float]:
    """Mean loss and accuracy on val; training's random streams are left untouched."""
    loss_sum, correct = 0.0, 0
    with torch.random.fork_rng(devices=[]):
        batches = forward_batches(
            net, job.val, job.preprocessing, job.limits, job.runtime, job.settings.batch_size
        )
        for out in batches:
            require_usable(out, "val")
            labels = torch.tensor([job.val_labels[sha] for sha in out.hashes])
            loss_sum += float(F.cross_entropy(out.logits, labels, reduction="sum"))
            correct += int((out.logits.argmax(dim=1) == labels).sum())
    return loss_sum / len(job.val), correct / len(job.val)


def _end_epoch(trainer: Trainer, job: Job, state: TrainState, saver: _Saver) -> str:
    """Validate, step the schedule, keep the best weights, checkpoint; the epoch's line."""
    val_loss, val_accuracy = _validate(trainer.net, job)
    if not math.isfinite(val_loss):
        raise _non_finite("the val loss", val_loss, state, job)
    trainer.scheduler.step()
    train_loss = state.loss_sum / state.loss_images
    state.epoch += 1
    state.curves.append(
        {
            "epoch": state.epoch,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "val_accuracy": val_accuracy,
        }
    )
    better = (val_accuracy, -val_loss) > (state.best_accuracy, -state.best_loss)
    if better:
        state.best_file = best_name(state.epoch)
        state.best_epoch, state.best_accuracy, state.best_loss = state.epoch, val_accuracy, val_loss
    state.stale = 0 if better else state.stale + 1
    state.finished = state.epoch >= job.settings.epochs or state.stale >= job.settings.patience
    state.batch, state.loss_sum, state.loss_images = 0, 0.0, 0
    saver.save(best=better)
    return (
        f"epoch {state.epoch}/{job.settings.epochs}: train loss {train_loss:.4f}, val loss "
        f"{val_loss:.4f}, val accuracy {val_accuracy:.4f}" + (" (best)" if better else "")
    )


def finetune(
    net: FinetuneNet, job: Job, log: Callable[[str], None] = print, progress: bool = True
) -> TrainResult:
    """Train ``net`` (resuming from ``job.folder`` when it holds this run's checkpoint)
    and leave the best epoch's weights in it."""
    settings = job.settings
    net.to(job.runtime.device)
    optimizer = torch.optim.SGD(
        [parameter for parameter in net.parameters() if parameter.requires_grad],
        lr=settings.lr,
        momentum=settings.momentum,
        weight_decay=settings.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=settings.epochs)
    trainer = Trainer(net, optimizer, scheduler, job.runtime.scaler())
    with isolated_rng(job.runtime.device, settings.seed), _deferred_interrupt(log) as interrupted:
        state = load_checkpoint(job.folder, job.run, trainer, log)
        if state is not None and state.finished:
            log(f"finetune: training finished in {job.folder}; best epoch {state.best_epoch}")
        elif state is not None:
            where = f"epoch {state.epoch + 1}, batch {state.batch}"
            log(f"finetune: resuming from {job.folder} at {where}")
        state = state or TrainState(job.run)
        saver, speed = _Saver(job, trainer, state), _Speed()
        while not state.finished:
            _train_one_epoch(trainer, job, state, saver, interrupted, speed, log, progress)
            if not speed.reported and speed.images:
                speed.report(job, state, log)
            log(_end_epoch(trainer, job, state, saver))
            if interrupted():
                raise KeyboardInterrupt
    load_best(job.folder, state, net)
    return TrainResult(
        state.curves,
        state.best_epoch,
        state.best_accuracy,
        state.epoch < settings.epochs,
        state.seconds,
    )
