"""Stage ``compare``: every head on every feature set side by side: summary metrics, the
head × feature set grid, a table and plots.

The best (head, feature set) entry is tested against each other entry on the same test
images, paired by hash from the train stages' prediction CSVs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from classifiers.compare import Entry, against_best, load_metrics, load_predictions, summarise
from classifiers.plots import (
    plot_accuracy_heatmap,
    plot_accuracy_vs_fit_time,
    plot_confusion,
    plot_val_accuracy_vs_C,
)
from classifiers.report import write_markdown, write_tradeoff_csv
from features.files import write_json
from pipeline.cli import ArgumentParser, run
from pipeline.params import Params, Paths, load_params

FINETUNED = "finetune"  # the "feature set" of a finetune@<name> model: its own network


def entries(params: Params) -> list[Entry]:
    """One entry per training stage, in params.yaml's order of sets, heads by name: frozen
    heads on codes, classifier-block heads on maps, then fine-tuned networks."""
    frozen = [Entry(head, s) for s in params.features for head in sorted(params.heads)]
    blocks = [
        Entry(head, s, "train_block") for s in params.maps for head in sorted(params.block_heads)
    ]
    finetuned = [Entry(name, FINETUNED, "finetune") for name in sorted(params.finetune)]
    return frozen + blocks + finetuned


def main(argv: Sequence[str]) -> None:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument(
        "--metrics", type=Path, required=True, help="root of <feature set>/<head>.json"
    )
    parser.add_argument(
        "--predictions",
        type=Path,
        help="root of <feature set>/<head>.csv (default: paths.predictions)",
    )
    parser.add_argument("--summary", type=Path, required=True)
    parser.add_argument("--report", type=Path, required=True, help="markdown report")
    parser.add_argument("--plots", type=Path, required=True, help="folder for PNG plots")
    parser.add_argument("--tradeoff", type=Path, required=True, help="accuracy/fit-time CSV")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    params = load_params(args.params)
    paths: Paths = replace(
        params.paths,
        metrics=str(args.metrics),
        predictions=str(args.predictions or params.paths.predictions),
    )
    stages = entries(params)
    metrics = load_metrics({e: paths.metrics_for(e.head, e.features) for e in stages})
    predictions = load_predictions({e: paths.predictions_for(e.head, e.features) for e in stages})
    versus = against_best(metrics, predictions)
    write_json(args.summary, summarise(metrics, versus))
    write_markdown(args.report, metrics, versus)
    write_tradeoff_csv(args.tradeoff, metrics)
    for entry, entry_metrics in metrics.items():
        plot_confusion(
            args.plots / f"confusion_{entry.name}.png",
            entry.name,
            entry_metrics["confusion_matrix"],
            entry_metrics["random_weights"],
        )
    plot_accuracy_heatmap(args.plots / "accuracy_heatmap.png", metrics)
    plot_accuracy_vs_fit_time(args.plots / "accuracy_vs_fit_time.png", metrics)
    plot_val_accuracy_vs_C(args.plots / "val_accuracy_vs_C.png", metrics)
    print(args.report.read_text())


if __name__ == "__main__":
    run(main)
