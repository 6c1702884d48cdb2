"""The audit's findings as the page shows them: near-duplicate groups (leaking ones first),
likely label errors and outliers, each list capped with the count of the rest.

Reads the audit stage's ``images.csv`` and ``groups.json``; when they are absent the page
says that no audit has run, and everything else still renders.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from classifiers.html.gather import Images, Shown, finite, largest_first, read_csv

__all__ = ["AUDIT_FILES", "Audit", "AuditImage", "Group", "read_audit"]

AUDIT_FILES = ("images.csv", "groups.json")
MAX_GROUPS = 40  # leaking groups come first, so these are the ones that matter
MAX_MEMBERS = 8  # side by side on one row
MAX_LISTED = 60  # label-error candidates, and outliers
_COLUMNS = ("sha256", "path", "label", "split", "label_issue", "label_quality")
_COLUMNS += ("predicted_label", "outlier_score", "outlier")


@dataclass(frozen=True)
class AuditImage:
    """An image with what the audit says about it."""

    image: Shown
    label: str
    split: str
    predicted_label: str = ""
    label_quality: float | None = None  # lower: more likely mislabelled
    outlier_score: float | None = None  # higher: more isolated
    flagged: bool = False


@dataclass(frozen=True)
class Group:
    """Near-duplicates of one photo; ``leaks`` when they sit in more than one split."""

    id: int
    leaks: bool
    members: list[AuditImage]
    more: int


@dataclass(frozen=True)
class Audit:
    max_hamming: int | None
    images: int
    groups: list[Group]
    total_groups: int
    leaking_groups: int
    label_errors: list[AuditImage]
    flagged_labels: int
    scored_labels: int
    outliers: list[AuditImage]
    flagged_outliers: int
    scored_outliers: int


def _group(raw: dict[str, Any], images: Images) -> Group:
    members = [
        AuditImage(images.show(m["sha256"], m.get("path", "")), m["label"], m["split"])
        for m in raw["members"][:MAX_MEMBERS]
    ]
    return Group(int(raw["id"]), bool(raw["leaks"]), members, len(raw["members"]) - len(members))


def _image(row: dict[str, str], images: Images, flag: str) -> AuditImage:
    return AuditImage(
        images.show(row["sha256"], row["path"]),
        row["label"],
        row["split"],
        row["predicted_label"],
        finite(row["label_quality"]),
        finite(row["outlier_score"]),
        row[flag] == "1",
    )


def read_audit(folder: Path, images: Images) -> Audit | None:
    """The audit's capped lists, or None when its files are not there."""
    if not all((Path(folder) / name).is_file() for name in AUDIT_FILES):
        return None
    _, rows = read_csv(Path(folder) / "images.csv", _COLUMNS)
    grouping = json.loads((Path(folder) / "groups.json").read_text())
    groups = sorted(grouping.get("groups", []), key=lambda g: not g["leaks"])
    scored = [row for row in rows if finite(row["label_quality"]) is not None]
    # Flagged first, then the least likely labels; sorted() keeps ties in file order.
    scored.sort(key=lambda row: (row["label_issue"] != "1", finite(row["label_quality"])))
    isolated = [row for row in rows if finite(row["outlier_score"]) is not None]
    isolated.sort(key=lambda row: largest_first(finite(row["outlier_score"])))
    return Audit(
        max_hamming=grouping.get("max_hamming"),
        images=len(rows),
        groups=[_group(raw, images) for raw in groups[:MAX_GROUPS]],
        total_groups=len(groups),
        leaking_groups=sum(bool(g["leaks"]) for g in groups),
        label_errors=[_image(row, images, "label_issue") for row in scored[:MAX_LISTED]],
        flagged_labels=sum(row["label_issue"] == "1" for row in rows),
        scored_labels=len(scored),
        outliers=[_image(row, images, "outlier") for row in isolated[:MAX_LISTED]],
        flagged_outliers=sum(row["outlier"] == "1" for row in rows),
        scored_outliers=len(isolated),
    )
