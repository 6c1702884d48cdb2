"""The torch logistic-regression head: scikit-learn's optimum, every C of a sweep, and a
streaming solver that holds one chunk at a time."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss

from classifiers.fit import fit_head
from classifiers.heads import TorchLogRegParams
from classifiers.probe_torch import (
    TorchLogisticProbe,
    fit_one,
    fit_path,
    fit_path_streaming,
    in_memory,
)


def _codes(n: int, seed: int, dim: int = 64, classes: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Overlapping classes (no C separates them perfectly), non-negative like ReLU codes."""
    means = np.random.default_rng(0).normal(0, 0.35, (classes, dim))
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    return np.maximum(means[y] + rng.standard_normal((n, dim)), 0).astype(np.float32), y


@pytest.mark.parametrize("C", [1e-3, 0.1, 10.0])
def test_it_matches_scikit_learns_lbfgs_within_half_a_point_and_one_percent_log_loss(C):
    X, y = _codes(600, seed=1)
    X_val, y_val = _codes(400, seed=2)
    ours = TorchLogisticProbe(C=C).fit(X, y)
    theirs = LogisticRegression(C=C, max_iter=5000, tol=1e-8).fit(X, y)
    assert abs(ours.score(X_val, y_val) - theirs.score(X_val, y_val)) <= 0.005
    ours_loss = log_loss(y_val, ours.predict_proba(X_val))
    theirs_loss = log_loss(y_val, theirs.predict_proba(X_val))
    assert abs(ours_loss - theirs_loss) <= 0.01 * theirs_loss


def test_the_path_gives_each_C_the_head_a_fit_for_it_alone_would():
    X, y = _codes(400, seed=3)
    Cs = [1e-3, 1e-2, 1e-1, 1.0]
    path = fit_path(X, y, 5, Cs)
    assert path.weights.shape == (4, 64, 5) and len(path.iterations) == 4
    for index, C in enumerate(Cs):
        alone = TorchLogisticProbe(C=C).fit(X, y)
        np.testing.assert_allclose(path.weights[index].T.numpy(), alone.coef_, atol=2e-3)


def test_streaming_every_C_at_once_approaches_the_full_batch_optimum():
    X, y = _codes(800, seed=4)
    X_val, y_val = _codes(400, seed=5)
    Cs = [1e-2, 1.0]
    order = np.random.default_rng(0)
    read = []

    def chunks(epoch: int):
        permutation = order.permutation(len(y))
        for start in range(0, len(y), 100):
            rows = permutation[start : start + 100]
            read.append(len(rows))
            yield X[rows], y[rows]

    streamed = fit_path_streaming(chunks, len(y), 64, 5, Cs, epochs=30, lr=0.02)
    full = fit_path(X, y, 5, Cs)
    assert max(read) == 100  # one chunk in memory at a time
    val = torch.from_numpy(X_val)
    for index in range(len(Cs)):
        ours = torch.softmax(streamed.head(index).logits(val)[0], dim=1).numpy()
        best = torch.softmax(full.head(index).logits(val)[0], dim=1).numpy()
        assert abs(np.mean(ours.argmax(1) == y_val) - np.mean(best.argmax(1) == y_val)) <= 0.02
        assert log_loss(y_val, ours) <= 1.03 * log_loss(y_val, best)


def test_the_torch_head_sweeps_C_on_val_and_refits_on_train_and_val():
    X, y = _codes(500, seed=6)
    X_val, y_val = _codes(200, seed=7)
    params = TorchLogRegParams(sweep_low=1e-4, sweep_high=10.0, sweep_points=6, device="cpu")
    result = fit_head("torch_logreg", params, X, y, val=(X_val, y_val), val_source="val/")
    probe = result.probe
    assert probe["C"] == pytest.approx([1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0])
    assert result.params.C == probe["chosen"] and probe["n_val"] == 200
    assert all(iterations > 0 for iterations in probe["iterations"])
    assert all(np.isfinite(loss) for loss in probe["val_log_loss"])
    chosen = probe["C"].index(probe["chosen"])
    assert probe["val_accuracy"][chosen] == max(probe["val_accuracy"])
    assert result.model.predict_proba(X_val).shape == (200, 5)


def test_summing_the_gradient_over_chunks_gives_the_one_batch_fit():
    X, y = _codes(300, seed=8)
    whole, n = in_memory(X, y)

    def chunked():
        for start in range(0, n, 64):
            yield torch.from_numpy(X[start : start + 64]), torch.from_numpy(y[start : start + 64])

    one = fit_one(whole, n, 64, 5, C=0.1)
    streamed = fit_one(chunked, n, 64, 5, C=0.1)
    np.testing.assert_allclose(streamed.weights.numpy(), one.weights.numpy(), atol=1e-4)
    assert abs(streamed.iterations[0] - one.iterations[0]) <= 2
