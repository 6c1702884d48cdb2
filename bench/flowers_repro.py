"""Wall-clock time of ``dvc repro`` over the real flower_photos, then of one retuned head.

Why: the README quotes an end-to-end time for the whole pipeline and a rerun time for
``dvc exp run -S heads.svm.C=0.1``; this script is the measurement behind those figures.
It builds a throwaway workspace (``pipeline.workspace.create_workspace``) on
tests/params.yaml with ``data.root`` at the dataset, random weights, the CPU, two
feature sets, vgg16_fc6 and vgg16_fc7, and the vgg16_pool5_map map set (one forward pass
fills all three stores), so ``dvc repro`` trains every head on each feature set
(train@<head>-<feature set>), VGG16's classifier block on the maps
(train_block@vgg16_block-vgg16_pool5_map) and a short fine-tune from the images on a
subset of train (finetune@vgg16_top), all in one comparison. It times both commands,
records which stages ran or were skipped (the exp run should rerun train@svm-<set> for
each set and compare, nothing else), the head x feature set accuracy grid and the best
pair, and writes ``bench/results/flowers_repro_cpu.json`` with the machine and its load
average, since others may share the cores. Random weights: accuracies check the pipeline,
nothing more.

    python bench/flowers_repro.py [--data PATH] [--output PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from the repo root

from features.files import write_json  # noqa: E402
from pipeline.workspace import create_workspace, run_in  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "datasets" / "flower_photos"
NOTE = (
    "extract.weights is random: the accuracies check the pipeline end to end; they are not "
    "transfer-learning accuracy. Load averages are 1/5/15-minute, over all the machine's users."
)
DEFAULT_OUTPUT = ROOT / "bench" / "results" / "flowers_repro_cpu.json"
EXPERIMENT = ("dvc", "exp", "run", "-S", "heads.svm.C=0.1")
FEATURES = {
    "vgg16_fc6": {"backbone": "vgg16", "layer": "fc6"},
    "vgg16_fc7": {"backbone": "vgg16", "layer": "fc7"},
}
ENTRY_KEYS = (
    "accuracy",
    "accuracy_ci",
    "balanced_accuracy",
    "macro_f1",
    "fit_seconds",
    "n_train",
    "n_test",
)
MAPS = {"vgg16_pool5_map": {"backbone": "vgg16", "layer": "pool5_map"}}
BLOCK_HEADS = {"vgg16_block": {"epochs": 5, "patience": 2, "lr": 1.0e-4}}
FINETUNE = {  # the classifier block trained from the images: every image runs the convolutions
    "vgg16_top": {"unfreeze_from": "classifier.0", "epochs": 2, "max_images": 600}
}
COLUMNS = [*FEATURES, *MAPS, "finetune"]  # the accuracy grid's columns
EXPECTED_EXP_STAGES = sorted(["compare", *(f"train@svm-{name}" for name in FEATURES)])


def cpu_model() -> str:
    lines = Path("/proc/cpuinfo").read_text(errors="replace").splitlines()
    return next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "?")


def stages(output: str) -> dict[str, list[str]]:
    """Which stages a ``dvc repro``/``exp run`` ran, skipped, or restored from its run cache."""
    return {
        "ran": sorted(set(re.findall(r"Running stage '([^']+)'", output))),
        "skipped": sorted(set(re.findall(r"'([^']+)' didn't change, skipping", output))),
        "run_cache": sorted(set(re.findall(r"Stage '([^']+)' is cached - skipping", output))),
    }


def timed(workspace: Path, *command: str) -> dict[str, Any]:
    start = time.perf_counter()
    result = run_in(workspace, *command)
    seconds, output = round(time.perf_counter() - start, 1), result.stdout + result.stderr
    return {"command": " ".join(command), "seconds": seconds, **stages(output)}


def read(workspace: Path, relative: str) -> dict[str, Any]:
    return json.loads((workspace / relative).read_text())


def split_entry(name: str) -> tuple[str, str]:
    """``<head>-<feature set>``, a summary entry's key, as (head, feature set)."""
    features = next(f for f in COLUMNS if name.endswith(f"-{f}"))
    return name[: -len(features) - 1], features


def grid(entries: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Accuracy per head (rows, by name) and feature set (columns, in COLUMNS' order)."""
    cells = {split_entry(name): m["accuracy"] for name, m in entries.items()}
    heads = sorted({head for head, _ in cells})
    return {h: {f: cells[h, f] for f in COLUMNS if (h, f) in cells} for h in heads}


def measure(data: Path, scratch: Path) -> dict[str, Any]:
    overrides = {
        "downloads": {},
        "data": {"root": str(data)},
        "features": FEATURES,
        "maps": MAPS,
        "block_heads": BLOCK_HEADS,
        "finetune": FINETUNE,
        "extract": {"weights": "random", "device": "cpu"},
    }
    workspace = create_workspace(scratch / "project", overrides, base=ROOT / "tests/params.yaml")
    repro = timed(workspace, "dvc", "repro")
    extract = read(workspace, "reports/extract.json")
    counts = read(workspace, "reports/data.json")
    summary = read(workspace, "metrics/summary.json")
    experiment = timed(workspace, *EXPERIMENT)
    experiment["expected_ran"] = EXPECTED_EXP_STAGES
    experiment["ran_as_expected"] = experiment["ran"] == EXPECTED_EXP_STAGES
    after = read(workspace, "metrics/summary.json")["entries"]
    experiment["svm_accuracy"] = {f: after.get(f"svm-{f}", {}).get("accuracy") for f in FEATURES}
    backbone = extract["backbones"]["vgg16"]
    per_split = sum((Counter(splits) for splits in counts["images"].values()), Counter())
    return {
        "dataset": {
            "path": str(data),
            "files": counts["files"],
            "distinct_images": sum(per_split.values()),
            "per_split": dict(per_split),
            "duplicate_sets": len(counts["duplicates"]),
            "label_conflicts": len(counts["conflicts"]),
        },
        "repro": repro,
        "experiment": experiment,
        "extract": {
            **{k: v for k, v in extract.items() if not isinstance(v, dict | list)},
            **{k: v for k, v in backbone.items() if not isinstance(v, dict | list)},
            "layers_computed": backbone["layers_computed"],
            "timings": backbone["timings"],
        },
        "best": summary["best"],
        "accuracy_grid": grid(summary["entries"]),
        "entries": {
            name: {key: m.get(key) for key in ENTRY_KEYS} for name, m in summary["entries"].items()
        },
    }


def table(result: dict[str, Any]) -> str:
    repro, exp, ext, m = (result[k] for k in ("repro", "experiment", "extract", "machine"))
    lines = [
        f"load avg  {m['load_average_start']} -> {m['load_average_end']}, {m['cpu_count']} cores",
        f"repro     {repro['seconds']:6.1f} s  ran {', '.join(repro['ran'])}",
        f"extract   {ext['computed']} images at {ext['images_per_second']}/s, {ext['precision']}",
        f"exp run   {exp['seconds']:6.1f} s  ran {', '.join(exp['ran'])}; "
        f"skipped {', '.join(exp['skipped']) or 'none'}",
    ]
    lines += [
        f"  {name:18} accuracy {v['accuracy']:.3f}  fit {v['fit_seconds']:.1f} s"
        for name, v in result["entries"].items()
    ]
    best = result["best"]
    lines += [
        "",
        "accuracy, RANDOM WEIGHTS (a pipeline check, not transfer learning):",
        "| head | " + " | ".join(COLUMNS) + " |",
        "|---|" + "---:|" * len(COLUMNS),
        *(
            f"| {head} | " + " | ".join(f"{row[f]:.3f}" if f in row else "" for f in COLUMNS) + " |"
            for head, row in result["accuracy_grid"].items()
        ),
        f"best: {best['head']} on {best['features']}, accuracy {best['accuracy']:.3f}",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="dataset folder")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="result JSON")
    args = parser.parse_args()
    data = args.data.resolve()
    if not data.is_dir():
        print(f"no dataset at {data}; pass another folder with --data PATH", file=sys.stderr)
        return 2
    started = datetime.now(UTC).isoformat(timespec="seconds")
    machine: dict[str, Any] = {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "load_average_start": [round(v, 2) for v in os.getloadavg()],
        "torch": version("torch"),
        "dvc": version("dvc"),
    }
    with tempfile.TemporaryDirectory(prefix="flowers-repro-") as scratch:
        measured = measure(data, Path(scratch))
    machine["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    result = {
        "command": " ".join(["python", "bench/flowers_repro.py", *sys.argv[1:]]),
        "date": started,
        "machine": machine,
        "params": (
            "tests/params.yaml; downloads {}, data.root, extract weights random, device cpu; "
            "features vgg16_fc6 and vgg16_fc7, maps vgg16_pool5_map, block_heads "
            f"{BLOCK_HEADS}, finetune {FINETUNE}"
        ),
        **measured,
        "note": NOTE,
    }
    write_json(args.output, result)
    print(table(result))
    print(f"written: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
