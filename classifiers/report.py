"""Report the head comparison: the markdown table, the plots and the trade-off CSV."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from classifiers.compare import ALPHA, Versus, rank_heads
from features.files import atomic_open, atomic_path, write_text

__all__ = [
    "plot_accuracy_vs_fit_time",
    "plot_confusion",
    "write_markdown",
    "write_tradeoff_csv",
]


def _number(value: Any, spec: str = ".3f") -> str:
    """A cell: ``n/a`` for a missing or non-finite value, never ``nan``."""
    if value is None or not math.isfinite(value):
        return "n/a"
    return format(value, spec)


def _with_interval(m: dict[str, Any], key: str) -> str:
    interval = m.get(f"{key}_ci") or {}
    bounds = f"{_number(interval.get('low'))}, {_number(interval.get('high'))}"
    return f"{_number(m.get(key))} [{bounds if interval else 'n/a'}]"


def _ranking_table(metrics: dict[str, dict[str, Any]]) -> list[str]:
    lines = [
        "| rank | head | accuracy [95% CI] | balanced acc. | macro F1 [95% CI] | fit s "
        "| predict ms/1k | model KiB |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for rank, head in enumerate(rank_heads(metrics), 1):
        m = metrics[head]
        lines.append(
            f"| {rank} | {head} | {_with_interval(m, 'accuracy')} "
            f"| {_number(m['balanced_accuracy'])} | {_with_interval(m, 'macro_f1')} "
            f"| {_number(m['fit_seconds'], '.2f')} | {_number(m['predict_ms_per_1000'], '.2f')} "
            f"| {_number(m['model_bytes'] / 1024, '.0f')} |"
        )
    return lines


def _split(m: dict[str, Any]) -> str:
    """The split the scores come from: test, or val for a dataset without a test split."""
    return m.get("evaluated_on", "test")


def _method_note(m: dict[str, Any]) -> str:
    bootstrap = m.get("bootstrap")
    intervals = (
        f"Intervals: {bootstrap['confidence']:.0%} percentile bootstrap over the "
        f"{_split(m)} images "
        f"({bootstrap['resamples']} resamples, seed {bootstrap['seed']}). "
        if bootstrap
        else "Intervals: not recorded in these metrics (rerun the train stages). "
    )
    return (
        intervals + "p: two-sided exact McNemar test on the images exactly one of the two "
        f"heads got right. Each comparison is tested at {ALPHA} on its own: among many heads, "
        "about one in twenty differences that are pure noise still reads as significant."
    )


def _significance(best: str, versus: list[Versus]) -> list[str]:
    lines = ["## Is the best head really better?", ""]
    if not versus:
        return [*lines, "Only one head: nothing to compare.", ""]
    lines += [f"- {v.sentence()}" for v in versus]
    tied = [v.other for v in versus if v.p_value is not None and not v.significant]
    verdict = f"Best by accuracy: **{best}**"
    if tied:
        verdict += f", but not distinguishable from {', '.join(tied)} on these images"
    return [*lines, "", verdict + ".", ""]


def _per_class(head: str, m: dict[str, Any]) -> list[str]:
    lines = [f"### {head}", ""]
    per_class = m.get("per_class")
    if not per_class:
        return [*lines, "Not recorded in these metrics (rerun the train stage).", ""]
    lines += ["| class | precision | recall | F1 | support |", "|---|---:|---:|---:|---:|"]
    for label, scores in per_class.items():
        cells = [_number(scores.get(name)) for name in ("precision", "recall", "f1")]
        lines.append(f"| {label} | {' | '.join(cells)} | {scores.get('support', 'n/a')} |")
    return [*lines, ""]


def write_markdown(path: Path, metrics: dict[str, dict[str, Any]], versus: list[Versus]) -> None:
    ranked = rank_heads(metrics)
    best = metrics[ranked[0]]
    lines = ["# Head comparison", ""]
    if any(m.get("random_weights") for m in metrics.values()):
        lines += [
            "> **Random weights.** These codes come from a randomly initialised backbone "
            f"(`{best['weights']}`). The numbers check the pipeline; they are **not** "
            "transfer-learning accuracy.",
            "",
        ]
    lines += [
        f"Backbone `{best['backbone']}`, weights `{best['weights']}`, "
        f"{best['n_train']} train and {best['n_test']} {_split(best)} images.",
        "",
        *_ranking_table(metrics),
        "",
        *_significance(ranked[0], versus),
        _method_note(best),
        "",
        "## Per-class scores",
        "",
        "n/a: undefined (a class never predicted has no precision; one absent from the "
        f"{_split(best)} images has no recall).",
        "",
    ]
    for head in ranked:
        lines += _per_class(head, metrics[head])
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
    for head in rank_heads(metrics):
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
        for head in rank_heads(metrics):
            writer.writerow([head, metrics[head]["fit_seconds"], metrics[head]["accuracy"]])
