"""Reader side of the forward pass: batches made ready for the encoder, one step ahead.

Waiting for the loader and, with ``gpu_decode``, the nvJPEG decode and resize of the next
batches overlap the current batch's forward pass in a background thread.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch

from features.compute.gpu_decode import decode_on_device
from features.compute.loader import Batch, Failure
from features.data.images import ImageLimits
from features.data.preprocess import Preprocessing

__all__ = ["ReadyBatch", "prefetch", "prepare_batch"]


@dataclass
class ReadyBatch:
    """A loader batch turned into pixels the encoder can take, plus its failures."""

    hashes: list[str]
    pixels: torch.Tensor  # uint8 (len(hashes), 3, crop, crop), on the host or the device
    failures: list[Failure]
    images: int  # every image the loader batch covered, for the progress bar


def prepare_batch(
    batch: Batch, preprocessing: Preprocessing, limits: ImageLimits, device: torch.device
) -> ReadyBatch:
    """Decode a batch's undecoded JPEGs on ``device``; pixels decoded on the CPU come along."""
    hashes, pixels, failures = batch.hashes, batch.pixels, list(batch.failures)
    if batch.raw_hashes:
        decoded = decode_on_device(batch.raw, preprocessing, limits, device)
        failures.extend(decoded.failures)
        if decoded.hashes:
            device_pixels = decoded.pixels
            if hashes:
                host_pixels = pixels.to(device, non_blocking=True)
                device_pixels = torch.cat([host_pixels, device_pixels])
            hashes, pixels = hashes + decoded.hashes, device_pixels
    return ReadyBatch(hashes, pixels, failures, len(batch))


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


_DONE = object()


def prefetch(
    batches: Iterable[Batch],
    prepare: Callable[[Batch], ReadyBatch],
    device: torch.device,
    depth: int = 2,
) -> Iterator[ReadyBatch]:
    """``prepare(batch)`` for every batch, in order, computed ahead in a background thread.

    Waiting for the loader and, with ``gpu_decode``, the nvJPEG decode and resize of the
    next batches overlap this batch's forward pass (decoding is mostly host-side work
    that releases the GIL). On CUDA the thread queues its kernels on a stream of its own;
    the consumer's stream waits for them with an event before it reads the pixels.
    """
    results: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    side = torch.cuda.Stream(device) if device.type == "cuda" else None

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                results.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            with torch.cuda.stream(side) if side is not None else contextlib.nullcontext():
                for batch in batches:
                    ready = prepare(batch)
                    event = None
                    if side is not None:
                        event = torch.cuda.Event()
                        event.record(side)
                    if not put((ready, event)):
                        return
        except BaseException as error:  # re-raised in the consumer
            put(_Failed(error))
            return
        put(_DONE)

    thread = threading.Thread(target=work, name="extract-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = results.get()
            if item is _DONE:
                return
            if isinstance(item, _Failed):
                raise item.error
            ready, event = item
            if event is not None:
                stream = torch.cuda.current_stream(device)
                stream.wait_event(event)
                if ready.pixels.is_cuda:
                    ready.pixels.record_stream(stream)  # allocated on the side stream
            yield ready
    finally:
        stop.set()  # a thread still reading batches stops at its next hand-over
