"""The linear-probe protocol on a store larger than RAM: every C of the sweep trained in
the same pass over the codes, one chunk in memory at a time.

The ``torch_logreg`` head with ``chunk_rows`` set comes here instead of loading its split:
the scaler is fitted by one pass, every candidate C by
:func:`classifiers.probe_torch.fit_path_streaming` (each chunk feeds all of them), val is
scored chunk by chunk, and the chosen C is refitted on train + val the same way. Nothing
holds more than one chunk of codes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import replace

import numpy as np
import torch
from sklearn.pipeline import Pipeline

from classifiers.data import iter_split, val_mask
from classifiers.fit import FitResult
from classifiers.heads import TorchLogRegParams, build_head
from classifiers.probe import SWEEP, Sweep, candidates, fixed_by_hand
from classifiers.probe_torch import RegPath, fit_path_streaming
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


def _fit_scaler(
    model: Pipeline, rows: Sequence[ManifestRow], store: FeatureStore, chunk_rows: int
) -> None:
    scaler = model.named_steps["scale"]
    for X, _ in iter_split(rows, "train", store, chunk_rows, -1):
        if hasattr(scaler, "partial_fit"):
            scaler.partial_fit(X)
        else:  # stateless (l2, none): fitting only records the width
            scaler.fit(X)


def _val_scores(
    path: RegPath, chunks: Iterator[tuple[np.ndarray, np.ndarray]]
) -> tuple[list[float], list[float], int]:
    """Accuracy and log-loss of every head on val, summed chunk by chunk."""
    correct = torch.zeros(len(path.Cs))
    loss = torch.zeros(len(path.Cs))
    seen = 0
    for X, targets in chunks:
        logits = path.logits(torch.from_numpy(np.asarray(X, dtype=np.float32)))
        labels = torch.from_numpy(targets)
        correct += (logits.argmax(dim=2) == labels).sum(dim=1)
        loss += torch.stack(
            [torch.nn.functional.cross_entropy(k, labels, reduction="sum") for k in logits]
        )
        seen += len(targets)
    return (correct / seen).tolist(), (loss / seen).tolist(), seen


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
    started = time.perf_counter()
    labels = np.array(classes)
    swept = params.C == SWEEP
    if swept:
        rows, val_split, source = _with_val(rows, select, params.val_fraction)
    model = build_head("torch_logreg", replace(params, C=1.0 if swept else params.C))
    _fit_scaler(model, rows, store, params.chunk_rows)

    def stream(split: str, marked: Sequence[ManifestRow], Cs: list[float]) -> RegPath:
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
        ).to("cpu")

    probe = fixed_by_hand(params)
    fit_rows, fit_split, C = rows, "train", params.C
    if swept:
        values = candidates(params)
        path = stream("train", rows, values)
        val = _chunks(rows, val_split, store, params, model, labels, params.seed)
        accuracy, losses, n_val = _val_scores(path, val)
        best = min(range(len(values)), key=lambda i: (-accuracy[i], losses[i], values[i]))
        iterations = list(path.iterations)
        C = values[best]
        probe = Sweep(values, accuracy, losses, iterations, C, n_val, source).as_json()
        fit_split = FIT
        fit_rows = [
            replace(row, split=FIT) if row.split in ("train", val_split) else row for row in rows
        ]
    final = stream(fit_split, fit_rows, [float(C)])
    model.named_steps["clf"].set_params(C=C).adopt(final, labels)
    elapsed = time.perf_counter() - started
    result = FitResult(
        model, replace(params, C=C), elapsed, selected_on="val" if swept else None, probe=probe
    )
    return result, sum(row.split == fit_split for row in fit_rows)
