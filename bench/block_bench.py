"""One epoch of the classifier-block head on cached pool5 maps, against the same epoch run
through VGG16's frozen convolutions from the images.

The claim behind ``train_block@``: retraining fc6 -> fc7 -> output on stored maps skips
the convolutions (~15 GFLOP an image) and pays only the block (~0.2 GFLOP forward, ~0.7
with its backward pass), so an epoch should be at least 15x cheaper. Both paths here run
the same training step (:class:`classifiers.block.ClassifierBlock`, fused AdamW, the same
seed and batch order); they differ only in where a batch's maps come from:

* **cached**: rows of a ``vgg16_pool5_map`` store, read with :meth:`FeatureStore.get`;
* **from images**: the extract loader (decode, resize, crop) and the frozen convolutions
  and average pool under ``torch.no_grad``, as fine-tuning from ``classifier.0`` would.

The store is filled once beforehand by :func:`extract_codes` (its time is reported, not
part of either epoch). Each path runs ``--rounds`` epochs, alternating, after an untimed
warm-up step; the headline is the median of the paired ratios. Random-weight VGG16, fp32,
CPU; labels are the hash modulo five: the speed depends on neither. Writes
``bench/results/block_cpu.json``.

    python bench/block_bench.py [--images 128] [--batch-size 64] [--rounds 2] [--data PATH]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere, like make bench does

from bench.common import cpu_header, markdown_table  # noqa: E402
from bench.feature_sets_bench import find_images  # noqa: E402
from classifiers.block import BlockInit, ClassifierBlock, block_init  # noqa: E402
from features.compute.backbones import build_backbone, get_backbone  # noqa: E402
from features.compute.config import ExtractConfig  # noqa: E402
from features.compute.extract import extract_codes  # noqa: E402
from features.compute.loader import ImageRef, make_loader  # noqa: E402
from features.compute.weights import resolve_weights  # noqa: E402
from features.data.images import ImageLimits  # noqa: E402
from features.data.preprocess import Preprocessing  # noqa: E402
from features.files import write_json  # noqa: E402
from features.store import FeatureStore  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "block_cpu.json"
TARGET = 15.0  # the convolutions' FLOPs over the block's, per image
SEED = 0

Batches = Callable[[], Iterator[tuple[torch.Tensor, torch.Tensor]]]


def _quiet(_: str) -> None:
    pass


def _labels(refs: Sequence[ImageRef]) -> torch.Tensor:
    return torch.tensor([int(ref.sha256[:8], 16) % 5 for ref in refs])


def cached_batches(store: Path, refs: Sequence[ImageRef], batch_size: int) -> Batches:
    """Maps read from the store, batch by batch, as float32."""
    labels, hashes = _labels(refs), [ref.sha256 for ref in refs]

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        with FeatureStore(store) as reader:
            for start in range(0, len(hashes), batch_size):
                rows = reader.get(hashes[start : start + batch_size])
                maps = torch.from_numpy(np.asarray(rows, dtype=np.float32))
                yield maps, labels[start : start + batch_size]

    return batches


def image_batches(
    refs: Sequence[ImageRef], config: ExtractConfig, batch_size: int, convolutions: torch.nn.Module
) -> Batches:
    """Maps computed now: decode and crop each image, then the frozen convolutions."""
    labels, prep = _labels(refs), config.preprocessing
    mean = torch.tensor(prep.mean).view(1, 3, 1, 1) * 255
    std = torch.tensor(prep.std).view(1, 3, 1, 1) * 255

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        loader = make_loader(refs, prep, ImageLimits(), batch_size, 0, pin_memory=False)
        start = 0
        for batch in loader:
            with torch.no_grad():
                pixels = (batch.pixels.float() - mean) / std
                maps = convolutions(pixels.contiguous(memory_format=torch.channels_last))
            yield maps.flatten(1), labels[start : start + len(batch.hashes)]
            start += len(batch.hashes)

    return batches


def train_epoch(init: BlockInit, batches: Batches) -> dict[str, float]:
    """One epoch of the block's training step over ``batches``: seconds and images."""
    torch.manual_seed(SEED)
    block = ClassifierBlock(init, n_classes=5, dropout=0.5).train()
    optimizer = torch.optim.AdamW(block.parameters(), lr=1e-4, weight_decay=5e-4, fused=True)
    images, started = 0, time.perf_counter()
    for maps, labels in batches():
        loss = torch.nn.functional.cross_entropy(block(maps), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        images += len(labels)
    return {"seconds": time.perf_counter() - started, "images": images}


def measure(refs: list[ImageRef], config: ExtractConfig, rounds: int, scratch: Path) -> dict:
    store = scratch / "store" / "vgg16_pool5_map"
    started = time.perf_counter()
    extract_codes(refs, {"pool5_map": store}, config, ImageLimits(), progress=False, log=_quiet)
    extract_seconds = time.perf_counter() - started
    spec = get_backbone("vgg16")
    weights = resolve_weights(spec, "random", config.seed, None)
    vgg = build_backbone(spec, weights.state_dict, config.seed).to(
        memory_format=torch.channels_last
    )
    convolutions = torch.nn.Sequential(vgg.features, vgg.avgpool).eval()
    init = block_init("vgg16", "random", config.seed, None)
    paths = {
        "cached maps": cached_batches(store, refs, config.batch_size),
        "from images": image_batches(refs, config, config.batch_size, convolutions),
    }
    for batches in paths.values():  # warm-up: one step each, untimed
        train_epoch(init, lambda b=batches: iter([next(b())]))
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in paths}
    for index in range(rounds):
        order = list(paths) if index % 2 == 0 else list(paths)[::-1]
        for name in order:
            run = train_epoch(init, paths[name])
            runs[name].append(run)
            print(f"round {index + 1}/{rounds}  {name:12} {run['seconds']:7.1f} s")
    paired = [
        image["seconds"] / cached["seconds"]
        for image, cached in zip(runs["from images"], runs["cached maps"], strict=True)
    ]
    return {
        "images": len(refs),
        "batch_size": config.batch_size,
        "extract_once_seconds": round(extract_seconds, 2),
        "store_bytes": sum(f.stat().st_size for f in store.rglob("*") if f.is_file()),
        "epochs": {
            name: {
                "seconds": [round(r["seconds"], 2) for r in taken],
                "median_seconds": round(statistics.median(r["seconds"] for r in taken), 2),
                "images_per_s": round(
                    len(refs) / statistics.median(r["seconds"] for r in taken), 2
                ),
            }
            for name, taken in runs.items()
        },
        "speedup_per_round": [round(ratio, 2) for ratio in paired],
        "speedup": round(statistics.median(paired), 2),
        "target": TARGET,
    }


def table(result: dict[str, Any]) -> str:
    rows = [
        (name, result["images"], f"{e['median_seconds']:.1f}", f"{e['images_per_s']:.1f}")
        for name, e in result["epochs"].items()
    ]
    return (
        markdown_table(
            "| one epoch of the block | images | median s | images/s |",
            "|---|---:|---:|---:|",
            rows,
        )
        + f"\n\ncached maps are {result['speedup']:.1f}x faster per epoch (target >= "
        f"{TARGET:.0f}x); filling the store once took {result['extract_once_seconds']:.1f} s"
    )


def main(argv: Sequence[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=128, help="images in the epoch")
    parser.add_argument("--batch-size", type=int, default=64, help="block_heads' default")
    parser.add_argument("--rounds", type=int, default=2, help="epochs per path")
    parser.add_argument("--data", type=Path, default=None, help="<class>/*.jpg folder")
    parser.add_argument("--px", type=int, default=224, help="crop side; resize is 256/224 of it")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    config = ExtractConfig(
        weights="random",
        device="cpu",
        precision="fp32",
        batch_size=args.batch_size,
        preprocessing=Preprocessing(resize=round(args.px * 256 / 224), crop=args.px),
    )
    with tempfile.TemporaryDirectory(prefix="block-bench-") as scratch:
        source, refs = find_images(args.data, args.images, Path(scratch))
        print(f"{len(refs)} images from {source}, {args.px} px, batch {args.batch_size}")
        measured = measure(refs, config, args.rounds, Path(scratch))
    result = {
        **cpu_header("python bench/block_bench.py", argv, load_before),
        "data": source,
        "px": args.px,
        "weights": "random VGG16, fp32: the speed does not depend on the weights' values",
        **measured,
    }
    write_json(args.out, result)
    print(table(result))
    print(f"written: {args.out}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
