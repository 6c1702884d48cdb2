"""Report the comparison of (head, feature set) entries: the markdown report with the
head × feature set grid on top, and the trade-off CSV (the plots: :mod:`classifiers.plots`)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from classifiers.compare import ALPHA, Entry, Metrics, Versus, chosen_C, grid_axes, rank
from classifiers.formatting import any_random, number, split_name
from features.files import atomic_open, write_text

__all__ = ["write_markdown", "write_tradeoff_csv"]


def _with_interval(m: dict[str, Any], key: str) -> str:
    interval = m.get(f"{key}_ci") or {}
    bounds = f"{number(interval.get('low'))}, {number(interval.get('high'))}"
    return f"{number(m.get(key))} [{bounds if interval else 'n/a'}]"


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
        "| without leaked | ECE | C | fit s | predict ms/1k | predicts from | model KiB |",
        "|---:|---|---|---:|---:|---:|---:|---:|---|---:|---:|---|---:|",
    ]
    for position, entry in enumerate(rank(metrics), 1):
        m = metrics[entry]
        lines.append(
            f"| {position} | {entry.head} | {entry.features} | {_with_interval(m, 'accuracy')} "
            f"| {number(m['balanced_accuracy'])} | {_with_interval(m, 'macro_f1')} "
            f"| {_leak_cell(m)} | {number(m.get('ece'))} | {_C_cell(m)} "
            f"| {number(m['fit_seconds'], '.2f')} | {number(m['predict_ms_per_1000'], '.2f')} "
            f"| {entry.predicts_from} | {number(m['model_bytes'] / 1024, '.0f')} |"
        )
    if any(entry.stage_kind == "finetune" for entry in metrics):
        lines += ["", _COST_NOTE]
    return lines


def _leak_cell(m: dict[str, Any]) -> str:
    """Accuracy without the leaked test images and how many were left out; empty without
    an audit."""
    clean = m.get("without_leaked")
    return f"{number(clean['accuracy'])} (-{clean['excluded']})" if clean else ""


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
        f"{split_name(m)} images "
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
        cells = [number(scores.get(name)) for name in ("precision", "recall", "f1")]
        lines.append(f"| {label} | {' | '.join(cells)} | {scores.get('support', 'n/a')} |")
    return [*lines, ""]


def write_markdown(path: Path, metrics: Metrics, versus: list[Versus]) -> None:
    ranked = rank(metrics)
    best = metrics[ranked[0]]
    lines = ["# Head × feature set comparison", ""]
    if any_random(metrics):
        lines += [
            "> **Random weights.** These codes come from a randomly initialised backbone "
            f"(`{best['weights']}`). The numbers check the pipeline; they are **not** "
            "transfer-learning accuracy.",
            "",
        ]
    lines += [
        f"Best: **{ranked[0].head}** on **{ranked[0].features}** (`{ranked[0].stage}`), "
        f"{split_name(best)} accuracy {_with_interval(best, 'accuracy')}.",
        "",
        f"## {split_name(best).capitalize()} accuracy [95% CI]",
        "",
        *_grid_table(metrics, ranked[0]),
        "",
        _columns_note(metrics),
        f"Weights `{best['weights']}`, {best['n_train']} train and {best['n_test']} "
        f"{split_name(best)} images.",
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
        f"{split_name(best)} images has no recall).",
        "",
    ]
    for entry in ranked:
        lines += _per_class(entry, metrics[entry])
    write_text(path, "\n".join(lines))


def write_tradeoff_csv(path: Path, metrics: Metrics) -> None:
    """The accuracy/fit-time points as data, for DVC's scatter template."""
    with atomic_open(path, newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["head", "features", "fit_seconds", "accuracy"])
        for entry in rank(metrics):
            m = metrics[entry]
            writer.writerow([entry.head, entry.features, m["fit_seconds"], m["accuracy"]])
