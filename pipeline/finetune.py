"""Stage ``finetune@<name>``: train the backbone itself from the images, then evaluate the
best epoch on test (or val) with the figures every head reports.

Weights, preprocessing, device and precision come from ``extract:``; what trains and how
from ``finetune.<name>``. The run resumes from ``--checkpoint`` when that folder holds a
checkpoint of the same settings and data (after a crash, a ``kill -9`` or Ctrl-C), and
starts over when it holds another run's.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
from collections.abc import Sequence
from pathlib import Path

import torch

from classifiers.audit.leakage import read_rows
from classifiers.data import class_names, missing_classes, plan_splits
from classifiers.finetune.checkpoint import run_identity
from classifiers.finetune.data import Splits, TrainImages, choose_splits, image_refs
from classifiers.finetune.evaluate import Evaluation, evaluate_images
from classifiers.finetune.job import Job, TrainResult
from classifiers.finetune.model import FinetuneNet, finetune_net
from classifiers.finetune.persist import KIND, FinetuneSidecar, save_finetuned
from classifiers.finetune.runtime import Runtime, resolve_runtime
from classifiers.finetune.train import finetune
from features.compute.backbones import get_backbone
from features.compute.backend import random_weights_banner
from features.compute.config import ExtractConfig
from features.compute.weights import ResolvedWeights, resolve_weights
from features.errors import UserError
from features.files import atomic_open, write_json
from pipeline.cli import ArgumentParser, run
from pipeline.params import FinetuneParams, Params, load_params

CURVES = ("epoch", "train_loss", "val_loss", "val_accuracy")


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    with atomic_open(path, newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(header)
        writer.writerows(rows)


def _parser() -> ArgumentParser:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("name", help="a key under finetune: in params.yaml")
    parser.add_argument("--data", type=Path, required=True, help="the images' root")
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--checkpoint", type=Path, required=True, help="resumable state folder")
    parser.add_argument("--model", type=Path, required=True, help=".pt output")
    parser.add_argument("--metrics", type=Path, required=True)
    parser.add_argument("--predictions", type=Path, required=True)
    parser.add_argument("--curves", type=Path, required=True, help="per-epoch CSV")
    parser.add_argument("--groups", type=Path, help="the audit's near-duplicate groups.json")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _metrics(
    evaluation: Evaluation, result: TrainResult, sidecar: FinetuneSidecar, extra: dict
) -> dict:
    """A head's metrics keys, where they apply, plus what only fine-tuning has."""
    metrics = dict(evaluation.metrics)
    metrics.update(
        {
            "head": sidecar.name,
            "features": KIND,
            "kind": KIND,
            "fit_seconds": result.seconds,
            "n_test": metrics.pop("n"),  # images in the evaluated split (evaluated_on)
            **extra,
            "selected_on": "val",  # early stopping: the best val epoch is kept
            "params": sidecar.params,
            "backbone": sidecar.backbone,
            "unfreeze_from": sidecar.unfreeze_from,
            "weights": sidecar.weights,
            "random_weights": sidecar.random_weights,
            "model_sha256": sidecar.sha256,
            "best_epoch": result.best_epoch,
            "epochs_run": len(result.curves),
            "stopped_early": result.stopped_early,
            "val": {"accuracy": result.best_accuracy},
        }
    )
    return metrics


def _network(
    entry: FinetuneParams, config: ExtractConfig, n_classes: int, runtime: Runtime
) -> tuple[FinetuneNet, ResolvedWeights]:
    """The network to train, from ``extract:``'s verified weights (said when random)."""
    spec = get_backbone(entry.backbone)
    weights = resolve_weights(spec, config.weights, config.seed, config.weights_sha256)
    if weights.is_random:
        print(random_weights_banner(weights.identity))
    net = finetune_net(
        spec,
        weights.state_dict,
        config.seed,
        n_classes,
        entry.unfreeze_from,
        config.preprocessing,
        runtime.channels_last,
    )
    return net, weights


def _job(
    args: argparse.Namespace,
    params: Params,
    splits: Splits,
    classes: list[str],
    runtime: Runtime,
    weights: ResolvedWeights,
) -> Job:
    entry, config = params.finetune[args.name], params.extract
    settings = dataclasses.asdict(entry)
    del settings["checkpoint_seconds"]  # how often to save changes nothing trained
    run_id = run_identity(
        settings=settings,
        weights=weights.identity,
        seed=config.seed,
        preprocessing=dataclasses.asdict(config.preprocessing),
        precision=runtime.precision,
        classes=classes,
        train=[(row.sha256, row.label) for row in splits.train],
        val=[(row.sha256, row.label) for row in splits.val],
    )
    limits = params.data.limits
    return Job(
        train=TrainImages(splits.train, args.data, classes, config.preprocessing, limits),
        val=image_refs(splits.val, args.data),
        val_labels={row.sha256: classes.index(row.label) for row in splits.val},
        settings=entry,
        runtime=runtime,
        preprocessing=config.preprocessing,
        limits=limits,
        folder=args.checkpoint,
        run=run_id,
    )


def _sidecar(
    name: str,
    entry: FinetuneParams,
    net: FinetuneNet,
    classes: list[str],
    job: Job,
    weights: str,
    best: int,
) -> FinetuneSidecar:
    """What the saved network is; :func:`save_finetuned` fills in its checksum."""
    return FinetuneSidecar(
        name=name,
        kind=KIND,
        sha256="",
        backbone=entry.backbone,
        unfreeze_from=entry.unfreeze_from,
        output_layer=net.output_layer,
        classes=classes,
        weights=weights,
        preprocessing=dataclasses.asdict(job.preprocessing),
        params=dataclasses.asdict(entry),
        best_epoch=best,
        torch=torch.__version__,
        created=0.0,
    )


def main(argv: Sequence[str]) -> None:
    args = _parser().parse_args(argv)
    params = load_params(args.params)
    if args.name not in params.finetune:
        raise UserError(
            f"finetune {args.name!r} is not configured; params.yaml finetune: "
            f"{', '.join(sorted(params.finetune)) or 'none'}"
        )
    entry, stage = params.finetune[args.name], f"finetune@{args.name}"
    rows, _, moved = read_rows(args.manifest, args.groups, params.audit.regroup)
    if moved:
        print(f"finetune@{args.name}: {moved} images moved to their near-duplicates' split")
    classes = class_names(rows)
    plan = plan_splits(rows, params.evaluation.evaluate_on, str(args.data))
    splits = choose_splits(rows, plan, entry.val_fraction, entry.max_images)
    if plan.note:
        print(f"{stage}: {plan.note}")
    runtime = resolve_runtime(params.extract)
    net, weights = _network(entry, params.extract, len(classes), runtime)
    job = _job(args, params, splits, classes, runtime, weights)
    print(
        f"{stage}: {entry.backbone} trained from {entry.unfreeze_from} on {len(splits.train)} "
        f"images, stopping on {len(splits.val)} ({splits.val_source}), {runtime.describe()}"
    )
    result = finetune(net, job, progress=not args.no_progress)
    _write_csv(args.curves, CURVES, [[row[key] for key in CURVES] for row in result.curves])
    sidecar = save_finetuned(
        net,
        args.model,
        _sidecar(args.name, entry, net, classes, job, weights.identity, result.best_epoch),
    )
    evaluated = [row for row in rows if row.split == plan.evaluate]
    evaluation = evaluate_images(
        net,
        image_refs(evaluated, args.data),
        {row.sha256: row.label for row in evaluated},
        classes,
        job.preprocessing,
        job.limits,
        runtime,
        entry.batch_size,
        plan.evaluate,
    )
    extra = {
        "model_bytes": args.model.stat().st_size,
        "n_train": len(splits.train),
        "n_val": len(splits.val),
        "val_source": splits.val_source,
        "evaluated_on": plan.evaluate,
        "evaluation_note": plan.note,
        "classes_not_evaluated": missing_classes(rows, plan.evaluate),
    }
    metrics = _metrics(evaluation, result, sidecar, extra)
    write_json(args.metrics, metrics)
    predictions = zip(evaluation.hashes, evaluation.actual, evaluation.predicted, strict=True)
    _write_csv(args.predictions, ("sha256", "actual", "predicted"), list(predictions))
    label = " (RANDOM WEIGHTS: pipeline check, not transfer accuracy)" if weights.is_random else ""
    print(
        f"{stage}: accuracy {metrics['accuracy']:.4f} on {plan.evaluate} (best epoch "
        f"{result.best_epoch} of {len(result.curves)}), {result.seconds:.0f} s of training{label}"
    )


if __name__ == "__main__":
    run(main)
