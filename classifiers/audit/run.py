"""The audit over one feature set's store: near-duplicates and leakage, likely label errors,
outliers, each image scored once."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from sklearn.decomposition import PCA

from classifiers.audit.duplicates import DuplicateGroup, group_pairs, leaking_pairs
from classifiers.audit.label_issues import LabelIssues, find_label_errors
from classifiers.audit.neighbours import (
    Neighbours,
    cosine_neighbours,
    hamming_pairs,
    unit_rows,
)
from classifiers.audit.null import NullBound, null_bound
from classifiers.audit.outliers import flag_outliers, outlier_scores
from classifiers.audit.settings import AuditSettings
from features.data.manifest import ManifestRow
from features.data.perceptual import hamming, signatures
from features.errors import UserError
from features.store import FeatureStore

__all__ = ["CANDIDATE_RADIUS", "AuditResult", "NearDuplicateRule", "run_audit"]

_READ_ROWS = 8192
_PCA_SAMPLE = 20_000
MUTUAL_TOP = 2  # a photo and two copies: each copy's two best matches
CANDIDATE_RADIUS = 24  # bits: two random 128-bit signatures come this close once in ~4e12


@dataclass(frozen=True)
class NearDuplicateRule:
    """When two images are near-duplicates: perceptual distance at most ``max_hamming``
    and, for the fused rule, ``cosine - weight * distance >= threshold``."""

    max_hamming: int
    weight: float | None = None
    threshold: float | None = None
    fixed: bool = False  # set by hand: not narrowed for the dataset's size

    @classmethod
    def from_calibration(cls, rule: dict) -> NearDuplicateRule:
        return cls(
            rule["max_hamming"], rule.get("weight"), rule.get("threshold"), rule.get("fixed", False)
        )


@dataclass
class AuditResult:
    """Every audited image (manifest rows the store holds), scored."""

    rows: list[ManifestRow]
    groups: list[DuplicateGroup]
    leaking_pairs: int
    outlier_score: np.ndarray
    outlier: np.ndarray
    labels: LabelIssues | None  # over the train rows, in row order; None: see label_skip
    label_skip: str | None
    train_rows: np.ndarray  # row numbers the label scores belong to
    unreadable: list[str]  # paths whose signature could not be computed
    not_in_store: int
    max_hamming: int  # the perceptual radius applied
    null: NullBound | None  # the dataset-size bound on it; None when fixed by hand or fused
    seconds: dict[str, float] = field(default_factory=dict)


def _reader(store: FeatureStore, hashes: Sequence[str]) -> Callable[[int, int], np.ndarray]:
    return lambda start, stop: store.get(hashes[start:stop])


def _pair_cosines(read_hashes: Callable[[list[str]], np.ndarray], hashes, pairs) -> np.ndarray:
    """Cosine similarity of each candidate pair, reading each endpoint's code once."""
    ends, inverse = np.unique(pairs, return_inverse=True)
    codes = unit_rows(read_hashes([hashes[row] for row in ends]))
    first, second = inverse.reshape(pairs.shape).T
    return np.einsum("ij,ij->i", codes[first], codes[second])


def _near_duplicate_pairs(
    packed: np.ndarray,
    decoded: np.ndarray,
    rule: NearDuplicateRule,
    neighbours: Neighbours,
    read_hashes: Callable[[list[str]], np.ndarray],
    hashes: Sequence[str],
) -> np.ndarray:
    """Row pairs the rule joins. The perceptual rule: a range search at its radius. The
    fused rule scores candidates exactly: pairs within :data:`CANDIDATE_RADIUS` bits, and
    each image's nearest codes (a pair far apart in bits needs a cosine only neighbours
    have); a wider range search would return ~0.04 % of all pairs at 45 bits."""
    decodable = np.flatnonzero(decoded)
    radius = rule.max_hamming if rule.weight is None else min(rule.max_hamming, CANDIDATE_RADIUS)
    close = decodable[hamming_pairs(packed[decodable], radius)[:, :2]]
    if rule.weight is None:
        return close
    rows = np.repeat(np.arange(len(neighbours.indices)), neighbours.indices.shape[1])
    near = np.stack([rows, neighbours.indices.ravel()], axis=1)
    near = near[(near[:, 1] >= 0) & decoded[near[:, 0]] & decoded[np.maximum(near[:, 1], 0)]]
    candidates = np.unique(np.sort(np.concatenate([close, near]), axis=1), axis=0)
    if not len(candidates):
        return candidates
    distance = hamming(packed[candidates[:, 0]], packed[candidates[:, 1]])
    score = _pair_cosines(read_hashes, hashes, candidates) - rule.weight * distance
    passed = score >= rule.threshold
    return _mutual(candidates[passed], score[passed], len(decoded), MUTUAL_TOP)


def _mutual(pairs: np.ndarray, score: np.ndarray, n: int, top: int) -> np.ndarray:
    """The pairs in which each image is among the other's ``top`` best-scoring partners.

    Codes of random or generic weights crowd together: every image has many neighbours
    just over a cosine threshold, and single linkage chains them into one group of
    hundreds (flowers: 402). A copy is its original's best match; a distinct photo that
    happens to pass rarely is, for both sides."""
    if not len(pairs):
        return pairs
    both = np.concatenate([pairs, pairs[:, ::-1]])
    order = np.lexsort((-np.concatenate([score, score]), both[:, 0]))
    both = both[order]
    starts = np.flatnonzero(np.r_[True, both[1:, 0] != both[:-1, 0]])
    rank = np.arange(len(both)) - np.repeat(starts, np.diff(np.r_[starts, len(both)]))
    kept = both[rank < top]
    keys = kept[:, 0] * n + kept[:, 1]
    forward = np.isin(pairs[:, 0] * n + pairs[:, 1], keys)
    backward = np.isin(pairs[:, 1] * n + pairs[:, 0], keys)
    return pairs[forward & backward]


def _codes_for_labels(read: Callable[[int, int], np.ndarray], n: int, settings: AuditSettings):
    """The train codes as float32, PCA-reduced above ``exact_max_rows`` so the fits stay
    in memory at any size (1.28M x 4096 float32 would be 21 GB)."""
    blocks = [read(start, min(n, start + _READ_ROWS)) for start in range(0, n, _READ_ROWS)]
    if n <= settings.index.exact_max_rows:
        return np.concatenate(blocks).astype(np.float32)
    rng = np.random.default_rng(settings.seed)
    sample = np.concatenate(blocks)[np.sort(rng.choice(n, min(n, _PCA_SAMPLE), replace=False))]
    pca = PCA(settings.index.reduced_dim, svd_solver="randomized", random_state=settings.seed)
    pca.fit(sample.astype(np.float32))
    return np.concatenate([pca.transform(block.astype(np.float32)) for block in blocks])


def run_audit(
    rows: Sequence[ManifestRow],
    store: FeatureStore,
    data_root: Path,
    settings: AuditSettings,
    rule: NearDuplicateRule,
    log: Callable[[str], None] = print,
) -> AuditResult:
    """Audit the manifest rows that have codes in ``store``; ``rule`` says which images
    are near-duplicates."""
    seconds: dict[str, float] = {}
    held = store.contains([row.sha256 for row in rows])
    audited = [row for row, ok in zip(rows, held, strict=True) if ok]
    hashes = [row.sha256 for row in audited]
    splits = [row.split for row in audited]
    read = _reader(store, hashes)

    started = time.perf_counter()
    packed, decoded = signatures([data_root / row.path for row in audited])
    seconds["signatures"] = time.perf_counter() - started
    started = time.perf_counter()
    neighbours = cosine_neighbours(read, len(audited), store.dim, settings.index)
    seconds["code_neighbours"] = time.perf_counter() - started
    started = time.perf_counter()
    null = None
    if rule.weight is None and not rule.fixed:
        budget = settings.false_pairs_per_image * len(audited)
        null = null_bound(packed[decoded], budget, settings.seed)
        rule = replace(rule, max_hamming=min(rule.max_hamming, null.radius))
    pairs = _near_duplicate_pairs(packed, decoded, rule, neighbours, store.get, hashes)
    groups = group_pairs(pairs, len(audited), splits)
    seconds["near_duplicates"] = time.perf_counter() - started
    scores = outlier_scores(neighbours)

    started = time.perf_counter()
    train_rows = np.flatnonzero(np.asarray(splits) == "train")
    train_hashes = [hashes[row] for row in train_rows]
    X = _codes_for_labels(_reader(store, train_hashes), len(train_hashes), settings)
    y = np.asarray([audited[row].label for row in train_rows])
    labels, label_skip = None, None
    try:
        labels = find_label_errors(X, y, settings.label_C, settings.label_folds, settings.seed)
    except UserError as error:
        label_skip = str(error)
        log(f"audit: label audit skipped: {label_skip}")
    seconds["label_issues"] = time.perf_counter() - started
    flagged = int(labels.flagged.sum()) if labels is not None else 0
    log(
        f"audit: {len(audited)} images, {len(groups)} near-duplicate groups "
        f"({sum(g.leaks for g in groups)} leaking), {flagged} likely label errors, "
        f"in {sum(seconds.values()):.1f} s"
    )
    return AuditResult(
        rows=audited,
        groups=groups,
        leaking_pairs=leaking_pairs(groups, splits),
        outlier_score=scores,
        outlier=flag_outliers(scores, settings.outlier_cutoff),
        labels=labels,
        label_skip=label_skip,
        train_rows=train_rows,
        unreadable=[row.path for row, ok in zip(audited, decoded, strict=True) if not ok],
        not_in_store=len(rows) - len(audited),
        max_hamming=rule.max_hamming,
        null=null,
        seconds=seconds,
    )
