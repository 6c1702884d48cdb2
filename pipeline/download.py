"""Stage ``download@<name>``: fetch a pinned dataset archive into ``data/<name>``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from features.data.download import download_dataset
from pipeline.cli import ArgumentParser, run


def main(argv: Sequence[str]) -> None:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--sha256", required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    download_dataset(args.url, args.sha256, args.out)
    print(f"download: {args.url} -> {args.out} (SHA-256 verified)")


if __name__ == "__main__":
    run(main)
