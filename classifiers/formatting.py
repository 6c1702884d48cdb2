"""How the comparison's numbers read, the same in the markdown report and the plots."""

from __future__ import annotations

import math
from typing import Any

from classifiers.compare import Metrics

__all__ = ["any_random", "number", "split_name"]


def number(value: Any, spec: str = ".3f") -> str:
    """A cell: ``n/a`` for a missing or non-finite value, never ``nan``."""
    if value is None or not math.isfinite(value):
        return "n/a"
    return format(value, spec)


def any_random(metrics: Metrics) -> bool:
    return any(m.get("random_weights") for m in metrics.values())


def split_name(m: dict[str, Any]) -> str:
    """The split the scores come from: test, or val for a dataset without a test split."""
    return m.get("evaluated_on", "test")
