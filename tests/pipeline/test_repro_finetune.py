"""Frozen heads, the classifier block on pool5 maps and a fine-tuned network in one real
``dvc repro``: one comparison, and each rerun only where its params changed."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from pipeline.workspace import run_in
from tests.conftest import SHAPES_OVERRIDES, shapes_workspace

pytestmark = pytest.mark.slow

MAPS = "vgg16_pool5_map"
FROZEN = ("logreg", "svm", "mlp")
OVERRIDES = {
    **SHAPES_OVERRIDES,
    "heads": {"mlp": {"hidden": [32], "max_iter": 50}},
    "maps": {MAPS: {"backbone": "vgg16", "layer": "pool5_map"}},
    "block_heads": {"block": {"epochs": 2, "batch_size": 16, "val_fraction": 0.3}},
    # resnet50: a tenth of VGG16's bytes for dvc to hash and cache
    "finetune": {
        "tiny": {"backbone": "resnet50", "unfreeze_from": "fc", "epochs": 1, "val_fraction": 0.3}
    },
}


def _ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    return shapes_workspace(tmp_path_factory.mktemp("ws"), OVERRIDES, per_class=6)


def test_one_repro_trains_frozen_block_and_finetuned_models_into_one_comparison(workspace):
    output = run_in(workspace, "dvc", "repro").stdout
    assert _ran(output) == {
        "prepare",
        "extract",
        *(f"train@{head}-vgg16_fc6" for head in FROZEN),
        f"train_block@block-{MAPS}",
        "finetune@tiny",
        "audit",
        "compare",
        "report",
    }
    assert "alignment: fc6 recomputed from" in output
    summary = json.loads((workspace / "metrics/summary.json").read_text())
    froms = {name: entry["predicts_from"] for name, entry in summary["entries"].items()}
    assert froms == {
        **{f"{head}-vgg16_fc6": "stored codes" for head in FROZEN},
        f"block-{MAPS}": "stored maps",
        "tiny-finetune": "images (whole network)",
    }
    report = (workspace / "reports/compare.md").read_text()
    assert "| tiny | finetune |" in report and "must run it for every new image" in report
    plots = run_in(workspace, "dvc", "plots", "show", "--json").stdout
    assert "plots/curves/finetune/tiny.csv" in plots and f"plots/curves/{MAPS}/block.csv" in plots


def test_changing_the_finetune_epochs_reruns_only_it_and_compare(workspace):
    params_file = workspace / "params.yaml"
    params = yaml.safe_load(params_file.read_text())
    params["finetune"]["tiny"]["epochs"] = 2
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    output = run_in(workspace, "dvc", "repro").stdout
    assert _ran(output) == {"finetune@tiny", "compare", "report"}
    metrics = json.loads((workspace / "metrics/heads/finetune/tiny.json").read_text())
    assert metrics["epochs_run"] == 2 and metrics["random_weights"] is True
