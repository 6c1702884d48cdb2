"""Stage ``html_report``: ``reports/index.html``, one static page with the leaderboard, the
plots, the misclassified images of the best head (and of heads asked for), and the
audit's near-duplicates, label-error candidates and outliers.

The page embeds small thumbnails, so it opens offline as a single file; it recomputes
nothing and reads only what the other stages wrote.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from classifiers.html import Sources, build_page, write_page
from pipeline.cli import ArgumentParser, run
from pipeline.params import load_params


def main(argv: Sequence[str]) -> None:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--summary", type=Path, required=True, help="compare's summary.json")
    parser.add_argument(
        "--metrics", type=Path, required=True, help="root of <feature set>/<head>.json"
    )
    parser.add_argument(
        "--predictions", type=Path, required=True, help="root of <feature set>/<head>.csv"
    )
    parser.add_argument("--plots", type=Path, required=True, help="compare's PNG plots")
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument(
        "--data", type=Path, required=True, help="data root the manifest's paths start from"
    )
    parser.add_argument(
        "--audit", type=Path, required=True, help="audit folder (may not exist yet)"
    )
    parser.add_argument("--out", type=Path, required=True, help="the HTML page to write")
    parser.add_argument(
        "--head",
        action="append",
        default=[],
        metavar="HEAD-FEATURES",
        help="also show this entry's mistakes, e.g. svm-vgg16_fc6 (repeatable; added to "
        "report.heads in params.yaml)",
    )
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    heads = [*load_params(args.params).report.heads, *args.head]
    sources = Sources(
        args.summary,
        args.metrics,
        args.predictions,
        args.plots,
        args.manifest,
        args.data,
        args.audit,
    )
    page = build_page(sources, list(dict.fromkeys(heads)))
    size = write_page(args.out, page)
    shown = sum(len(head.mistakes) for head in page.heads)
    audit = "no audit run" if page.audit is None else f"{page.audit.total_groups} groups"
    print(f"{args.out}: {size / 1e6:.2f} MB, {shown} mistakes shown, {audit}")


if __name__ == "__main__":
    run(main)
