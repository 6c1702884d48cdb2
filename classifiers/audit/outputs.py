"""The audit's files: per-image scores (CSV), the groups (JSON, for the report and for
``train``), and the summary that ``dvc metrics show`` reads."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from classifiers.audit.run import AuditResult
from features.errors import UserError
from features.files import atomic_open

__all__ = ["COLUMNS", "groups_document", "read_groups", "summary", "write_images_csv"]

COLUMNS = (
    "sha256",
    "path",
    "label",
    "split",
    "group",
    "leaked",
    "label_issue",
    "label_quality",
    "predicted_label",
    "outlier_score",
    "outlier",
)


def write_images_csv(path: Path, result: AuditResult) -> None:
    """One row per audited image; label scores are empty outside the train split."""
    group_of = {row: number for number, g in enumerate(result.groups) for row in g.members}
    leaks = {row for g in result.groups if g.leaks for row in g.members}
    labels = result.labels
    position = {int(row): i for i, row in enumerate(result.train_rows)} if labels else {}
    with atomic_open(path, newline="", encoding="utf-8", errors="surrogateescape") as stream:
        writer = csv.writer(stream)
        writer.writerow(COLUMNS)
        for number, row in enumerate(result.rows):
            scored = position.get(number)
            writer.writerow(
                [
                    row.sha256,
                    row.path,
                    row.label,
                    row.split,
                    group_of.get(number, ""),
                    int(number in leaks),
                    "" if scored is None else int(labels.flagged[scored]),
                    "" if scored is None else f"{labels.quality[scored]:.6f}",
                    "" if scored is None else labels.predicted[scored],
                    f"{result.outlier_score[number]:.6f}",
                    int(result.outlier[number]),
                ]
            )


def groups_document(result: AuditResult, max_hamming: int) -> dict[str, Any]:
    """The near-duplicate groups, leaking ones first, each member with its split."""
    return {
        "max_hamming": result.max_hamming,
        "dataset_bound": result.null.as_dict() if result.null else None,
        "groups": [
            {
                "id": number,
                "leaks": group.leaks,
                "members": [
                    {
                        key: getattr(result.rows[row], key)
                        for key in ("sha256", "path", "label", "split")
                    }
                    for row in group.members
                ],
            }
            for number, group in enumerate(result.groups)
        ],
    }


def summary(
    result: AuditResult, features: str, calibration: dict[str, Any] | None
) -> dict[str, Any]:
    """Counts for ``dvc metrics show``, the threshold used and the time each step took."""
    return {
        "features": features,
        "images": len(result.rows),
        "not_in_store": result.not_in_store,
        "unreadable": len(result.unreadable),
        "max_hamming": result.max_hamming,
        "dataset_bound": result.null.as_dict() if result.null else None,
        "groups": len(result.groups),
        "images_in_groups": sum(len(g.members) for g in result.groups),
        "leaking_groups": sum(g.leaks for g in result.groups),
        "leaking_pairs": result.leaking_pairs,
        "label_issues": int(np.sum(result.labels.flagged)) if result.labels else 0,
        "label_scored": len(result.train_rows) if result.labels else 0,
        "label_skipped": result.label_skip,
        "outliers": int(np.sum(result.outlier)),
        "seconds": {key: round(value, 3) for key, value in result.seconds.items()},
        "calibration": _calibration_figures(calibration, result.max_hamming),
    }


def _calibration_figures(
    calibration: dict[str, Any] | None, max_hamming: int
) -> dict[str, Any] | None:
    """The headline of calibration.json: the rule the audit applied, its figures on the
    calibration copies (at the radius used, for the perceptual rule), and the goal."""
    if calibration is None:
        return None
    rule = calibration["rule"]
    figures = {"precision": rule["precision"], "recall": rule["recall"]}
    if rule["signal"] == "perceptual":
        curve = calibration["perceptual_by_radius"]
        figures = {key: curve[key][max_hamming] for key in ("precision", "recall")}
    return {
        "signal": rule["signal"],
        **figures,
        "goal_best_signal": calibration["goal"]["best_signal"],
        "goal_met": calibration["goal"]["met"],
    }


def read_groups(path: Path) -> list[list[str]]:
    """Each group's member hashes, from :func:`groups_document`'s file."""
    try:
        document = json.loads(Path(path).read_text())
        return [[member["sha256"] for member in g["members"]] for g in document["groups"]]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UserError(
            f"{path}: not an audit groups file ({error}); rerun the audit stage"
        ) from error
