"""The linear-probe protocol: C swept on val, warm-started, refitted on train + val."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from classifiers.fit import fit_head
from classifiers.heads import LogRegParams, SVMParams
from classifiers.probe import candidates, sweep_C
from classifiers.stats import expected_calibration_error
from pipeline.head_params import parse_head

PARAMS = LogRegParams(sweep_low=1e-4, sweep_high=1e2, sweep_points=7, max_iter=5000)


def _blobs(n: int, dim: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Three classes whose means differ in a few of ``dim`` dimensions, the rest noise."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.array(["a", "b", "c"]), n // 3)
    means = np.zeros((3, dim))
    means[np.arange(3), np.arange(3)] = 1.0
    X = means[np.searchsorted(["a", "b", "c"], y)] + noise * rng.standard_normal((len(y), dim))
    return X.astype(np.float32), y


def test_candidates_are_log_spaced_over_the_range():
    assert candidates(PARAMS) == pytest.approx([1e-4, 1e-3, 1e-2, 1e-1, 1, 10, 100])


def test_the_sweep_chooses_the_best_val_accuracy_and_records_the_path():
    X, y = _blobs(90, 200, 1.0, seed=0)
    X_val, y_val = _blobs(90, 200, 1.0, seed=1)
    sweep = sweep_C("logreg", PARAMS, X, y, X_val, y_val, "val/")
    assert sweep.C == candidates(PARAMS) and sweep.n_val == 90
    best = max(sweep.val_accuracy)
    chosen = sweep.C.index(sweep.chosen)
    assert sweep.val_accuracy[chosen] == best
    tied = [i for i, accuracy in enumerate(sweep.val_accuracy) if accuracy == best]
    assert sweep.val_log_loss[chosen] == min(sweep.val_log_loss[i] for i in tied)
    # few informative dimensions among many noisy ones: weak regularisation overfits
    assert sweep.chosen < 100 and sweep.val_accuracy[-1] < best
    for C, accuracy in zip(sweep.C, sweep.val_accuracy, strict=True):
        cold = LogisticRegression(C=C, max_iter=5000).fit(StandardScaler().fit_transform(X), y)
        scaled_val = StandardScaler().fit(X).transform(X_val)
        assert abs(np.mean(cold.predict(scaled_val) == y_val) - accuracy) <= 2 / 90


def test_the_warm_start_spends_fewer_iterations_than_cold_fits():
    X, y = _blobs(300, 300, 1.5, seed=2)
    X_val, y_val = _blobs(90, 300, 1.5, seed=3)
    sweep = sweep_C("logreg", PARAMS, X, y, X_val, y_val, "val/")
    scaled = StandardScaler().fit_transform(X)
    cold = [LogisticRegression(C=C, max_iter=5000).fit(scaled, y).n_iter_[0] for C in sweep.C]
    assert sum(sweep.iterations) < sum(cold)


def test_fit_head_refits_the_chosen_C_on_train_and_val_together():
    X, y = _blobs(90, 50, 1.0, seed=4)
    X_val, y_val = _blobs(30, 50, 1.0, seed=5)
    result = fit_head("logreg", PARAMS, X, y, val=(X_val, y_val), val_source="val/")
    assert result.selected_on == "val" and result.params.C == result.probe["chosen"]
    assert result.probe["fixed_by_hand"] is False and result.probe["refit_on"] == "train+val"
    assert result.probe["val_source"] == "val/" and result.probe["n_val"] == 30
    by_hand = fit_head(
        "logreg",
        replace(PARAMS, C=result.params.C),
        np.concatenate([X, X_val]),
        np.concatenate([y, y_val]),
    )
    probe = _blobs(30, 50, 1.0, seed=6)[0]
    np.testing.assert_allclose(
        result.model.predict_proba(probe), by_hand.model.predict_proba(probe), atol=1e-6
    )
    assert by_hand.probe == {"fixed_by_hand": True, "chosen": result.params.C}
    assert by_hand.selected_on is None


def test_a_swept_C_without_val_is_refused():
    X, y = _blobs(30, 10, 1.0, seed=7)
    with pytest.raises(ValueError, match="needs a val split"):
        fit_head("logreg", PARAMS, X, y)


def test_the_svm_sweeps_without_calibrating_each_candidate_and_calibrates_the_final_model():
    X, y = _blobs(90, 50, 1.0, seed=8)
    X_val, y_val = _blobs(30, 50, 1.0, seed=9)
    params = SVMParams(sweep_points=3, preprocess="l2")
    result = fit_head("svm", params, X, y, val=(X_val, y_val))
    assert result.probe["val_log_loss"] == [None, None, None]
    assert result.model.predict_proba(X_val).shape == (30, 3)


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ({"grid": {"max_iter": [10, 20]}}, "grid: C is 'sweep' (the default) and the grid"),
        ({"sweep_low": 10.0, "sweep_high": 1.0}, "sweep_low: got 10.0 with sweep_high 1.0"),
        ({"C": 0}, "heads.logreg.C: got 0"),
        ({"C": "auto"}, "heads.logreg.C: got 'auto'"),
    ],
)
def test_params_refuse_a_sweep_that_cannot_run(raw: dict, problem: str):
    problems: list[str] = []
    parse_head("logreg", raw, problems)
    assert any(problem in line for line in problems), problems


def test_params_take_a_swept_C_a_fixed_C_and_a_grid_over_C():
    for raw in ({}, {"C": "sweep"}, {"C": 0.5}, {"grid": {"C": [0.1, 1.0]}}):
        problems: list[str] = []
        assert parse_head("logreg", raw, problems) is not None and not problems, raw


def test_expected_calibration_error_is_zero_when_confidence_matches_accuracy():
    classes = np.array(["a", "b"])
    probabilities = np.tile([0.75, 0.25], (8, 1))
    actual = np.array(["a"] * 6 + ["b"] * 2)  # 75 % right at 75 % confidence
    assert expected_calibration_error(actual, probabilities, classes) == pytest.approx(0.0)
    overconfident = np.tile([0.99, 0.01], (8, 1))
    assert expected_calibration_error(actual, overconfident, classes) == pytest.approx(0.24)
