"""Stage ``train@<head>-<feature set>``: fit one head on one feature set's stored train
codes, evaluate it on test (or val).

The evaluated split is test when the dataset has one, else val, and the metrics say which
(``evaluated_on``); with both, val chooses the head's hyperparameters (``selected_on``).
"""

from __future__ import annotations

import contextlib
import csv
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path

import joblib
from sklearn.model_selection import ParameterGrid

from classifiers.audit.leakage import leaked_hashes, read_rows, score_without_leaked
from classifiers.block import block_init
from classifiers.block_fit import fit_block_on_store
from classifiers.data import (
    SplitData,
    SplitPlan,
    carve_val,
    class_names,
    load_split,
    missing_classes,
    plan_splits,
)
from classifiers.epochs import PIECE_ROWS, iter_split
from classifiers.evaluate import evaluate
from classifiers.fit import FitResult, fit_head, fit_streaming
from classifiers.heads import HEADS, HeadParams, TorchLogRegParams
from classifiers.persist import save_head
from classifiers.probe import is_swept
from classifiers.probe_stream import fit_streaming_probe
from features.compute.backend import random_weights_banner
from features.compute.config import DaskConfig
from features.compute.distributed import dask_client
from features.data.manifest import ManifestRow
from features.errors import UserError
from features.files import atomic_open, write_json
from features.store import FeatureStore
from pipeline.cli import ArgumentParser, run
from pipeline.params import HeadEntry, Params, load_params


def _write_predictions(path: Path, held_out: SplitData, predicted, confidence) -> None:
    """One row per evaluated image, the input of DVC's confusion-matrix template; with the
    predicted class's probability (empty for a head without one), so the report can show
    the most confident mistakes first."""
    shown = [f"{c:.6f}" for c in confidence] if confidence is not None else [""] * len(predicted)
    with atomic_open(path, newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["sha256", "actual", "predicted", "confidence"])
        writer.writerows(zip(held_out.hashes, held_out.y, predicted, shown, strict=True))


def _write_curves(path: Path, curves: list[dict[str, float]]) -> None:
    """Per-epoch losses and val accuracy, for ``dvc plots``."""
    with atomic_open(path, newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(curves[0]))
        writer.writeheader()
        writer.writerows(curves)


def _fc6_store(params: Params, backbone: str) -> Path | None:
    """The same backbone's fc6 store, when one is configured and built: the alignment check
    of a classifier-block head reads it."""
    for name, feature_set in params.features.items():
        path = params.paths.store_for(name)
        if (feature_set.backbone, feature_set.layer) == (backbone, "fc6") and path.is_dir():
            return path
    return None


def _fit_block(
    entry: HeadEntry, rows: list[ManifestRow], store: FeatureStore, plan: SplitPlan, params: Params
) -> tuple[FitResult, int]:
    """A classifier-block head, started from the weights that produced the store's maps."""
    config, fingerprint = params.extract, store.fingerprint
    init = block_init(fingerprint.backbone, config.weights, config.seed, config.weights_sha256)
    if init.weights != fingerprint.weights:
        raise UserError(
            f"the maps in {store.root} come from weights {fingerprint.weights}, but extract: "
            f"now names {init.weights}; set extract back, or rerun extract into a new store"
        )
    fc6 = _fc6_store(params, fingerprint.backbone)
    with contextlib.ExitStack() as stack:
        fc6_store = stack.enter_context(FeatureStore(fc6)) if fc6 is not None else None
        return fit_block_on_store(entry.params, rows, store, plan, init, fc6_store)


@contextlib.contextmanager
def _grid_backend(head: HeadParams, dask: DaskConfig) -> Iterator[int]:
    """Where a head's grid points run: here, one after another, or as tasks on the Dask
    cluster ``extract.dask`` names (joblib's dask backend); yields the n_jobs to ask for."""
    if head.backend != "dask" or not head.grid:
        yield 1
        return
    with dask_client(dask) as client, joblib.parallel_config(backend="dask"):
        print(f"grid search: {len(ParameterGrid(head.grid))} points on {client.scheduler.address}")
        yield -1


@contextlib.contextmanager
def _chunk_source(head: HeadParams, store: FeatureStore, dask: DaskConfig) -> Iterator[object]:
    """Where a streaming head's chunks are read: from the store here (None), or with
    ``backend: dask`` as tasks of :meth:`FeatureStore.to_dask` on the cluster
    ``extract.dask`` names (its workers must see the store's path)."""
    if head.backend != "dask":
        yield None
        return
    with dask_client(dask) as client:
        print(f"streaming chunks: store.to_dask() on {client.scheduler.address}")
        yield store.to_dask(chunk_rows=PIECE_ROWS)


def _fit(
    entry: HeadEntry,
    rows: list[ManifestRow],
    classes: list[str],
    store: FeatureStore,
    plan: SplitPlan,
    params: Params,
) -> tuple[FitResult, int]:
    """The fitted head and its number of train images; val is passed only to choose with."""
    if HEADS[entry.kind].on_maps:
        return _fit_block(entry, rows, store, plan, params)
    if isinstance(entry.params, TorchLogRegParams) and entry.params.chunk_rows:
        return fit_streaming_probe(entry.params, rows, store, classes, plan.select)
    if HEADS[entry.kind].streaming:
        n_train = sum(row.split == "train" for row in rows)
        chunk_rows, seed = entry.params.chunk_rows, entry.params.seed
        with _chunk_source(entry.params, store, params.extract.dask) as codes:
            result = fit_streaming(
                entry.kind,
                entry.params,
                classes,
                lambda epoch: iter_split(rows, "train", store, chunk_rows, seed + epoch, codes),
            )
        return result, n_train
    train = load_split(rows, "train", store)
    val, source = None, f"{plan.select}/"
    if plan.select:
        held_out = load_split(rows, plan.select, store)
        val = (held_out.X, held_out.y)
    elif is_swept(entry.params):
        fraction = entry.params.val_fraction
        train, carved = carve_val(train, fraction)
        val, source = (carved.X, carved.y), f"carved from train ({fraction:.0%}, by content hash)"
    with _grid_backend(entry.params, params.extract.dask) as n_jobs:
        result = fit_head(
            entry.kind, entry.params, train.X, train.y, n_jobs=n_jobs, val=val, val_source=source
        )
    refitted = len(val[1]) if val is not None and is_swept(entry.params) else 0
    return result, len(train.y) + refitted


def _warn_missing(rows: list[ManifestRow], split: str) -> list[str]:
    missing = missing_classes(rows, split)
    if missing:
        print(
            f"warning: class(es) {', '.join(map(repr, missing))} have no {split} images: "
            f"no recall or F1 for them in this evaluation"
        )
    return missing


def main(argv: Sequence[str]) -> None:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("head", help="a key under heads: in params.yaml")
    parser.add_argument(
        "--features", help="a key under features: in params.yaml (default: the only one)"
    )
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--model", type=Path, required=True, help="joblib output")
    parser.add_argument("--metrics", type=Path, required=True)
    parser.add_argument("--predictions", type=Path, required=True)
    parser.add_argument("--curves", type=Path, help="per-epoch curves CSV (block heads)")
    parser.add_argument("--groups", type=Path, help="the audit's near-duplicate groups.json")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    params = load_params(args.params)
    entry = params.head(args.head)
    features = params.feature_set(args.features, args.head)
    rows, groups, moved = read_rows(args.manifest, args.groups, params.audit.regroup)
    if moved:
        print(f"train@{args.head}-{features}: {moved} images moved to their near-duplicates' split")
    classes = class_names(rows)
    plan = plan_splits(rows, params.evaluation.evaluate_on, params.data.root)
    if plan.note:
        print(f"train@{args.head}-{features}: {plan.note}")
    missing = _warn_missing(rows, plan.evaluate)
    with FeatureStore(args.store) as store:
        fingerprint = store.fingerprint
        if fingerprint.is_random:
            print(random_weights_banner(fingerprint.weights))
        result, n_train = _fit(entry, rows, classes, store, plan, params)
        held_out = load_split(rows, plan.evaluate, store)
        metrics, predicted = evaluate(result.model, held_out.X, held_out.y, classes)
        confidence = (
            result.model.predict_proba(held_out.X).max(axis=1)
            if hasattr(result.model, "predict_proba") and len(held_out.y)
            else None
        )
        val = None
        if plan.evaluate != "val" and any(row.split == "val" for row in rows):
            val_split = load_split(rows, "val", store)
            val = evaluate(result.model, val_split.X, val_split.y, classes)[0]
    sidecar = save_head(
        result.model, args.model, args.head, entry.kind, fingerprint, classes, asdict(result.params)
    )
    metrics.update(
        {
            "head": args.head,
            "features": features,
            "layer": params.stored_sets[features].layer,
            "kind": entry.kind,
            "fit_seconds": result.fit_seconds,
            "model_bytes": args.model.stat().st_size,
            "n_train": n_train,
            "n_test": metrics.pop("n"),  # images in the evaluated split (evaluated_on)
            "evaluated_on": plan.evaluate,
            "evaluation_note": plan.note,
            "classes_not_evaluated": missing,
            "selected_on": result.selected_on,
            "moved_by_near_duplicates": moved,
            "params": asdict(result.params),
            "cv": result.cv,
            "probe": result.probe,
            "backbone": fingerprint.backbone,
            "weights": fingerprint.weights,
            "random_weights": fingerprint.is_random,
            "model_sha256": sidecar.sha256,
        }
    )
    if args.groups and params.evaluation.without_leaked:
        leaked = leaked_hashes(rows, groups, plan.evaluate)
        metrics["without_leaked"] = score_without_leaked(held_out, predicted, classes, leaked)
    if val is not None:
        metrics["val"] = {k: val[k] for k in ("accuracy", "balanced_accuracy", "macro_f1")}
    curves = getattr(result.model.named_steps["clf"], "curves_", None)
    if curves:
        metrics["best_epoch"] = result.model.named_steps["clf"].best_epoch_
        if args.curves:
            _write_curves(args.curves, curves)
    write_json(args.metrics, metrics)
    _write_predictions(args.predictions, held_out, predicted, confidence)
    label = (
        " (RANDOM WEIGHTS: pipeline check, not transfer accuracy)" if fingerprint.is_random else ""
    )
    probe = result.probe or {}
    chosen = (
        f", C {probe['chosen']:.3g} chosen on {probe['n_val']} val images"
        if probe.get("fixed_by_hand") is False
        else ""
    )
    print(
        f"train@{args.head}-{features}: accuracy {metrics['accuracy']:.4f} on {plan.evaluate}, "
        f"fit {result.fit_seconds:.2f} s, {n_train} train / {metrics['n_test']} "
        f"{plan.evaluate}{chosen}{label}"
    )


if __name__ == "__main__":
    run(main)
