"""Where every stage reads and writes: the ``paths:`` section of params.yaml."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["Paths"]


@dataclass(frozen=True)
class Paths:
    """Every file the stages read or write; dvc.yaml interpolates these, nothing else names
    them."""

    manifest: str
    files_report: str
    data_report: str
    scan_cache: str
    store: str
    extract_report: str
    models: str
    metrics: str
    predictions: str
    summary: str
    compare_report: str
    plots: str
    tradeoff: str
    checkpoints: str
    curves: str
    audit: str = "reports/audit"  # images.csv, groups.json, calibration.json
    audit_summary: str = "metrics/audit.json"
    page: str = "reports/index.html"

    def store_for(self, feature_set: str) -> Path:
        """One feature set's store: ``<store>/<feature set>``."""
        return Path(self.store) / feature_set

    def model_for(self, head: str, feature_set: str) -> Path:
        return Path(self.models) / feature_set / f"{head}.joblib"

    def finetuned_for(self, name: str) -> Path:
        """A ``finetune@<name>`` network: ``<models>/finetune/<name>.pt`` (as in dvc.yaml)."""
        return Path(self.models) / "finetune" / f"{name}.pt"

    def metrics_for(self, head: str, feature_set: str) -> Path:
        return Path(self.metrics) / feature_set / f"{head}.json"

    def predictions_for(self, head: str, feature_set: str) -> Path:
        return Path(self.predictions) / feature_set / f"{head}.csv"
