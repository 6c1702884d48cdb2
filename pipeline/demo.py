"""``make demo``: the whole pipeline, offline, on generated shapes and random weights.

Builds a workspace (a copy of this project in its own git + DVC repo), generates a small
dataset there, tracks it with ``dvc add``, and runs ``dvc repro``. Everything stays in
place afterwards for a look: two feature sets' stores (fc6 and fc7), three heads fitted
on each, the head x feature set comparison and plots.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

from features.data.synthetic import make_dataset
from pipeline.cli import ArgumentParser, run
from pipeline.workspace import create_workspace, run_in, workspace_env

DATA = "data/shapes"
OVERRIDES = {
    "downloads": {},
    "data": {"root": DATA},
    "split": {"test_fraction": 0.25},
    "extract": {
        "weights": "random",  # nothing is downloaded; every output says so
        "device": "cpu",
        "batch_size": 16,
        "commit_seconds": 5,
        "preprocessing": {"resize": 64, "crop": 64},  # small input: seconds, not minutes
    },
    "features": {  # two layers from one forward pass: every head on each
        "vgg16_fc6": {"backbone": "vgg16", "layer": "fc6"},
        "vgg16_fc7": {"backbone": "vgg16", "layer": "fc7"},
    },
}


def main(argv: Sequence[str]) -> None:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--dest", type=Path, default=Path("demo"))
    parser.add_argument("--per-class", type=int, default=40)
    args = parser.parse_args(argv)
    workspace = args.dest.resolve()
    if not (workspace / ".dvc").is_dir():
        create_workspace(workspace, OVERRIDES)
        make_dataset(workspace / DATA, per_class=args.per_class)
        run_in(workspace, "dvc", "add", "-q", DATA)
        run_in(workspace, "git", "commit", "-q", "-m", "demo dataset")
        print(f"demo: workspace {workspace} with {args.per_class} images per class")
    subprocess.run(["dvc", "repro"], cwd=workspace, env=workspace_env(), check=True)
    subprocess.run(["dvc", "metrics", "show"], cwd=workspace, env=workspace_env(), check=True)
    print(
        f"demo: artifacts in {workspace}: store/<feature set>/, models/<feature set>/, "
        f"reports/compare.md, reports/plots/"
    )


if __name__ == "__main__":
    run(main)
