"""How many distinct photos a perceptual radius would join in this dataset.

The calibration set has ~10^5 pairs of distinct photos; a dataset of n images has n²/2,
6.7M for the flowers and 8x10^11 for ImageNet. A radius that lets no calibration pair
through can still join hundreds of look-alike photos there (measured on the flowers:
radius 31 chained 77 of them). So the radius is also bounded by the dataset's own
distances: the Hamming distance between random pairs of its images, nearly all distinct,
is close to normal (mean ~63 of 128 bits on the flowers), and a normal tail gives the
expected number of distinct pairs within each radius. Its spread is taken from the sample's
0.1 % quantile, not its standard deviation: photos of one composition (a round flower
centred on a dark ground) make the near tail heavier than the bulk says.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

from features.data.perceptual import hamming

__all__ = ["NullBound", "null_bound"]

_SAMPLE_PAIRS = 200_000
_TAIL = 0.001  # 200 sampled pairs below it: a stable estimate of the near tail


@dataclass(frozen=True)
class NullBound:
    """The largest radius whose expected count of distinct pairs stays within budget."""

    radius: int
    expected_false_pairs: float
    mean: float
    sd: float
    pairs: int

    def as_dict(self) -> dict[str, float | int]:
        return {
            "radius": self.radius,
            "expected_false_pairs": round(self.expected_false_pairs, 3),
            "distance_mean": round(self.mean, 3),
            "distance_sd": round(self.sd, 3),
            "pairs": self.pairs,
        }


def _expected(radius: int, pairs: int, mean: float, sd: float) -> float:
    return float(pairs * norm.cdf((radius + 0.5 - mean) / sd))


def null_bound(signatures: np.ndarray, budget: float, seed: int = 0) -> NullBound:
    """The bound for ``signatures`` (one row per image) at ``budget`` expected false pairs."""
    n = len(signatures)
    pairs = n * (n - 1) // 2
    if n < 2:
        return NullBound(signatures.shape[1] * 8, 0.0, 0.0, 0.0, pairs)
    rng = np.random.default_rng(seed)
    first = rng.integers(0, n, _SAMPLE_PAIRS)
    second = (first + rng.integers(1, n, _SAMPLE_PAIRS)) % n  # never the same image
    distances = hamming(signatures[first], signatures[second]).astype(np.float64)
    mean = float(distances.mean())
    tail = float(np.quantile(distances, _TAIL))
    sd = float(max((mean - tail) / -norm.ppf(_TAIL), distances.std(), 1e-9))
    radius = 0
    while (
        radius + 1 <= signatures.shape[1] * 8 and _expected(radius + 1, pairs, mean, sd) <= budget
    ):
        radius += 1
    return NullBound(radius, _expected(radius, pairs, mean, sd), mean, sd, pairs)
