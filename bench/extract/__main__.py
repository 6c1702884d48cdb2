"""Entry point, ``python -m bench.extract``: the flags, and the stages run in their order."""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

import bench.extract
from bench.extract import REPO
from bench.extract.data import (
    build_image_tree,
    dataset_record,
    describe_images,
    export_subset,
    hash_files,
    resolve_data,
    select,
    spread,
)
from bench.extract.machine import machine_info
from bench.extract.naive import naive_child
from bench.extract.ours import measure_decode
from bench.extract.precision import measure_precision
from bench.extract.report import (
    RANDOM_WEIGHTS_NOTE,
    check_targets,
    print_table,
    say,
    summarise_runs,
    write_result,
)
from bench.extract.rounds import run_rounds
from bench.extract.settings import resolve_setup

RESULTS = REPO / "bench" / "results"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.extract", description=bench.extract.__doc__.split("\n\n")[0]
    )
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto")
    parser.add_argument("--limit", type=int, default=None, help="source images (even per class)")
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="default: ../shared/datasets/flower_photos, else data/flower_photos (make run), "
        "else generated images",
    )
    parser.add_argument(
        "--replicate",
        type=int,
        default=1,
        help="copies per source image: the original plus N-1 re-encoded variants",
    )
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "fp16", "bf16"))
    parser.add_argument(
        "--weights",
        default="random",
        help="random (default) | imagenet | path: real weights to redo the precision check",
    )
    parser.add_argument("--batch-size", type=int, default=None, help="64 on CPU, 256 on CUDA")
    parser.add_argument("--num-workers", type=int, default=None, help="default: extract's rule")
    parser.add_argument("--gpu-decode", action="store_true", help="nvJPEG decode on the device")
    parser.add_argument("--compile", choices=("auto", "on", "off"), default="auto")
    parser.add_argument("--no-channels-last", action="store_true")
    parser.add_argument("--rounds", type=int, default=None, help="naive/ours pairs (3 CPU, 1 CUDA)")
    parser.add_argument("--model-seconds", type=float, default=5.0)
    parser.add_argument(
        "--precision-images", type=int, default=None, help="original images in the precision check"
    )
    parser.add_argument("--skip-naive", action="store_true", help="smoke tests only")
    parser.add_argument(
        "--precision-only",
        action="store_true",
        help="only the precision check (writes extract_<device>_precision.json)",
    )
    parser.add_argument("--output", type=Path, default=None, help="JSON path")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder")
    parser.add_argument("--note", action="append", default=[], help="recorded in the JSON")
    parser.add_argument("--export-subset", type=Path, default=None, metavar="DIR")
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--naive-child", type=Path, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, object] | None:
    args = parse_args(argv)
    if args.naive_child is not None:
        naive_child(args.naive_child)
        return None
    work = args.workdir or Path(tempfile.mkdtemp(prefix="extract_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        return run(args, argv, work)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, argv: list[str] | None, work: Path) -> dict[str, object] | None:
    """Everything but the naive child, in ``work`` (which holds generated images, if any)."""
    data = resolve_data(args.data, work, args.limit)
    say(f"data source: {data.description}")
    if args.export_subset is not None:
        copied = export_subset(data.sources, args.export_subset, args.per_class)
        say(f"copied {copied} images to {args.export_subset}")
        return None

    from features.compute.loader import ImageRef

    load_at_start = [round(v, 2) for v in os.getloadavg()]
    setup = resolve_setup(args)
    device, config, precision = setup.device, setup.config, setup.precision
    chosen = select(data.sources, args.limit)
    say(f"extract_bench on {device}: {len(chosen)} source images from {data.root}")
    weights_note = RANDOM_WEIGHTS_NOTE if config.weights == "random" else config.weights
    say(f"weights: {weights_note}")

    images = build_image_tree(chosen, work, args.replicate)
    started = time.perf_counter()
    hashes = hash_files(images.paths)
    hash_seconds = time.perf_counter() - started
    refs = [ImageRef(sha, path) for sha, path in zip(hashes, images.paths, strict=True)]
    dataset = describe_images(images)
    say(
        f"{dataset['images']} images ({dataset['bytes_total'] / 1e6:.0f} MB, median long "
        f"side {dataset['long_side_median_px']} px), hashed in {hash_seconds:.1f} s"
    )
    originals = spread([i for i, flag in enumerate(images.original) if flag], args.precision_images)

    say("decode only ...")
    keep = {hashes[i] for i in originals}
    decode, kept_pixels = measure_decode(refs, config, setup.limits, device, keep)
    for name, entry in decode.items():
        say(f"  {name}: {entry['images_per_s']:.1f} images/s")

    naive_runs: list[dict[str, object]] = []
    ours_runs: list[dict[str, object]] = []
    model_only: dict[str, object] | None = None
    if not args.precision_only:
        keep_names = [images.paths[i].name for i in originals]
        naive_runs, ours_runs, model_only = run_rounds(
            setup, images, refs, work, keep_names, args.model_seconds, args.skip_naive
        )

    naive_codes = None
    if naive_runs:
        naive_result = naive_runs[-1]
        loaded = np.load(naive_result["codes_path"])
        position = {name: i for i, name in enumerate(naive_result["names"])}
        naive_codes = loaded[[position[images.paths[i].name] for i in originals]]
    candidates = ["fp16", "bf16"] if device.type == "cuda" else ["bf16"]
    if precision != "fp32" and precision not in candidates:
        candidates.append(precision)
    pixels = torch.stack([kept_pixels[hashes[i]] for i in originals])
    labels = [images.labels[i] for i in originals]
    precision_result = measure_precision(pixels, labels, config, device, candidates, naive_codes)

    results: dict[str, object] = {}
    targets: dict[str, object] = {}
    if not args.precision_only:
        results = summarise_runs(naive_runs, ours_runs, precision)
        results["model_only"] = model_only
        results["decode_only"] = decode
        targets = check_targets(device, results)
    results["precision"] = precision_result
    results["prepare_hashing_seconds"] = hash_seconds
    results["replica_build_seconds"] = images.build_seconds
    info = machine_info(device)
    info["load_average_at_start"] = load_at_start
    info["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    result = {
        "benchmark": "extract" + ("_precision" if args.precision_only else ""),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m bench.extract "
        + shlex.join(argv if argv is not None else sys.argv[1:]),
        "machine": info,
        "notes": args.note,
        "dataset": dataset_record(dataset, data, len(chosen), args.replicate),
        "weights": weights_note,
        "random_weights": config.weights == "random",
        "settings": setup.record(),
        "results": results,
        "targets": targets,
    }
    print_table(result)
    name = f"extract_{device.type}{'_precision' if args.precision_only else ''}.json"
    write_result(result, args.output or RESULTS / name)
    return result


if __name__ == "__main__":
    main()
