"""Stage ``compare``: every head side by side: summary metrics, a table and plots.

The best head is tested against each other head on the same test images, paired by hash
from the train stages' prediction CSVs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from classifiers.compare import against_best, load_head_metrics, load_predictions, summarise
from classifiers.report import (
    plot_accuracy_vs_fit_time,
    plot_confusion,
    write_markdown,
    write_tradeoff_csv,
)
from features.files import write_json
from pipeline.cli import ArgumentParser, run
from pipeline.params import load_params


def main(argv: Sequence[str]) -> None:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--metrics", type=Path, required=True, help="folder of per-head JSON")
    parser.add_argument(
        "--predictions", type=Path, help="folder of per-head CSVs (default: paths.predictions)"
    )
    parser.add_argument("--summary", type=Path, required=True)
    parser.add_argument("--report", type=Path, required=True, help="markdown table")
    parser.add_argument("--plots", type=Path, required=True, help="folder for PNG plots")
    parser.add_argument("--tradeoff", type=Path, required=True, help="accuracy/fit-time CSV")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    params = load_params(args.params)
    heads = sorted(params.heads)
    metrics = load_head_metrics(args.metrics, heads)
    predictions = load_predictions(args.predictions or Path(params.paths.predictions), heads)
    versus = against_best(metrics, predictions)
    write_json(args.summary, summarise(metrics, versus))
    write_markdown(args.report, metrics, versus)
    write_tradeoff_csv(args.tradeoff, metrics)
    for head, head_metrics in metrics.items():
        plot_confusion(
            args.plots / f"confusion_{head}.png",
            head,
            head_metrics["confusion_matrix"],
            head_metrics["random_weights"],
        )
    plot_accuracy_vs_fit_time(args.plots / "accuracy_vs_fit_time.png", metrics)
    print(args.report.read_text())


if __name__ == "__main__":
    run(main)
