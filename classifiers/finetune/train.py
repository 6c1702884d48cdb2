"""Runner: the training loop, top to bottom, stoppable at any moment.

Each epoch is SGD over augmented batches, then a pass over val; training stops early
when val accuracy has not improved for ``patience`` epochs (equal accuracy with a lower
val loss counts as better). A checkpoint is written after every epoch, within an epoch
every ``checkpoint_seconds``, and on Ctrl-C (see :mod:`classifiers.finetune.monitor`); a
rerun resumes from it, and on the CPU ends with weights bit-identical to an
uninterrupted run's.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

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
from classifiers.finetune.data import batches_per_epoch, train_loader
from classifiers.finetune.evaluate import require_usable
from classifiers.finetune.job import Job, NonFiniteLoss, TrainResult
from classifiers.finetune.model import FinetuneNet
from classifiers.finetune.monitor import Speed, deferred_interrupt, duration
from classifiers.finetune.predict import forward_batches
from classifiers.finetune.runtime import Runtime
from features.compute.encoder import cpu_allocator_tuned
from features.progress import progress as show_progress

__all__ = ["finetune"]


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


def _speed_line(speed: Speed, job: Job, state: TrainState) -> str:
    epochs = job.settings.epochs - state.epoch
    images = epochs * (len(job.train) + len(job.val)) - state.loss_images
    return speed.report(images, epochs, job.runtime.describe())


def _train_one_epoch(
    trainer: Trainer,
    job: Job,
    state: TrainState,
    saver: _Saver,
    interrupted: Callable[[], bool],
    speed: Speed,
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
                log(_speed_line(speed, job, state))
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


def _end_epoch(trainer: Trainer, job: Job, state: TrainState, saver: _Saver) -> None:
    """Validate, step the schedule, keep the best epoch, decide whether to stop, save."""
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


def _epoch_line(state: TrainState, epochs: int, seconds: float) -> str:
    """``epoch 3/10: train loss ..., val loss ..., val accuracy ... (best); 25 s, ...``"""
    row = state.curves[-1]
    left = 0 if state.finished else epochs - state.epoch
    return (
        f"epoch {state.epoch}/{epochs}: train loss {row['train_loss']:.4f}, val loss "
        f"{row['val_loss']:.4f}, val accuracy {row['val_accuracy']:.4f}"
        + (" (best)" if state.best_epoch == state.epoch else "")
        + f"; {duration(seconds)}"
        + (f", at most {duration(left * seconds)} left" if left else "")
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
    with (
        isolated_rng(job.runtime.device, settings.seed),
        deferred_interrupt(log) as interrupted,
        cpu_allocator_tuned(job.runtime.device),
    ):
        state = load_checkpoint(job.folder, job.run, trainer, log)
        if state is not None and state.finished:
            log(f"finetune: training finished in {job.folder}; best epoch {state.best_epoch}")
        elif state is not None:
            where = f"epoch {state.epoch + 1}, batch {state.batch}"
            log(f"finetune: resuming from {job.folder} at {where}")
        state = state or TrainState(job.run)
        saver, speed = _Saver(job, trainer, state), Speed()
        while not state.finished:
            started = time.monotonic()
            _train_one_epoch(trainer, job, state, saver, interrupted, speed, log, progress)
            if not speed.reported and speed.images:
                log(_speed_line(speed, job, state))
            _end_epoch(trainer, job, state, saver)
            log(_epoch_line(state, settings.epochs, time.monotonic() - started))
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
