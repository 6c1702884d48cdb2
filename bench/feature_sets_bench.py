"""What extracting two or three VGG16 layers in one pass costs end to end, next to fc6 alone.

The issue's target: extracting fc6 and fc7 in one pass costs at most 1.1x fc6 alone.
``python bench/feature_sets_bench.py`` measures it on this machine's CPU in one run, twice:

* end to end: :func:`extract_codes` over the same N real JPEGs (flower_photos beside the
  repository, spread evenly over its classes; generated ones from
  ``features.data.synthetic`` when it is absent, or ``--data``) into fresh temporary
  stores, for fc6 alone, {fc6, fc7} and {fc6, fc7, pool5}: setup, decode, resize 256 /
  crop 224, the forward pass, the commits. Wall and CPU seconds (this process, all
  threads), images/s and steady images/s (after the first batch), and each set's cost
  over fc6's;
* the forward pass alone: ``bench/layers_bench.py``'s measurement of the extractor
  module on one random batch (``--forward-repeats 0`` skips it).

The layer sets take turns, one run each per round after an untimed warm-up, so a change
in the machine's load (it is shared) hits them alike. The headline ratio pairs each run
with fc6's in the same round and takes the median over rounds; the ratio of the fastest
runs and of the median CPU seconds are given beside it. Random-weight VGG16, fp32, CPU:
the speed does not depend on the weights' values, so imagenet weights run at the same
speed. The tables are printed and written, with the machine and its load average, to
``bench/results/feature_sets_cpu.json``.

    python bench/feature_sets_bench.py [--images 96] [--rounds 4] [--data PATH]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere, like make bench does

from bench import layers_bench  # noqa: E402
from bench.common import cpu_header, markdown_table  # noqa: E402
from bench.extract.data import DATASETS, list_images, select  # noqa: E402
from features.compute.config import ExtractConfig  # noqa: E402
from features.compute.extract import extract_codes  # noqa: E402
from features.compute.loader import ImageRef  # noqa: E402
from features.data.images import ImageLimits  # noqa: E402
from features.data.preprocess import Preprocessing  # noqa: E402
from features.data.synthetic import make_dataset  # noqa: E402
from features.files import write_json  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "feature_sets_cpu.json"
LAYER_SETS = layers_bench.LAYER_SETS  # fc6 alone first: the baseline
TARGET_RATIO = layers_bench.TARGET_RATIO
WEIGHTS_NOTE = (
    "random-weight VGG16: speed does not depend on the weights' values, so imagenet weights "
    "run at the same speed; no accuracy is measured here"
)


def find_images(data: Path | None, count: int, scratch: Path) -> tuple[str, list[ImageRef]]:
    """``count`` JPEGs spread over the classes, as extraction inputs, and where they are from."""
    if data is None:
        data = next((root for _, root in DATASETS if root.is_dir()), None)
    if data is None:
        per_class = -(-count // 4)
        make_dataset(scratch / "generated", per_class=per_class)
        data, source = scratch / "generated", f"generated (features.data.synthetic, {count})"
    else:
        source = str(data)
    chosen = select(list_images(data), count)
    if len(chosen) < count:
        raise SystemExit(f"{data} holds {len(chosen)} JPEGs, fewer than --images {count}")
    refs = {}  # reading every file here also warms the page cache for all the runs alike
    for image in chosen:
        refs.setdefault(hashlib.sha256(image.path.read_bytes()).hexdigest(), image.path)
    return source, [ImageRef(sha, path) for sha, path in refs.items()]


def extract_once(
    refs: list[ImageRef], layers: Sequence[str], config: ExtractConfig, scratch: Path
) -> dict[str, float]:
    """One :func:`extract_codes` run into fresh stores, one per layer: wall and steady rate."""
    with tempfile.TemporaryDirectory(dir=scratch) as stores:
        roots = {layer: Path(stores) / layer for layer in layers}
        started, cpu = time.perf_counter(), time.process_time()
        report = extract_codes(refs, roots, config, ImageLimits(), progress=False, log=_quiet)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    one_pass = {"+".join(layers): len(refs)}  # every layer from the same forward passes
    if report.computed != len(refs) or report.layers_computed != one_pass:
        raise RuntimeError(f"{'+'.join(layers)}: computed {report.layers_computed}")
    return {
        "wall_s": wall,
        "cpu_s": cpu,  # this process's CPU seconds, all threads: less swayed by other users
        "setup_s": report.timings.get("setup", 0.0),
        "steady_images_per_s": report.steady_images_per_second,
    }


def _quiet(_: str) -> None:
    pass


def measure_end_to_end(
    refs: list[ImageRef], config: ExtractConfig, rounds: int, scratch: Path
) -> dict[str, dict[str, Any]]:
    """Per layer set, over ``rounds`` turns: wall and CPU seconds, rates, ratios to fc6.

    The headline ratio is the median over rounds of the set's wall over fc6's in the same
    round: neighbours in time share the machine's load, so the pairing cancels most of it.
    """
    extract_once(refs[: config.batch_size], ("fc6",), config, scratch)  # warm-up, untimed
    runs: dict[str, list[dict[str, float]]] = {"+".join(s): [] for s in LAYER_SETS}
    for index in range(rounds):
        # alternate the order too, so no set always runs first, or after the same one
        order = LAYER_SETS if index % 2 == 0 else LAYER_SETS[::-1]
        for layers in order:
            run = extract_once(refs, layers, config, scratch)
            runs["+".join(layers)].append(run)
            load = os.getloadavg()[0]
            print(
                f"round {index + 1}/{rounds}  {'+'.join(layers):15} {run['wall_s']:6.1f} s wall"
                f"  {run['cpu_s']:6.1f} s CPU  load {load:.2f}"
            )
    fc6 = runs["fc6"]
    results = {}
    for name, taken in runs.items():
        wall = statistics.median(r["wall_s"] for r in taken)
        paired = [r["wall_s"] / f["wall_s"] for r, f in zip(taken, fc6, strict=True)]
        results[name] = {
            "images": len(refs),
            "rounds": rounds,
            "wall_s": [round(r["wall_s"], 2) for r in taken],
            "cpu_s": [round(r["cpu_s"], 2) for r in taken],
            "median_wall_s": round(wall, 2),
            "median_cpu_s": round(statistics.median(r["cpu_s"] for r in taken), 2),
            "median_setup_s": round(statistics.median(r["setup_s"] for r in taken), 2),
            "images_per_s": round(len(refs) / wall, 2),
            "steady_images_per_s": round(
                statistics.median(r["steady_images_per_s"] for r in taken), 2
            ),
            "ratio_to_fc6": round(statistics.median(paired), 4),
            "ratio_to_fc6_per_round": [round(ratio, 4) for ratio in paired],
            "ratio_of_minimum_walls": round(
                min(r["wall_s"] for r in taken) / min(f["wall_s"] for f in fc6), 4
            ),
            "ratio_of_median_cpu": round(
                statistics.median(r["cpu_s"] for r in taken)
                / statistics.median(f["cpu_s"] for f in fc6),
                4,
            ),
        }
    return results


def end_to_end_table(results: dict[str, dict[str, Any]]) -> str:
    return markdown_table(
        "| layers (one pass) | images | median wall s | images/s | steady images/s "
        "| median CPU s | wall / fc6 (paired median) | min wall / fc6 min | CPU / fc6 "
        "| target |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        (
            (
                name,
                r["images"],
                f"{r['median_wall_s']:.1f}",
                f"{r['images_per_s']:.2f}",
                f"{r['steady_images_per_s']:.2f}",
                f"{r['median_cpu_s']:.1f}",
                f"{r['ratio_to_fc6']:.3f}",
                f"{r['ratio_of_minimum_walls']:.3f}",
                f"{r['ratio_of_median_cpu']:.3f}",
                f"<= {TARGET_RATIO}",
            )
            for name, r in results.items()
        ),
    )


def main(argv: Sequence[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=96, help="N images per run")
    parser.add_argument("--rounds", type=int, default=4, help="runs per layer set")
    parser.add_argument("--data", type=Path, default=None, help="<class>/*.jpg folder")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--px", type=int, default=224, help="crop side; resize is 256/224 of it")
    parser.add_argument("--forward-batch", type=int, default=16, help="module pass batch")
    parser.add_argument("--forward-repeats", type=int, default=3, help="0: skip the module")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    preprocessing = Preprocessing(resize=round(args.px * 256 / 224), crop=args.px)
    config = ExtractConfig(
        weights="random",
        device="cpu",
        precision="fp32",
        batch_size=args.batch_size,
        preprocessing=preprocessing,
    )
    with tempfile.TemporaryDirectory(prefix="feature-sets-bench-") as scratch:
        source, refs = find_images(args.data, args.images, Path(scratch))
        load = [round(v, 2) for v in os.getloadavg()]
        print(f"{len(refs)} images from {source}; load average {load}")
        end_to_end = measure_end_to_end(refs, config, args.rounds, Path(scratch))
    forward = (
        layers_bench.measure(args.forward_batch, args.px, args.forward_repeats)
        if args.forward_repeats
        else {}
    )
    tables = {"end_to_end": end_to_end_table(end_to_end)}
    if forward:
        tables["forward_pass"] = layers_bench.forward_table(forward, args.forward_batch)
    pair = end_to_end["fc6+fc7"]["ratio_to_fc6"]
    result = {
        **cpu_header("python bench/feature_sets_bench.py", argv, load_before),
        "weights": WEIGHTS_NOTE,
        "config": {
            "backbone": "vgg16",
            "weights": "random",
            "device": "cpu",
            "precision": "fp32",
            "batch_size": args.batch_size,
            "channels_last": config.channels_last,
            "preprocessing": {"resize": preprocessing.resize, "crop": preprocessing.crop},
            "data_source": source,
            "images": len(refs),
        },
        "end_to_end": end_to_end,
        "forward_pass": forward,
        "target_ratio": TARGET_RATIO,
        "fc6_fc7_ratio": pair,
        "within_target": pair <= TARGET_RATIO,
        "tables": tables,
    }
    write_json(args.out, result)
    for name, table in tables.items():
        print(f"\n{name.replace('_', ' ')}:\n{table}")
    print(
        f"\nfc6+fc7 end to end {pair:.3f}x fc6 alone (target <= {TARGET_RATIO}); "
        f"load average {[round(v, 2) for v in os.getloadavg()]}; written to {args.out}"
    )
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
