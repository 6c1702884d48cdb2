"""Smoke tests of python -m bench.extract: it runs end to end on CPU and imports no dask/dvc."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest

from bench.extract import data
from bench.extract.__main__ import main
from bench.extract.data import build_image_tree, list_images, select
from features.data import preprocess
from features.data.synthetic import make_dataset

REPO = Path(__file__).resolve().parents[2]


def test_selection_is_even_per_class_and_reads_split_folders(tmp_path):
    make_dataset(tmp_path / "train", per_class=5)
    make_dataset(tmp_path / "test", per_class=2, start=5)
    sources = list_images(tmp_path)
    assert len(sources) == 28
    chosen = select(sources, 10)
    counts = {label: sum(s.label == label for s in chosen) for label in {s.label for s in chosen}}
    assert sorted(counts.values()) == [2, 2, 3, 3]
    assert select(sources, None) == sources


def test_replicas_are_distinct_files_of_the_same_size(tmp_path):
    make_dataset(tmp_path / "data", per_class=1, classes=("circles", "squares"))
    chosen = list_images(tmp_path / "data")
    images = build_image_tree(chosen, tmp_path / "work", replicate=3)
    assert len(images.paths) == 6 and sum(images.original) == 2
    hashes = {hashlib.sha256(path.read_bytes()).hexdigest() for path in images.paths}
    assert len(hashes) == 6, "the store deduplicates by hash: every copy must differ"
    from PIL import Image

    sizes = {Image.open(path).size for path in images.paths[:3]}
    assert len(sizes) == 1


def test_missing_data_says_how_to_get_it(tmp_path):
    with pytest.raises(SystemExit, match="--export-subset"):
        main(["--data", str(tmp_path / "nowhere")])


def test_without_any_dataset_it_runs_on_generated_images_and_says_so(tmp_path, monkeypatch, capsys):
    """A user's machine: no ../shared/datasets, no make run download; --data not given."""
    nowhere = (("shared", tmp_path / "no_shared"), ("downloaded", tmp_path / "no_download"))
    monkeypatch.setattr(data, "DATASETS", nowhere)
    # 32 px input, as the library's fast tests use: bf16 on a CPU without it takes a minute at 224
    tiny = partial(preprocess.Preprocessing, resize=32, crop=32)
    monkeypatch.setattr(preprocess, "Preprocessing", tiny)
    output = tmp_path / "result.json"
    main(["--device", "cpu", "--limit", "8", "--precision-only", "--output", str(output)])
    described = "generated (features.data.synthetic, 8 images)"
    assert f"data source: {described}" in capsys.readouterr().out
    saved = json.loads(output.read_text())
    assert saved["dataset"]["data_source"] == described
    assert saved["dataset"]["images"] == 8
    assert saved["results"]["precision"]["images"] == 8
    assert saved["settings"]["preprocessing"]["crop"] == 32


def test_bench_runs_end_to_end_on_cpu(tmp_path, capsys):
    """Every stage on 8 generated JPEGs: naive child, ours, model, decode, precision."""
    make_dataset(tmp_path / "data", per_class=2)
    output = tmp_path / "result.json"
    result = main(
        [
            "--device",
            "cpu",
            "--data",
            str(tmp_path / "data"),
            "--rounds",
            "1",
            "--batch-size",
            "4",
            "--model-seconds",
            "0.1",
            "--gpu-decode",
            "--output",
            str(output),
        ]
    )
    saved = json.loads(output.read_text())
    assert saved["random_weights"] is True and "RANDOM" in saved["weights"]
    assert saved["dataset"]["images"] == 8
    results = saved["results"]
    assert results["ours"]["runs"][0]["images"] == 8
    assert results["naive"]["runs"][0]["images"] == 8
    assert results["speedup_vs_naive"] > 0
    assert set(results["decode_only"]) == {"pil_loader", "device_decoder"}
    assert results["gpu_utilisation"] == {"naive": "n/a", "ours": "n/a"}
    precision = results["precision"]
    assert precision["bf16"]["relative_error_vs_fp32"]["overall"] < 2e-2
    # the notebook loop and ours compute the same fp32 codes from the same files
    assert precision["naive_loop_fp32"]["relative_error_vs_ours_fp32"]["overall"] < 1e-4
    assert saved["machine"]["cpu_count"] >= 1 and saved["machine"]["torch"]
    assert "speedup_vs_naive" in saved["targets"]
    assert result["results"]["ours"]["images_per_s"] == results["ours"]["images_per_s"]
    assert "| naive loop" in capsys.readouterr().out


def test_bench_and_what_it_imports_need_no_dask_or_dvc():
    code = (
        "import sys; sys.path[:0] = ['.']\n"
        "import bench.extract.__main__\n"
        "import features.compute, features.compute.gpu_decode, features.store, classifiers.heads\n"
        "import sklearn.model_selection\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'dvc'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
