"""Compare heads: the summary DVC shows, a markdown table, and the plots."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from features.files import atomic_open, atomic_path, write_text

__all__ = [
    "load_head_metrics",
    "plot_accuracy_vs_fit_time",
    "plot_confusion",
    "summarise",
    "write_markdown",
    "write_tradeoff_csv",
]

_SUMMARY_KEYS = (
    "accuracy",
    "balanced_accuracy",
    "macro_f1",
    "fit_seconds",
    "predict_ms_per_1000",
    "model_bytes",
    "n_train",
    "n_test",
)


def load_head_metrics(directory: Path, heads: list[str]) -> dict[str, dict[str, Any]]:
    metrics = {}
    for head in heads:
        path = Path(directory) / f"{head}.json"
        if not path.is_file():
            raise FileNotFoundError(f"metrics for head {head!r} not found at {path}")
        metrics[head] = json.loads(path.read_text())
    return metrics


def _ranked(metrics: dict[str, dict[str, Any]]) -> list[str]:
    return sorted(metrics, key=lambda head: (-metrics[head]["accuracy"], head))


def summarise(metrics: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Flat per-head numbers, best head first: what ``dvc metrics show`` lists."""
    ranked = _ranked(metrics)
    random = any(m.get("random_weights") for m in metrics.values())
    return {
        "best": ranked[0] if ranked else None,
        "random_weights": random,
        "heads": {head: {key: metrics[head][key] for key in _SUMMARY_KEYS} for head in ranked},
    }


def write_markdown(path: Path, metrics: dict[str, dict[str, Any]]) -> None:
    ranked = _ranked(metrics)
    any_metrics = next(iter(metrics.values()))
    lines = ["# Head comparison", ""]
    if any(m.get("random_weights") for m in metrics.values()):
        lines += [
            "> **Random weights.** These codes come from a randomly initialised backbone "
            f"(`{any_metrics['weights']}`). The numbers check the pipeline; they are **not** "
            "transfer-learning accuracy.",
            "",
        ]
    lines += [
        f"Backbone `{any_metrics['backbone']}`, weights `{any_metrics['weights']}`, "
        f"{any_metrics['n_train']} train and {any_metrics['n_test']} test images.",
        "",
        "| rank | head | accuracy | balanced acc. | macro F1 | fit s | predict ms/1k | model KiB |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for rank, head in enumerate(ranked, 1):
        m = metrics[head]
        lines.append(
            f"| {rank} | {head} | {m['accuracy']:.4f} | {m['balanced_accuracy']:.4f} "
            f"| {m['macro_f1']:.4f} | {m['fit_seconds']:.2f} | {m['predict_ms_per_1000']:.2f} "
            f"| {m['model_bytes'] / 1024:.0f} |"
        )
    lines += ["", f"Best: **{ranked[0]}**.", ""]
    write_text(path, "\n".join(lines))


def _save(figure: Figure, path: Path) -> None:
    """Render to a temporary PNG, then rename: a reader never opens a truncated image."""
    try:
        figure.tight_layout()
        with atomic_path(path) as tmp:
            figure.savefig(tmp, dpi=100)
    finally:
        plt.close(figure)


def plot_confusion(path: Path, head: str, confusion: dict[str, Any], random: bool) -> None:
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
    axes.set_title(f"{head}" + (" (random weights)" if random else ""))
    _save(figure, path)


def plot_accuracy_vs_fit_time(path: Path, metrics: dict[str, dict[str, Any]]) -> None:
    figure, axes = plt.subplots(figsize=(6, 4))
    for head in _ranked(metrics):
        m = metrics[head]
        axes.scatter(m["fit_seconds"], m["accuracy"], s=60)
        axes.annotate(
            head, (m["fit_seconds"], m["accuracy"]), textcoords="offset points", xytext=(6, 4)
        )
    axes.set_xscale("log")
    axes.margins(x=0.25, y=0.15)  # room for the labels of the extreme points
    axes.set_xlabel("fit time (s, log scale)")
    axes.set_ylabel("test accuracy")
    random = any(m.get("random_weights") for m in metrics.values())
    axes.set_title("accuracy vs fit time" + (" (random weights)" if random else ""))
    axes.grid(alpha=0.3)
    _save(figure, path)


def write_tradeoff_csv(path: Path, metrics: dict[str, dict[str, Any]]) -> None:
    """The accuracy/fit-time points as data, for DVC's scatter template."""
    with atomic_open(path, newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["head", "fit_seconds", "accuracy"])
        for head in _ranked(metrics):
            writer.writerow([head, metrics[head]["fit_seconds"], metrics[head]["accuracy"]])
