"""The standard scaler fitted chunk by chunk in torch is scikit-learn's."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.preprocessing import StandardScaler

from classifiers.scaler_torch import fit_standard_scaler, torch_transform


def test_chunked_torch_moments_give_scikit_learns_fitted_scaler() -> None:
    rng = np.random.default_rng(3)
    X = np.maximum(rng.normal(2.0, 3.0, (1000, 6)), 0).astype(np.float32)
    X[:, 1] = 0.0  # a dead ReLU unit
    X[:, 2] = 7.25  # constant: scikit-learn scales it by 1, not by a rounding error
    X[:, 3] += 1e4  # a large mean over a small spread: the pairwise update keeps it
    chunks = [torch.from_numpy(X[a:b]) for a, b in ((0, 1), (1, 333), (333, 999), (999, 1000))]
    ours = fit_standard_scaler(chunks)
    reference = StandardScaler().fit(X)
    assert ours.n_samples_seen_ == reference.n_samples_seen_ == 1000
    np.testing.assert_allclose(ours.mean_, reference.mean_, rtol=1e-6)
    np.testing.assert_allclose(ours.var_, reference.var_, rtol=1e-4, atol=1e-9)
    np.testing.assert_array_equal(ours.scale_[1:3], [1.0, 1.0])
    np.testing.assert_allclose(ours.scale_, reference.scale_, rtol=1e-4)
    codes = torch.from_numpy(X.copy())
    torch_transform(ours, torch.device("cpu"))(codes)
    np.testing.assert_allclose(codes.numpy(), reference.transform(X), rtol=1e-3, atol=1e-3)


def test_no_rows_is_an_error_not_a_scaler_of_nothing() -> None:
    with pytest.raises(ValueError, match="no rows"):
        fit_standard_scaler([])
