"""The linear-probe protocol on a store larger than RAM, one chunk of codes in memory.

The ``torch_logreg`` head with ``chunk_rows`` set comes here instead of loading its split.
The scaler is fitted by one pass (in torch, :mod:`classifiers.scaler_torch`), then, by
``solver``:

* ``lbfgs`` (default): each C is a full-batch L-BFGS fit whose every evaluation sums the
  gradient over one pass of chunks read in store order (sequential reads), the grid is
  searched coarse to fine (:mod:`classifiers.probe_search`), each fit warm-started from
  its nearest fitted neighbour, and the chosen C is refitted on train + val from its
  sweep solution. On a CPU the arithmetic, not the reading, is the cost, so the fewest
  exact fits win.
* ``adam``: every candidate C trained in the same pass over shuffled chunks
  (:func:`classifiers.probe_torch.fit_path_streaming`), for when reading dominates.

Val is scored chunk by chunk. Nothing in host memory holds more than one chunk of codes.
On an accelerator with room for a split's codes in the store's dtype (a GPU, where the
arithmetic is cheap and re-reading the store every evaluation would be the cost), the
split is read once onto it and every pass runs from there: L-BFGS on full batches where
the codes fit, as the protocol asks.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace

import numpy as np
import torch
from sklearn.base import clone
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from classifiers.data import split_rows, val_mask
from classifiers.epochs import StoredSplit, iter_split
from classifiers.fit import FitResult
from classifiers.heads import TorchLogRegParams, build_head
from classifiers.probe import SWEEP, Sweep, candidates, fixed_by_hand, search_label
from classifiers.probe_search import Visit, best, coarse_to_fine
from classifiers.probe_torch import (
    Batch,
    Passes,
    RegPath,
    fit_one,
    fit_path_streaming,
    score_path,
)
from classifiers.scaler_torch import fit_standard_scaler, torch_transform
from features.compute.encoder import resolve_device
from features.data.manifest import ManifestRow
from features.store import FeatureStore

__all__ = ["fit_streaming_probe"]

FIT = "fit"  # the split name the refit streams: train and val together


def _chunks(
    rows: Sequence[ManifestRow],
    split: str,
    store: FeatureStore,
    params: TorchLogRegParams,
    model: Pipeline,
    classes: np.ndarray,
    seed: int,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Scaled codes and class indices of ``split``, shuffled by ``seed``."""
    assert params.chunk_rows is not None
    scaler = model.named_steps["scale"]
    for X, y in iter_split(rows, split, store, params.chunk_rows, seed):
        yield scaler.transform(X), np.searchsorted(classes, y)


def _hashes(located: StoredSplit) -> list[str]:
    return [sha.decode() for sha in located.hashes]


RawChunks = Callable[[], Iterator[torch.Tensor]]  # one pass of codes in the store's dtype


def _from_store(store: FeatureStore, hashes: list[str], chunk_rows: int) -> RawChunks:
    """Passes that read ``hashes``' codes from the store in store order (sequential
    reads), every chunk into one reused buffer (valid until the next)."""

    def chunks() -> Iterator[torch.Tensor]:
        for _, codes in store.iter_chunks(hashes, chunk_rows, reuse=True):
            yield torch.from_numpy(codes)

    return chunks


def _on_device(
    store: FeatureStore, hashes: list[str], chunk_rows: int, device: torch.device
) -> RawChunks:
    """``hashes``' codes read once and kept on ``device`` in the store's dtype; passes
    then read nothing from the store."""
    kept = [codes.to(device, copy=True) for codes in _from_store(store, hashes, chunk_rows)()]
    return lambda: iter(kept)


def fits_on(device: torch.device, nbytes: int) -> bool:
    """Whether ``device`` is an accelerator with room for ``nbytes`` of codes and as much
    again for the working buffers; a CPU streams, which keeps host memory flat."""
    if device.type != "cuda":
        return False
    cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return 2 * nbytes < torch.cuda.mem_get_info(device)[0] + cached


def _located(
    rows: Sequence[ManifestRow],
    split: str,
    store: FeatureStore,
    chunk_rows: int,
    classes: np.ndarray,
    device: torch.device,
    keep: bool,
) -> tuple[RawChunks, torch.Tensor]:
    """``split``'s codes in store order, kept on ``device`` when ``keep`` and they fit
    there, else read from the store each pass; and its class indices on ``device``."""
    located = StoredSplit.locate(split_rows(rows, split, store), store)
    hashes = _hashes(located)
    targets = torch.from_numpy(np.searchsorted(classes, located.labels)).to(device)
    nbytes = len(hashes) * store.dim * np.dtype(store.fingerprint.dtype).itemsize
    if keep and fits_on(device, nbytes):
        return _on_device(store, hashes, chunk_rows, device), targets
    return _from_store(store, hashes, chunk_rows), targets


def _float_chunks(source: RawChunks, device: torch.device) -> Iterator[torch.Tensor]:
    """One pass of ``source`` as float32 on ``device``, each chunk a view of one buffer,
    valid until the next. torch casts float16 several times faster than numpy; reusing
    the buffers (the store's too) spares every chunk a fresh page-faulted copy of hundreds
    of MB without retuning the allocator, which fragmented the heap until RSS climbed
    through a run (80k rows: 3.0 GiB, against 1.5 GiB flat)."""
    buffer = torch.empty((0, 0), device=device)
    for codes in source():
        if len(codes) > len(buffer):  # the first chunk of each split read is its largest
            buffer = torch.empty(codes.shape, device=device)
        yield buffer[: len(codes)].copy_(codes)


def _joined(*splits: tuple[RawChunks, torch.Tensor]) -> tuple[RawChunks, torch.Tensor]:
    """Splits read one after the other, as one: the refit's train + val, which reads
    nothing again when both are kept on the device."""
    sources = [source for source, _ in splits]
    targets = torch.cat([targets for _, targets in splits])
    return (lambda: itertools.chain.from_iterable(source() for source in sources)), targets


def _fit_scaler(model: Pipeline, source: RawChunks, device: torch.device) -> None:
    """A fresh scaler fitted by one pass of ``source``, the codes the model is fitted on,
    as the in-memory fit fits it."""
    scaler = clone(model.named_steps["scale"])
    if isinstance(scaler, StandardScaler):
        scaler = fit_standard_scaler(_float_chunks(source, device))
    else:  # stateless (l2, none): fitting records the width
        scaler.fit(next(_float_chunks(source, torch.device("cpu")))[:1].numpy())
    model.set_params(scale=scaler)


def _passes(
    source: RawChunks, targets: torch.Tensor, model: Pipeline, device: torch.device
) -> Passes:
    """Passes over scaled codes and their class indices, one chunk at a time (each batch
    valid until the next)."""
    scale = torch_transform(model.named_steps["scale"], device)

    def passes() -> Iterator[Batch]:
        start = 0
        for codes in _float_chunks(source, device):
            stop = start + len(codes)
            yield scale(codes), targets[start:stop]
            start = stop

    return passes


def _with_val(
    rows: Sequence[ManifestRow], select: str | None, fraction: float
) -> tuple[list[ManifestRow], str, str]:
    """The rows with the val split to choose on (the dataset's own, or train images carved
    by content hash and marked ``val``), that split's name, and where it came from."""
    if select is not None:
        return list(rows), select, f"{select}/"
    train = [row.sha256 for row in rows if row.split == "train"]
    carved = {sha for sha, is_val in zip(train, val_mask(train, fraction), strict=True) if is_val}
    marked = [replace(row, split="val") if row.sha256 in carved else row for row in rows]
    return marked, "val", f"carved from train ({fraction:.0%}, by content hash)"


# Fit these Cs on a split of these rows, from this head (L-BFGS) or from zero (Adam).
Stream = Callable[[str, Sequence[ManifestRow], list[float], RegPath | None], RegPath]


def _adam_sweep(
    params: TorchLogRegParams,
    stream: Stream,
    rows: Sequence[ManifestRow],
    val: Passes,
) -> tuple[list[Visit], RegPath]:
    """Every candidate trained in each pass over train, then scored on val."""
    values = candidates(params)
    path = stream("train", rows, values, None)
    accuracy, losses, _ = score_path(path, val())
    visits = [
        Visit(index, C, accuracy[index], losses[index], path.iterations[index])
        for index, C in enumerate(values)
    ]
    return visits, path


def _lbfgs_sweep(
    params: TorchLogRegParams,
    stream: Stream,
    rows: Sequence[ManifestRow],
    val: Passes,
) -> tuple[list[Visit], RegPath]:
    """The grid searched coarse to fine, each C an L-BFGS fit warm-started from its
    nearest fitted neighbour; the chosen C's head is the refit's starting point."""
    values = candidates(params)
    heads: dict[int, RegPath] = {}

    def fit(index: int, warm: int | None) -> tuple[float, float, int]:
        heads[index] = stream("train", rows, [values[index]], heads.get(warm))
        accuracy, losses, _ = score_path(heads[index], val())
        return accuracy[0], losses[0], heads[index].iterations[0]

    visits = coarse_to_fine(values, fit, params.coarse_step, params.patience)
    return visits, heads[best(visits).index]


def fit_streaming_probe(
    params: TorchLogRegParams,
    rows: Sequence[ManifestRow],
    store: FeatureStore,
    classes: list[str],
    select: str | None,
) -> tuple[FitResult, int]:
    """Sweep C on val (``select``, else a content-hash carve of train) and refit the chosen
    one on train + val; a C given by hand is fitted on train alone. The fitted pipeline and
    the number of images it was fitted on."""
    assert params.chunk_rows is not None
    chunk_rows = params.chunk_rows
    device = resolve_device(params.device)
    started = time.perf_counter()
    labels = np.array(classes)
    swept = params.C == SWEEP
    if swept:
        rows, val_split, val_source = _with_val(rows, select, params.val_fraction)
    model = build_head("torch_logreg", replace(params, C=1.0 if swept else params.C))
    located: dict[str, tuple[RawChunks, torch.Tensor]] = {}

    def codes(split: str, marked: Sequence[ManifestRow]) -> tuple[RawChunks, torch.Tensor]:
        """A split's codes, located (and kept on the device) once: the sweep's fits share
        train's, and the refit's are train's and val's."""
        if split in located:
            return located[split]
        if split == FIT:
            located[split] = _joined(located["train"], located[val_split])
        else:
            keep = params.solver == "lbfgs"  # adam reads shuffled chunks from the store
            located[split] = _located(marked, split, store, chunk_rows, labels, device, keep)
        return located[split]

    _fit_scaler(model, codes("train", rows)[0], device)

    def stream(
        split: str, marked: Sequence[ManifestRow], Cs: list[float], init: RegPath | None
    ) -> RegPath:
        """Cs fitted on ``split`` of ``marked``: an L-BFGS fit (one C, from ``init``) or
        the joint Adam path."""
        if params.solver == "lbfgs":
            chunks, targets = codes(split, marked)
            passes, n = _passes(chunks, targets, model, device), len(targets)
            tol = params.sweep_tol if split == "train" and swept else params.tol
            return fit_one(
                passes, n, store.dim, len(labels), Cs[0], init, params.max_iter, tol, device
            )
        n_rows = sum(row.split == split for row in marked)
        return fit_path_streaming(
            lambda epoch: _chunks(marked, split, store, params, model, labels, params.seed + epoch),
            n_rows,
            store.dim,
            len(labels),
            Cs,
            params.epochs,
            params.lr,
            params.device,
            params.seed,
        )

    probe = fixed_by_hand(params)
    fit_rows, fit_split, C, start_from = rows, "train", params.C, None
    if swept:
        val_codes, val_targets = codes(val_split, rows)
        val, n_val = _passes(val_codes, val_targets, model, device), len(val_targets)
        sweep = _lbfgs_sweep if params.solver == "lbfgs" else _adam_sweep
        visits, chosen_head = sweep(params, stream, rows, val)
        record = Sweep.of(visits, len(candidates(params)), n_val, val_source, search_label(params))
        C, probe = record.chosen, record.as_json()
        start_from = chosen_head.head(chosen_head.Cs.index(C))
        fit_split = FIT
        fit_rows = [
            replace(row, split=FIT) if row.split in ("train", val_split) else row for row in rows
        ]
    if swept:
        _fit_scaler(model, codes(fit_split, fit_rows)[0], device)
    final = stream(fit_split, fit_rows, [float(C)], start_from)
    model.named_steps["clf"].set_params(C=C).adopt(final, labels)
    elapsed = time.perf_counter() - started
    result = FitResult(
        model, replace(params, C=C), elapsed, selected_on="val" if swept else None, probe=probe
    )
    return result, sum(row.split == fit_split for row in fit_rows)
