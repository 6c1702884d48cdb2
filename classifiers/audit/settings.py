"""The audit's knobs: ``audit:`` in params.yaml."""

from __future__ import annotations

from dataclasses import dataclass, field

from classifiers.audit.neighbours import CodeIndexSettings

__all__ = ["AuditSettings"]


@dataclass(frozen=True)
class AuditSettings:
    """What the audit looks at and how close counts as a copy.

    ``max_hamming`` null takes the calibration's perceptual radius: the largest distance
    whose precision on generated copies reaches ``rule_precision``. ``target_precision``
    is the goal's yardstick, reported per signal.
    """

    features: str | None = None  # the feature set whose codes are audited; null: the first
    max_hamming: int | None = field(default=None, metadata={"min": 0, "max": 128})
    # perceptual: the perceptual radius alone. fused: the codes' cosine minus a calibrated
    # weight per bit; it calibrates best, but random-weight codes of look-alike photos (a
    # white flower on black) pass it by the hundred in a whole dataset: trained weights only
    signal: str = field(default="perceptual", metadata={"choices": ("perceptual", "fused")})
    regroup: bool = True  # keep each near-duplicate group in one split (project splits only)
    k: int = field(default=10, metadata={"min": 1})
    exact_max_rows: int = field(default=20_000, metadata={"min": 1})
    reduced_dim: int = field(default=256, metadata={"min": 1})
    nprobe: int = field(default=16, metadata={"min": 1})
    label_C: float = field(default=0.01, metadata={"min_exclusive": 0})
    label_folds: int = field(default=5, metadata={"min": 2})
    outlier_cutoff: float = field(default=3.5, metadata={"min_exclusive": 0})
    calibration_photos: int = field(default=150, metadata={"min": 2})
    calibration_copies: int = field(default=2, metadata={"min": 1})
    target_precision: float = field(default=0.99, metadata={"min_exclusive": 0, "max": 1})
    # the rule's precision on the calibration pairs: 1.0, no distinct pair let through
    rule_precision: float = field(default=1.0, metadata={"min_exclusive": 0, "max": 1})
    # and, unless max_hamming is set, a radius at which the dataset's own distances predict
    # at most this many distinct pairs per image (classifiers.audit.null)
    false_pairs_per_image: float = field(default=0.001, metadata={"min_exclusive": 0})
    seed: int = field(default=0, metadata={"min": 0})

    @property
    def index(self) -> CodeIndexSettings:
        return CodeIndexSettings(self.k, self.exact_max_rows, self.reduced_dim, self.nprobe)
