"""A head's grid search on a Dask cluster (joblib's dask backend, worker processes) gives
the local backend's results for the same seed."""

from __future__ import annotations

import json
from pathlib import Path

import joblib
import numpy as np
import pytest
import yaml

from classifiers.fit import fit_head
from classifiers.heads import LogRegParams, MLPParams
from pipeline import train
from tests.conftest import SMALL_STORE, TEST_PARAMS, small_store

pytestmark = pytest.mark.slow


def _blobs(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.repeat(np.array(["a", "b", "c"]), 40)
    centres = rng.normal(0, 1.5, (3, 12))
    return (centres[np.searchsorted(["a", "b", "c"], y)] + rng.normal(size=(120, 12))), y


@pytest.fixture(scope="module")
def cluster():
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as local,
        Client(local) as client,
    ):
        yield client


@pytest.mark.parametrize(
    "params",
    [
        LogRegParams(C=1.0, grid={"C": [1e-3, 1e-1, 10.0]}, cv_folds=3),
        MLPParams(hidden=[8], max_iter=50, grid={"alpha": [1e-4, 1e-1]}, cv_folds=3),
    ],
)
def test_the_dask_backend_scores_every_point_as_the_local_one_does(cluster, params):
    X, y = _blobs()
    local = fit_head(local_kind(params), params, X, y)
    with joblib.parallel_config(backend="dask"):
        remote = fit_head(local_kind(params), params, X, y, n_jobs=-1)
    assert remote.cv == local.cv and remote.params == local.params
    np.testing.assert_array_equal(remote.model.predict_proba(X), local.model.predict_proba(X))
    assert sum(cluster.run(lambda: 1).values()) == 2  # the worker processes were there


def local_kind(params) -> str:
    return {LogRegParams: "logreg", MLPParams: "mlp"}[type(params)]


def _train(tmp_path: Path, root: Path, name: str, head: dict) -> dict:
    """The train stage on ``root``'s store with ``head`` as ``name``, extract.dask a local
    cluster of two worker processes; the head's metrics."""
    params = {
        **TEST_PARAMS,
        "downloads": {},
        "data": {"root": str(root / "images")},
        "heads": {name: head},
        "extract": {**TEST_PARAMS["extract"], "dask": {"workers": 2}},
    }
    (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(params))
    argv = [name, "--manifest", str(root / "manifest.csv")]
    argv += ["--store", str(root / SMALL_STORE), "--model", str(tmp_path / f"{name}.joblib")]
    argv += ["--metrics", str(tmp_path / f"{name}.json")]
    argv += ["--predictions", str(tmp_path / f"{name}.csv")]
    argv += ["--params", str(tmp_path / f"{name}.yaml")]
    train.main(argv)
    return json.loads((tmp_path / f"{name}.json").read_text())


def test_the_train_stage_runs_a_grid_on_the_extract_dask_cluster(tmp_path: Path, capsys):
    root = small_store(tmp_path / "data", per_class=6)
    results = {}
    for backend in ("local", "dask"):
        head = {"kind": "logreg", "C": 1.0, "grid": {"C": [0.01, 1.0]}, "cv_folds": 3}
        results[backend] = _train(tmp_path, root, backend, {**head, "backend": backend})
    assert "grid search: 2 points on tcp://" in capsys.readouterr().out
    assert results["dask"]["cv"] == results["local"]["cv"]
    assert results["dask"]["accuracy"] == results["local"]["accuracy"]


def test_a_streaming_head_reads_its_chunks_as_to_dask_tasks_on_the_cluster(tmp_path, capsys):
    root = small_store(tmp_path / "data", per_class=6)
    results = {}
    for backend in ("local", "dask"):
        head = {"kind": "sgd", "chunk_rows": 8, "epochs": 3, "backend": backend}
        results[backend] = _train(tmp_path, root, backend, head)
    assert "streaming chunks: store.to_dask() on tcp://" in capsys.readouterr().out
    assert results["dask"]["accuracy"] == results["local"]["accuracy"]
    local, remote = (joblib.load(tmp_path / f"{b}.joblib") for b in ("local", "dask"))
    np.testing.assert_array_equal(
        local.named_steps["clf"].coef_, remote.named_steps["clf"].coef_
    )  # the same chunks in the same order: the same model
