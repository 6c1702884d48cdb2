"""What the benchmark says: progress lines, the summary of the rounds, the table, the JSON."""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path

import torch

RANDOM_WEIGHTS_NOTE = (
    "RANDOM weights (torchvision initialisation, seed 0), the same in both loops: no "
    "pretrained weights can be downloaded on the benchmark machines. Speed does not depend "
    "on the weights; the head accuracies below are those of random-weight codes and say "
    "nothing about transfer learning, only whether the precision changes them."
)
TARGETS = {
    "cpu": {"speedup_vs_naive": 3.0},
    "cuda": {"end_to_end_images_per_s": 10_000, "speedup_vs_naive": 30.0, "model_only": 13_000},
}


def say(message: str = "") -> None:
    print(message, flush=True)


def say_run(run: dict[str, object]) -> None:
    say(f"  {run['images'] / run['seconds']:.1f} images/s ({run['seconds']:.1f} s)")


def rate(entries: list[dict[str, object]]) -> float:
    return sum(e["images"] for e in entries) / sum(e["seconds"] for e in entries)


def summarise_runs(naive_runs, ours_runs, precision: str) -> dict[str, object]:
    naive_rate = rate(naive_runs) if naive_runs else None
    steady = [r["steady_images_per_s"] for r in ours_runs if r["steady_images_per_s"]]
    ours_rate = rate(ours_runs)
    return {
        "naive": {
            "images_per_s": naive_rate,
            "runs": [
                {k: v for k, v in run.items() if k not in ("codes_path", "names")}
                for run in naive_runs
            ],
        },
        "ours": {
            "images_per_s": ours_rate,
            "steady_images_per_s": statistics.median(steady) if steady else None,
            "what": "images_per_s: wall time of the whole extract_codes call (weights, model, "
            "store, loader start, compile if any, every commit); steady_images_per_s: after the "
            "first batch's forward pass, i.e. without setup and compile (median of rounds)",
            "precision": precision,
            "runs": ours_runs,
        },
        "speedup_vs_naive": ours_rate / naive_rate if naive_rate else None,
        "speedup_per_round": [
            (o["images"] / o["seconds"]) / (n["images"] / n["seconds"])
            for n, o in zip(naive_runs, ours_runs, strict=False)
        ],
        "gpu_utilisation": {
            "naive": naive_runs[-1]["gpu_utilisation"] if naive_runs else "n/a",
            "ours": ours_runs[-1]["gpu_utilisation"],
        },
    }


def check_targets(device: torch.device, results: dict[str, object]) -> dict[str, object]:
    measured = {
        "end_to_end_images_per_s": results["ours"]["images_per_s"],
        "speedup_vs_naive": results["speedup_vs_naive"],
        "model_only": results["model_only"]["images_per_s"],
    }
    targets: dict[str, object] = {}
    for name, goal in TARGETS.get(device.type, {}).items():
        value = measured[name]
        if value is None:
            targets[name] = {"goal": goal, "measured": None, "met": None}
        else:
            targets[name] = {"goal": goal, "measured": round(value, 2), "met": value >= goal}
    return targets


def print_precision(precision: dict[str, object]) -> None:
    say(
        f"precision check on {precision['images']} images: head accuracy at fp32 "
        f"{precision['fp32']['head_accuracy']:.1f}%"
    )
    for name, entry in precision.items():
        if isinstance(entry, dict) and "relative_error_vs_fp32" in entry:
            say(
                f"  {name}: codes relative error "
                f"{entry['relative_error_vs_fp32']['overall']:.2e}, head accuracy "
                f"{entry['head_accuracy']:.1f}% ({entry['accuracy_change_points']:+.1f} points, "
                f"{entry['predictions_changed']} predictions changed), "
                f"{entry['speedup_vs_fp32_here']:.1f}x fp32's speed"
            )
    floor = precision["noise_floor"]
    say(
        f"  noise floor (fp32 codes not rounded to float16): "
        f"{floor['accuracy_change_points']:+.1f} points, "
        f"{floor['predictions_changed']} predictions changed"
    )
    if "naive_loop_fp32" in precision:
        error = precision["naive_loop_fp32"]["relative_error_vs_ours_fp32"]["overall"]
        say(f"  naive loop vs ours, both fp32: codes relative error {error:.1e}")


def print_table(result: dict[str, object]) -> None:
    r = result["results"]
    say()
    say(
        f"{result['machine']['device_name']}, {result['machine']['cpu_count']} CPUs; "
        f"{result['dataset']['description']}"
    )
    if "ours" in r:
        rows = [
            ("naive loop (ImageFolder+PIL, bs 20, fp32, 0 workers)", r["naive"]["images_per_s"]),
            (
                f"ours end to end ({r['ours']['precision']}, to the store)",
                r["ours"]["images_per_s"],
            ),
            ("ours after the first batch (no setup/compile)", r["ours"]["steady_images_per_s"]),
            (f"ours model only ({r['model_only']['precision']})", r["model_only"]["images_per_s"]),
        ]
        for name, entry in r["decode_only"].items():
            rows.append(
                (f"decode only: {name} ({entry['workers']} workers)", entry["images_per_s"])
            )
        width = max(len(name) for name, _ in rows)
        say(f"| {'stage'.ljust(width)} | images/s |")
        say(f"| {'-' * width} | -------: |")
        for name, value in rows:
            shown = "n/a" if value is None else f"{value:8.1f}"
            say(f"| {name.ljust(width)} | {shown:>8} |")
        speedup = r["speedup_vs_naive"]
        shown = "n/a" if speedup is None else f"{speedup:7.2f}x"
        say(f"| {'speed-up, end to end vs naive'.ljust(width)} | {shown:>8} |")
        say("  per round: " + ", ".join(f"{x:.2f}x" for x in r["speedup_per_round"]))
        say(
            "  model only per round: " + ", ".join(f"{x:.1f}" for x in r["model_only"]["per_round"])
        )
        gpu = r["gpu_utilisation"]
        say(f"  GPU utilisation: naive {gpu['naive']}, ours {gpu['ours']}")
    print_precision(r["precision"])
    for name, target in result["targets"].items():
        verdict = {True: "met", False: "MISSED", None: "not measured"}[target["met"]]
        say(f"  target {name} >= {target['goal']}: {target['measured']} ({verdict})")
    say(f"  weights: {result['weights']}")


def write_result(result: dict[str, object], path: Path) -> None:
    """The JSON at ``path``, and a copy under ``$OUT``: the GPU machine hands that back."""
    outputs = [path]
    if os.environ.get("OUT"):
        outputs.append(Path(os.environ["OUT"]) / path.name)
    for output in outputs:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(result, indent=2, default=str) + "\n")
        say(f"wrote {output}")
