"""The audit's scores on data whose answer is known: flipped labels, planted copies,
an isolated point."""

from __future__ import annotations

import numpy as np

from classifiers.audit.duplicates import group_pairs, leaking_pairs
from classifiers.audit.label_issues import find_label_errors
from classifiers.audit.neighbours import (
    CodeIndexSettings,
    Neighbours,
    cosine_neighbours,
    hamming_pairs,
)
from classifiers.audit.null import null_bound
from classifiers.audit.outliers import flag_outliers, outlier_scores
from classifiers.audit.run import NearDuplicateRule, _mutual, _near_duplicate_pairs


def _separable(n_per_class: int, classes: int, dim: int, seed: int):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=4.0, size=(classes, dim))
    y = np.repeat(np.arange(classes), n_per_class)
    X = centres[y] + rng.normal(size=(len(y), dim))
    return X.astype(np.float32), np.array([f"class{c}" for c in y])


def test_flipped_labels_rank_in_the_top_tenth():
    X, y = _separable(100, 5, 32, seed=1)
    rng = np.random.default_rng(2)
    flipped = rng.choice(len(y), size=len(y) // 20, replace=False)  # 5 %
    noisy = y.copy()
    for row in flipped:
        noisy[row] = rng.choice([c for c in np.unique(y) if c != y[row]])
    issues = find_label_errors(X, noisy, C=0.1)
    top_tenth = set(np.argsort(issues.quality)[: len(y) // 10].tolist())
    assert len(top_tenth & set(flipped.tolist())) >= 0.8 * len(flipped)
    assert issues.flagged[flipped].mean() >= 0.8
    assert (issues.predicted[flipped] == y[flipped]).mean() >= 0.8


def test_cosine_neighbours_exact_and_approximate_agree_on_planted_copies():
    X, _ = _separable(200, 10, 64, seed=3)
    copies = X[:50] + np.random.default_rng(4).normal(scale=0.01, size=(50, 64))
    codes = np.concatenate([X, copies]).astype(np.float16)
    read = lambda start, stop: codes[start:stop]  # noqa: E731
    exact = cosine_neighbours(read, len(codes), 64, CodeIndexSettings(k=3))
    approx = cosine_neighbours(
        read, len(codes), 64, CodeIndexSettings(k=3, exact_max_rows=100, reduced_dim=48)
    )
    assert exact.exact and not approx.exact
    originals = np.arange(50)
    assert (exact.indices[originals, 0] == originals + len(X)).all()
    assert (approx.indices[originals, 0] == originals + len(X)).mean() >= 0.95
    assert (exact.indices != np.arange(len(codes))[:, None]).all()  # never itself
    assert np.isfinite(exact.similarities).all() and exact.similarities.max() <= 1.0


def test_hamming_pairs_finds_exactly_the_pairs_under_the_radius():
    rng = np.random.default_rng(5)
    signatures = rng.integers(0, 256, size=(2000, 16), dtype=np.uint8)
    signatures[10] = signatures[3]
    signatures[11] = signatures[3] ^ np.eye(16, dtype=np.uint8)[0] * 0b111  # 3 bits off
    found = {tuple(p) for p in hamming_pairs(signatures, max_distance=3).tolist()}
    assert found == {(3, 10, 0), (3, 11, 3), (10, 11, 3)}


def test_groups_join_copies_of_copies_and_leakage_comes_first():
    splits = ["train", "train", "test", "train", "train", "val"]
    pairs = np.array([[0, 1], [3, 4], [4, 5]])
    groups = group_pairs(pairs, len(splits), splits)
    assert [g.members for g in groups] == [(3, 4, 5), (0, 1)]
    assert [g.leaks for g in groups] == [True, False]
    assert leaking_pairs(groups, splits) == 2  # (3,5) and (4,5)


def test_an_isolated_code_is_the_top_outlier():
    X, _ = _separable(100, 3, 16, seed=6)
    X = np.concatenate([np.abs(X), -np.ones((1, 16), np.float32) * 5])
    neighbours = cosine_neighbours(lambda a, b: X[a:b], len(X), 16, CodeIndexSettings(k=5))
    scores = outlier_scores(neighbours)
    flagged = flag_outliers(scores)
    assert flagged[-1] and scores.argmax() == len(X) - 1 and flagged.mean() < 0.05


def test_the_fused_rule_accepts_far_bits_with_near_codes_and_rejects_the_reverse():
    packed = np.zeros((4, 16), dtype=np.uint8)
    packed[1, :4] = 0xFF  # rows 0 and 1: 32 bits apart, beyond the candidate radius
    codes = np.array([[1, 0, 0], [1, 0.01, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32)
    neighbours = Neighbours(np.array([[1], [0], [3], [2]]), np.ones((4, 1), np.float32), True)
    hashes = ["a", "b", "c", "d"]
    lookup = dict(zip(hashes, codes, strict=True))
    rule = NearDuplicateRule(max_hamming=50, weight=0.002, threshold=0.9)
    pairs = _near_duplicate_pairs(
        packed,
        np.ones(4, bool),
        rule,
        neighbours,
        lambda hs: np.stack([lookup[h] for h in hs]),
        hashes,
    )
    assert pairs.tolist() == [[0, 1]]  # (2, 3): same bits, orthogonal codes


def test_mutual_top_pairs_break_a_chain_of_crowded_codes():
    pairs = np.array([[0, 1], [1, 2], [2, 3], [3, 4], [0, 2]])
    score = np.array([0.99, 0.95, 0.96, 0.99, 0.5])
    kept = _mutual(pairs, score, 5, top=1)
    assert kept.tolist() == [[0, 1], [3, 4]]  # 1-2 and 2-3: not each other's best
    assert _mutual(pairs, score, 5, top=2).tolist() == [[0, 1], [1, 2], [2, 3], [3, 4]]


def test_the_dataset_bound_keeps_random_pairs_out_and_copies_in():
    rng = np.random.default_rng(7)
    signatures = rng.integers(0, 256, size=(3000, 16), dtype=np.uint8)
    signatures[1] = signatures[0] ^ np.eye(16, dtype=np.uint8)[5] * 0b1011  # 3 bits off
    bound = null_bound(signatures, budget=1.0)
    found = hamming_pairs(signatures, bound.radius)
    assert 3 <= bound.radius < 40 and bound.expected_false_pairs <= 1.0
    assert (0, 1) in {(int(a), int(b)) for a, b, _ in found} and len(found) <= 5
    assert abs(bound.mean - 64) < 1 and bound.pairs == 3000 * 2999 // 2
