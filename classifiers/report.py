"""Report the comparison of (head, feature set) entries: the markdown report with the
head × feature set grid on top, the plots and the trade-off CSV."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from classifiers.compare import ALPHA, Entry, Metrics, Versus, chosen_C, grid_axes, rank
from features.files import atomic_open, atomic_path, write_text

__all__ = [
    "plot_accuracy_heatmap",
    "plot_accuracy_vs_fit_time",
    "plot_confusion",
    "plot_val_accuracy_vs_C",
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


def _random(metrics: Metrics) -> bool:
    return any(m.get("random_weights") for m in metrics.values())


def _split(m: dict[str, Any]) -> str:
    """The split the scores come from: test, or val for a dataset without a test split."""
    return m.get("evaluated_on", "test")


def _grid_table(metrics: Metrics, best: Entry) -> list[str]:
    """Heads as rows, feature sets as columns, accuracy [interval] per cell, best in bold."""
    heads, sets = grid_axes(metrics)
    lines = [f"| head | {' | '.join(sets)} |", "|---|" + "---:|" * len(sets)]
    for head in heads:
        cells = []
        for features in sets:
            entry = Entry(head, features)
            cell = _with_interval(metrics[entry], "accuracy") if entry in metrics else "n/a"
            cells.append(f"**{cell}**" if entry == best else cell)
        lines.append(f"| {head} | {' | '.join(cells)} |")
    return lines


def _columns_note(metrics: Metrics) -> str:
    """What each column is: the backbone and layer its metrics record."""
    described = []
    for features in grid_axes(metrics)[1]:
        m = next(m for entry, m in metrics.items() if entry.features == features)
        layer = f" = {m['backbone']} {m['layer']}" if "backbone" in m and "layer" in m else ""
        described.append(f"`{features}`{layer}")
    return f"Rows: heads; columns: feature sets ({', '.join(described)}). Bold: the best pair."


def _ranking_table(metrics: Metrics) -> list[str]:
    lines = [
        "| rank | head | features | accuracy [95% CI] | balanced acc. | macro F1 [95% CI] "
        "| ECE | C | fit s | predict ms/1k | predicts from | model KiB |",
        "|---:|---|---|---:|---:|---:|---:|---|---:|---:|---|---:|",
    ]
    for position, entry in enumerate(rank(metrics), 1):
        m = metrics[entry]
        lines.append(
            f"| {position} | {entry.head} | {entry.features} | {_with_interval(m, 'accuracy')} "
            f"| {_number(m['balanced_accuracy'])} | {_with_interval(m, 'macro_f1')} "
            f"| {_number(m.get('ece'))} | {_C_cell(m)} | {_number(m['fit_seconds'], '.2f')} "
            f"| {_number(m['predict_ms_per_1000'], '.2f')} "
            f"| {entry.predicts_from} | {_number(m['model_bytes'] / 1024, '.0f')} |"
        )
    if any(entry.stage_kind == "finetune" for entry in metrics):
        lines += ["", _COST_NOTE]
    return lines


def _C_cell(m: dict[str, Any]) -> str:
    """``0.01 (sweep)``, ``1 (by hand)``, or empty for a head without a C."""
    chosen = chosen_C(m)
    return f"{chosen['C']:.3g} ({chosen['C_set_by']})" if chosen else ""


_COST_NOTE = (
    "Cost: fit s is the training time. predict ms/1k is the head alone on stored codes or "
    "maps for frozen heads and blocks (a new image runs the backbone once, and its codes "
    "are kept), and the whole network on decoded images for fine-tuned models, which must "
    "run it for every new image."
)


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
        f"entries got right. Each comparison is tested at {ALPHA} on its own: among many "
        "entries, about one in twenty differences that are pure noise still reads as "
        "significant."
    )


def _significance(best: Entry, versus: list[Versus]) -> list[str]:
    lines = ["## Is the best pair really better?", ""]
    if not versus:
        return [*lines, "Only one entry: nothing to compare.", ""]
    lines += [f"- {v.sentence()}" for v in versus]
    tied = [v.other.name for v in versus if v.p_value is not None and not v.significant]
    verdict = f"Best by accuracy: **{best.name}**"
    if tied:
        verdict += f", but not distinguishable from {', '.join(tied)} on these images"
    return [*lines, "", verdict + ".", ""]


def _per_class(entry: Entry, m: dict[str, Any]) -> list[str]:
    lines = [f"### {entry.name}", ""]
    per_class = m.get("per_class")
    if not per_class:
        return [*lines, "Not recorded in these metrics (rerun the train stage).", ""]
    lines += ["| class | precision | recall | F1 | support |", "|---|---:|---:|---:|---:|"]
    for label, scores in per_class.items():
        cells = [_number(scores.get(name)) for name in ("precision", "recall", "f1")]
        lines.append(f"| {label} | {' | '.join(cells)} | {scores.get('support', 'n/a')} |")
    return [*lines, ""]


def write_markdown(path: Path, metrics: Metrics, versus: list[Versus]) -> None:
    ranked = rank(metrics)
    best = metrics[ranked[0]]
    lines = ["# Head × feature set comparison", ""]
    if _random(metrics):
        lines += [
            "> **Random weights.** These codes come from a randomly initialised backbone "
            f"(`{best['weights']}`). The numbers check the pipeline; they are **not** "
            "transfer-learning accuracy.",
            "",
        ]
    lines += [
        f"Best: **{ranked[0].head}** on **{ranked[0].features}** (`{ranked[0].stage}`), "
        f"{_split(best)} accuracy {_with_interval(best, 'accuracy')}.",
        "",
        f"## {_split(best).capitalize()} accuracy [95% CI]",
        "",
        *_grid_table(metrics, ranked[0]),
        "",
        _columns_note(metrics),
        f"Weights `{best['weights']}`, {best['n_train']} train and {best['n_test']} "
        f"{_split(best)} images.",
        "",
        "## Ranking",
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
    for entry in ranked:
        lines += _per_class(entry, metrics[entry])
    write_text(path, "\n".join(lines))


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
            _number(value),
            ha="center",
            va="center",
            color="white" if value > middle else "black",
            fontweight="bold" if Entry(heads[row], sets[column]) == best else "normal",
        )
    figure.colorbar(image, ax=axes, label=f"{_split(metrics[best])} accuracy")
    _title(axes, f"{_split(metrics[best])} accuracy", _random(metrics))
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
    _title(axes, "accuracy vs fit time", _random(metrics))
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
    _title(axes, "validation accuracy vs C", _random(metrics))
    axes.grid(alpha=0.3)
    _save(figure, path)
    return True


def write_tradeoff_csv(path: Path, metrics: Metrics) -> None:
    """The accuracy/fit-time points as data, for DVC's scatter template."""
    with atomic_open(path, newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["head", "features", "fit_seconds", "accuracy"])
        for entry in rank(metrics):
            m = metrics[entry]
            writer.writerow([entry.head, entry.features, m["fit_seconds"], m["accuracy"]])
