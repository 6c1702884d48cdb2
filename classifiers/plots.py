"""The comparison's plots: confusion matrices, the head x feature set heatmap, accuracy
against fit time and validation accuracy against C."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from classifiers.compare import Entry, Metrics, grid_axes, rank
from classifiers.formatting import any_random, number, split_name
from features.files import atomic_path

__all__ = [
    "plot_accuracy_heatmap",
    "plot_accuracy_vs_fit_time",
    "plot_confusion",
    "plot_val_accuracy_vs_C",
]


def _title(axes: Axes, text: str, random: bool) -> None:
    """Random-weights plots say so in the title: they check the pipeline, nothing more."""
    axes.set_title(text + (" (RANDOM WEIGHTS)" if random else ""))


def _save(figure: Figure, path: Path) -> None:
    """Render to a temporary PNG, then rename: a reader never opens a truncated image."""
    try:
        figure.tight_layout()
        with atomic_path(path) as tmp:
            figure.savefig(tmp, dpi=100)
    finally:
        plt.close(figure)


def plot_confusion(path: Path, title: str, confusion: dict[str, Any], random: bool) -> None:
    labels, matrix = confusion["labels"], np.array(confusion["matrix"])
    figure, axes = plt.subplots(figsize=(1.1 * len(labels) + 2.5, 1.1 * len(labels) + 2))
    axes.imshow(matrix, cmap="Blues")
    axes.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    axes.set_yticks(range(len(labels)), labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("actual")
    for (row, column), value in np.ndenumerate(matrix):
        colour = "white" if value > matrix.max() / 2 else "black"
        axes.text(column, row, str(value), ha="center", va="center", color=colour)
    _title(axes, title, random)
    _save(figure, path)


def plot_accuracy_heatmap(path: Path, metrics: Metrics) -> None:
    """The grid of the report as an image: heads down, feature sets across, best in bold."""
    heads, sets = grid_axes(metrics)
    best = rank(metrics)[0]
    values = np.array(
        [[metrics.get(Entry(h, f), {}).get("accuracy", np.nan) for f in sets] for h in heads],
        dtype=float,
    )
    figure, axes = plt.subplots(figsize=(1.5 * len(sets) + 3, 0.6 * len(heads) + 2))
    image = axes.imshow(np.ma.masked_invalid(values), cmap="Blues", aspect="auto")
    axes.set_xticks(range(len(sets)), sets, rotation=30, ha="right")
    axes.set_yticks(range(len(heads)), heads)
    axes.set_xlabel("feature set")
    axes.set_ylabel("head")
    middle = (np.nanmin(values) + np.nanmax(values)) / 2
    for (row, column), value in np.ndenumerate(values):
        axes.text(
            column,
            row,
            number(value),
            ha="center",
            va="center",
            color="white" if value > middle else "black",
            fontweight="bold" if Entry(heads[row], sets[column]) == best else "normal",
        )
    figure.colorbar(image, ax=axes, label=f"{split_name(metrics[best])} accuracy")
    _title(axes, f"{split_name(metrics[best])} accuracy", any_random(metrics))
    _save(figure, path)


def plot_accuracy_vs_fit_time(path: Path, metrics: Metrics) -> None:
    """Every entry, one colour per feature set."""
    sets = grid_axes(metrics)[1]
    figure, axes = plt.subplots(figsize=(6, 4))
    for entry in rank(metrics):
        m = metrics[entry]
        point = (m["fit_seconds"], m["accuracy"])
        axes.scatter(*point, s=60, color=f"C{sets.index(entry.features) % 10}")
        axes.annotate(entry.name, point, textcoords="offset points", xytext=(6, 4))
    axes.set_xscale("log")
    axes.margins(x=0.25, y=0.15)  # room for the labels of the extreme points
    axes.set_xlabel("fit time (s, log scale)")
    axes.set_ylabel("test accuracy")
    _title(axes, "accuracy vs fit time", any_random(metrics))
    axes.grid(alpha=0.3)
    _save(figure, path)


def plot_val_accuracy_vs_C(path: Path, metrics: Metrics) -> bool:
    """Validation accuracy along each swept head's C path, its chosen C marked; False
    (nothing written) when no head swept C."""
    swept = {e: m["probe"] for e, m in metrics.items() if (m.get("probe") or {}).get("C")}
    if not swept:
        return False
    figure, axes = plt.subplots(figsize=(6, 4))
    for index, (entry, probe) in enumerate(sorted(swept.items(), key=lambda p: p[0].name)):
        colour = f"C{index % 10}"
        axes.plot(probe["C"], probe["val_accuracy"], marker=".", color=colour, label=entry.name)
        best = probe["C"].index(probe["chosen"])
        axes.scatter(probe["chosen"], probe["val_accuracy"][best], s=80, color=colour, zorder=3)
    axes.set_xscale("log")
    axes.set_xlabel("C (log scale; large dot: chosen)")
    axes.set_ylabel("validation accuracy")
    axes.legend(fontsize="small")
    _title(axes, "validation accuracy vs C", any_random(metrics))
    axes.grid(alpha=0.3)
    _save(figure, path)
    return True
