"""Every head kind through the real ``train`` stage, with its default params.

The unit tests in tests/classifiers feed heads hand-made arrays and chunk functions; this
runs ``pipeline.train.main`` exactly as dvc.yaml calls it, on a tiny real store, so a
head whose stage path breaks (as ``sgd`` with seed 0 once did) fails here.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from classifiers import probe_stream
from classifiers.data import load_split
from classifiers.heads import HEADS
from classifiers.persist import load_head
from features.data.manifest import read_manifest
from features.store import FeatureStore
from pipeline import train
from tests.conftest import SMALL_EXTRACT, SMALL_STORE, small_store

TEST_FRACTION = 0.25
# What a kind needs beyond its defaults: an sklearn head has no default estimator.
REQUIRED = {"sklearn": {"estimator": "sklearn.neighbors.KNeighborsClassifier"}}
SCORES = ("accuracy", "balanced_accuracy", "macro_f1", "fit_seconds", "predict_ms_per_1000")


@pytest.fixture(scope="module")
def store_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Images, manifest and store, built once: extraction is the slow part."""
    return small_store(
        tmp_path_factory.mktemp("train_stage"), per_class=6, test_fraction=TEST_FRACTION
    )


def load_split_rows(root: Path, split: str) -> list:
    return [row for row in read_manifest(root / "manifest.csv") if row.split == split]


def _params(root: Path, heads: dict[str, dict]) -> dict:
    """Every section pipeline.params requires, built here: never the user's params.yaml."""
    return {
        "paths": {
            "manifest": str(root / "manifest.csv"),
            "files_report": "reports/files.csv",
            "data_report": "reports/data.json",
            "scan_cache": "cache/scan.sqlite",
            "store": str(root / "store"),
            "extract_report": "reports/extract.json",
            "models": "models",
            "metrics": "metrics/heads",
            "predictions": "plots/predictions",
            "summary": "metrics/summary.json",
            "compare_report": "reports/compare.md",
            "plots": "reports/plots",
            "tradeoff": "plots/tradeoff.csv",
            "checkpoints": "checkpoints",
            "curves": "plots/curves",
        },
        "downloads": {},
        "data": {"root": str(root / "images")},
        "split": {"test_fraction": TEST_FRACTION},
        "extract": SMALL_EXTRACT,
        "heads": heads,
    }


@pytest.mark.parametrize("kind", sorted(k for k, spec in HEADS.items() if not spec.on_maps))
def test_each_head_kind_trains_through_the_stage_with_default_params(
    kind: str, store_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(_params(store_root, {kind: REQUIRED.get(kind, {})})))
    model = tmp_path / "models" / f"{kind}.joblib"
    metrics_path = tmp_path / "metrics" / f"{kind}.json"
    predictions = tmp_path / "plots" / f"{kind}.csv"
    argv = [kind, "--manifest", str(store_root / "manifest.csv")]
    argv += ["--store", str(store_root / SMALL_STORE), "--model", str(model)]
    argv += ["--metrics", str(metrics_path), "--predictions", str(predictions)]
    argv += ["--params", str(params)]

    assert train.main(argv) is None

    metrics = json.loads(metrics_path.read_text())
    assert metrics["head"] == kind and metrics["kind"] == kind
    if kind in ("logreg", "svm", "torch_logreg"):  # the linear-probe protocol by default
        probe = metrics["probe"]
        assert probe["fixed_by_hand"] is False and probe["refit_on"] == "train+val"
        assert metrics["n_train"] == len(load_split_rows(store_root, "train"))
        assert f"C {probe['chosen']:.3g} chosen on {probe['n_val']} val images" in (
            capsys.readouterr().out
        )
    for key in SCORES:
        assert isinstance(metrics[key], float) and math.isfinite(metrics[key]), key
    assert 0.0 <= metrics["accuracy"] <= 1.0
    rows = read_manifest(store_root / "manifest.csv")
    with FeatureStore(store_root / SMALL_STORE) as store:
        test = load_split(rows, "test", store)
        loaded, sidecar = load_head(model, expected=store.fingerprint)
    assert sidecar.kind == kind and sidecar.classes == sorted({row.label for row in rows})
    with predictions.open(newline="") as stream:
        written = list(csv.DictReader(stream))
    assert [row["sha256"] for row in written] == test.hashes
    assert [row["predicted"] for row in written] == list(loaded.predict(test.X))
    assert metrics["n_test"] == len(test.y) > 0


def _run(store_root: Path, tmp_path: Path, name: str, head: dict) -> dict:
    params = tmp_path / f"{name}.yaml"
    params.write_text(yaml.safe_dump(_params(store_root, {name: head})))
    argv = [name, "--manifest", str(store_root / "manifest.csv")]
    argv += ["--store", str(store_root / SMALL_STORE)]
    argv += ["--model", str(tmp_path / f"{name}.joblib")]
    argv += ["--metrics", str(tmp_path / f"{name}.json")]
    argv += ["--predictions", str(tmp_path / f"{name}.csv"), "--params", str(params)]
    train.main(argv)
    return json.loads((tmp_path / f"{name}.json").read_text())


def _counted_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """From now on, the row count of every ``FeatureStore.get``, in order."""
    read: list[int] = []
    get = FeatureStore.get

    def counted(self, hashes, out=None):
        read.append(len(hashes))
        return get(self, hashes, out)

    monkeypatch.setattr(FeatureStore, "get", counted)
    return read


def test_the_streaming_torch_probe_reads_chunks_and_lands_near_the_in_memory_one(
    store_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sweep = {"kind": "torch_logreg", "sweep_low": 1e-3, "sweep_high": 10.0, "sweep_points": 5}
    sweep["val_fraction"] = 0.25
    in_memory = _run(store_root, tmp_path, "memory", sweep)
    read = _counted_reads(monkeypatch)
    streamed = _run(store_root, tmp_path, "streamed", {**sweep, "chunk_rows": 4})
    # one chunk of codes in memory at a time; only scoring reads the (small) test split whole
    assert read and [n for n in read if n > 4] == [streamed["n_test"]]
    assert streamed["probe"]["n_val"] == in_memory["probe"]["n_val"]
    # the same full-batch L-BFGS fits, summed over chunks: the same search and model
    assert streamed["probe"]["C"] == in_memory["probe"]["C"]
    assert streamed["probe"]["chosen"] == in_memory["probe"]["chosen"]
    assert streamed["n_train"] == in_memory["n_train"]
    assert streamed["accuracy"] == in_memory["accuracy"]
    adam = {**sweep, "chunk_rows": 4, "solver": "adam", "epochs": 40}
    joint = _run(store_root, tmp_path, "joint", adam)
    assert joint["probe"]["C"] == [1e-3, 1e-2, 1e-1, 1.0, 10.0]  # every C in each pass
    assert abs(joint["accuracy"] - in_memory["accuracy"]) <= 0.2  # 6 test images
    fixed = _run(store_root, tmp_path, "fixed", {**sweep, "chunk_rows": 4, "C": 0.5})
    assert fixed["probe"] == {"fixed_by_hand": True, "chosen": 0.5}


def test_a_probe_whose_codes_fit_on_its_accelerator_reads_each_split_once_and_fits_the_same(
    store_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert not probe_stream.fits_on(torch.device("cpu"), 1)  # a CPU streams, RSS stays flat
    sweep = {"kind": "torch_logreg", "sweep_low": 1e-3, "sweep_high": 10.0, "sweep_points": 5}
    sweep |= {"val_fraction": 0.25, "chunk_rows": 4}
    streamed = _run(store_root, tmp_path, "streamed", sweep)
    read = _counted_reads(monkeypatch)
    monkeypatch.setattr(probe_stream, "fits_on", lambda device, nbytes: True)
    kept = _run(store_root, tmp_path, "kept", sweep)
    n_fit = kept["n_train"]
    # one pass each to keep train and val; the scalers, every L-BFGS evaluation and the
    # refit on train + val read the device's copies
    assert sum(n for n in read if n <= 4) == n_fit
    assert kept["probe"] == streamed["probe"]
    assert kept["accuracy"] == streamed["accuracy"]
