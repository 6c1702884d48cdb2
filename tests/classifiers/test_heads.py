"""Heads: factories, grid search on train only, streaming fit, persistence round trip."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest
from sklearn.pipeline import Pipeline

from classifiers.data import load_split
from classifiers.epochs import iter_split
from classifiers.evaluate import evaluate
from classifiers.fit import fit_head, fit_streaming
from classifiers.heads import HEADS, LogRegParams, MLPParams, SGDParams, SVMParams
from classifiers.persist import HeadError, load_head, save_head
from features.data.manifest import ManifestRow
from features.store import FeatureStore, StoreWriter
from features.store.fingerprint import Fingerprint, FingerprintMismatch
from pipeline.schema import parse

CLASSES = ["a", "b", "c"]
FINGERPRINT = Fingerprint(
    "vgg16", "classifier.1", 16, "random:0", "{}", "fp32", "float16", "2", "0"
)


def _blobs(n_per_class: int = 30, dim: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, size=(len(CLASSES), dim))
    X = np.concatenate([rng.normal(c, 1.0, size=(n_per_class, dim)) for c in centres])
    y = np.repeat(CLASSES, n_per_class)
    return X.astype(np.float32), y


@pytest.mark.parametrize("kind", ["logreg", "svm", "mlp"])
def test_each_head_is_a_pipeline_that_learns_separable_classes(kind):
    X, y = _blobs(n_per_class=120)
    params = HEADS[kind].params()
    model = HEADS[kind].build(params)
    assert isinstance(model, Pipeline) and [name for name, _ in model.steps] == ["scale", "clf"]
    val = np.arange(len(y)) % 6 == 0  # logreg and svm choose C on val by default
    result = fit_head(kind, params, X[~val], y[~val], val=(X[val], y[val]))
    metrics, predicted = evaluate(result.model, X, y, CLASSES)
    assert metrics["accuracy"] > 0.9
    assert len(predicted) == len(y)
    assert set(metrics["per_class"]) == set(CLASSES)
    assert np.array(metrics["confusion_matrix"]["matrix"]).sum() == len(y)


def test_svm_rbf_option_and_probabilities():
    X, y = _blobs()
    model = fit_head("svm", SVMParams(kernel="rbf", C=1.0), X, y).model
    probabilities = model.predict_proba(X[:5])
    assert probabilities.shape == (5, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)


def test_mlp_default_is_the_classic_single_256_layer():
    model = HEADS["mlp"].build(MLPParams())
    assert model.named_steps["clf"].hidden_layer_sizes == (256,)


def test_grid_search_refits_the_best_cv_candidate():
    X, y = _blobs()
    rng = np.random.default_rng(0)
    X = X + rng.normal(0, 4.0, size=X.shape).astype(np.float32)  # overlapping classes
    params = SVMParams(C=1.0, probability=False, grid={"C": [1e-4, 1e-2, 1.0]}, cv_folds=3)
    result = fit_head("svm", params, X, y)
    assert [row["params"] for row in result.cv] == [{"C": 1e-4}, {"C": 1e-2}, {"C": 1.0}]
    best = max(result.cv, key=lambda row: row["mean_accuracy"])
    assert result.params.C == best["params"]["C"] and result.params.grid is None
    assert result.model.named_steps["clf"].C == best["params"]["C"]
    assert len({row["mean_accuracy"] for row in result.cv}) > 1, "candidates must differ"


@pytest.fixture
def blob_store(tmp_path: Path) -> tuple[list[ManifestRow], Path]:
    """The blobs in a real store, with train manifest rows: what the train stage streams."""
    X, y = _blobs(n_per_class=60)
    hashes = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(len(y))]
    with StoreWriter(tmp_path / "store", FINGERPRINT, log=lambda _: None) as writer:
        writer.commit(hashes, X)
    rows = [
        ManifestRow(f"{label}/{i}.jpg", sha, str(label), "train")
        for i, (sha, label) in enumerate(zip(hashes, y, strict=True))
    ]
    return rows, tmp_path / "store"


def test_streaming_fit_sees_chunks_only(blob_store):
    rows, root = blob_store
    params = SGDParams()  # seed 0: the scaler pass shuffles with seed 0 - 1
    seen = []

    def chunks(epoch):
        for X, y in iter_split(rows, "train", store, 32, params.seed + epoch):
            seen.append(len(y))
            yield X, y

    with FeatureStore(root) as store:
        result = fit_streaming("sgd", params, CLASSES, chunks)
        train = load_split(rows, "train", store)
    assert max(seen) <= 32 and sum(seen) == (params.epochs + 1) * len(rows)
    assert (result.model.predict(train.X) == train.y).mean() > 0.9


@pytest.mark.parametrize("seed", [-1, 2**32])
def test_seed_outside_sklearn_range_is_refused_at_params_load(seed):
    problems: list[str] = []
    parse(SGDParams, {"seed": seed}, "heads.sgd", problems)
    assert len(problems) == 1 and problems[0].startswith(f"heads.sgd.seed: got {seed}")


def test_saved_head_predicts_identically_after_loading(tmp_path):
    X, y = _blobs()
    result = fit_head("logreg", LogRegParams(C=1.0), X, y)
    path = tmp_path / "models" / "logreg.joblib"
    sidecar = save_head(
        result.model,
        path,
        "logreg",
        "logreg",
        FINGERPRINT,
        CLASSES,
        dataclasses.asdict(result.params),
    )
    loaded, meta = load_head(path, expected=FINGERPRINT)
    assert meta == sidecar and meta.classes == CLASSES
    np.testing.assert_array_equal(loaded.predict(X), result.model.predict(X))
    np.testing.assert_array_equal(loaded.predict_proba(X), result.model.predict_proba(X))


def test_tampered_head_is_refused_before_unpickling(tmp_path):
    X, y = _blobs()
    path = tmp_path / "svm.joblib"
    save_head(
        fit_head("svm", SVMParams(C=1.0), X, y).model, path, "svm", "svm", FINGERPRINT, CLASSES, {}
    )
    payload = bytearray(path.read_bytes())
    payload[-10] ^= 0xFF
    path.write_bytes(bytes(payload))
    with pytest.raises(HeadError, match="does not match the sidecar"):
        load_head(path)


def test_head_fitted_on_other_codes_is_refused(tmp_path):
    X, y = _blobs()
    path = tmp_path / "logreg.joblib"
    save_head(
        fit_head("logreg", LogRegParams(C=1.0), X, y).model,
        path,
        "logreg",
        "logreg",
        FINGERPRINT,
        CLASSES,
        {},
    )
    other = dataclasses.replace(FINGERPRINT, weights="random:1")
    said = "weights: the head was trained on 'random:0', the store holds 'random:1'"
    with pytest.raises(FingerprintMismatch, match=said) as refused:
        load_head(path, expected=other)
    assert "Retrain it: `dvc repro train@logreg`" in str(refused.value)
