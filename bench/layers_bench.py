"""What asking one forward pass for more VGG16 layers costs, next to fc6 alone.

``python bench/layers_bench.py`` times on this machine's CPU, with random-weight VGG16
(speed does not depend on the weights' values), fp32, channels_last and the runner's CPU
allocator setting, one forward pass of a (batch, 3, px, px) batch through the extractor
:func:`build_layers_extractor` builds for each layer set: fc6 alone, fc6+fc7, and
fc6+fc7+pool5. The sets take turns, one batch each per round, after a warm-up pass each,
so a change in the machine's load hits all of them alike. Medians and minima are
reported with each set's median over fc6's (the target for feature sets: at most 1.1),
the machine and the load average. The table is printed and written to
``bench/results/layers_cpu.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere, like make bench does

import torch  # noqa: E402
from torch import nn  # noqa: E402

from bench.common import cpu_header, elapsed_ms, markdown_table  # noqa: E402
from features.compute.backbones import BACKBONES, build_layers_extractor  # noqa: E402
from features.compute.encoder import cpu_allocator_tuned  # noqa: E402
from features.files import write_json  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "layers_cpu.json"
LAYER_SETS = (("fc6",), ("fc6", "fc7"), ("fc6", "fc7", "pool5"))
TARGET_RATIO = 1.1


def _forward_ms(model: nn.Module, pixels: torch.Tensor) -> float:
    return elapsed_ms(lambda: model(pixels))


def measure(batch: int, px: int, repeats: int) -> dict[str, dict[str, float]]:
    """Per layer set: median and minimum ms of ``repeats`` interleaved forward passes."""
    cpu = torch.device("cpu")
    models = {
        "+".join(names): build_layers_extractor(BACKBONES["vgg16"], names, None, seed=0).to(
            memory_format=torch.channels_last
        )
        for names in LAYER_SETS
    }
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randn(batch, 3, px, px, generator=generator).contiguous(
        memory_format=torch.channels_last
    )
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode(), cpu_allocator_tuned(cpu):
        for model in models.values():
            _forward_ms(model, pixels)  # warm-up: oneDNN picks its kernels
        for _ in range(repeats):
            for name, model in models.items():
                times[name].append(_forward_ms(model, pixels))
    fc6 = statistics.median(times["fc6"])
    return {
        name: {
            "median_ms": round(statistics.median(ms), 1),
            "min_ms": round(min(ms), 1),
            "ratio_to_fc6": round(statistics.median(ms) / fc6, 4),
            "repeats": repeats,
        }
        for name, ms in times.items()
    }


def forward_table(results: dict[str, dict[str, float]], batch: int) -> str:
    return markdown_table(
        "| layers | median ms | min ms | median ms per image | median / fc6 alone |",
        "|---|---:|---:|---:|---:|",
        (
            (
                name,
                r["median_ms"],
                r["min_ms"],
                f"{r['median_ms'] / batch:.1f}",
                f"{r['ratio_to_fc6']:.3f}",
            )
            for name, r in results.items()
        ),
    )


def main(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--px", type=int, default=224, help="input side")
    parser.add_argument("--repeats", type=int, default=5, help="timed batches per layer set")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    results = measure(args.batch_size, args.px, args.repeats)
    table = forward_table(results, args.batch_size)
    print(table)
    worst = max(r["ratio_to_fc6"] for r in results.values())
    write_json(
        args.out,
        {
            **cpu_header("python bench/layers_bench.py", argv, load_before),
            "config": {
                "backbone": "vgg16",
                "weights": "random",
                "input_px": args.px,
                "batch_size": args.batch_size,
                "precision": "fp32",
                "channels_last": True,
            },
            "measurements": results,
            "target_ratio": TARGET_RATIO,
            "within_target": worst <= TARGET_RATIO,
            "table": table,
        },
    )
    print(f"worst ratio {worst:.3f} (target <= {TARGET_RATIO}); written to {args.out}")


if __name__ == "__main__":
    main(sys.argv[1:])
