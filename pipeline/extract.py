"""Stage ``extract``: codes for every manifest image the store does not hold yet."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from features.store.lock import LOCK_NAME, StoreLock
from pipeline.cli import ArgumentParser, run


def main(argv: Sequence[str]) -> None:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="dataset root (data.root)")
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--report", type=Path, required=True, help="run report (JSON)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    # A store another writer holds is refused in a fraction of a second, before torch, the
    # params check and the network are loaded; hence the imports below, not at the top.
    StoreLock(args.store / LOCK_NAME).check_free()
    from features.compute.distributed import extract_with_dask
    from features.compute.extract import extract_codes
    from features.compute.loader import ImageRef
    from features.data.manifest import read_manifest
    from features.files import write_json
    from pipeline.params import load_params

    params = load_params(args.params)
    refs = [ImageRef(row.sha256, args.data / row.path) for row in read_manifest(args.manifest)]
    run_extraction = extract_with_dask if params.extract.scheduler == "dask" else extract_codes
    report = run_extraction(
        refs, args.store, params.extract, params.data.limits, progress=not args.no_progress
    )
    summary = asdict(report)
    summary["fingerprint"] = asdict(report.fingerprint)
    summary["images_per_second"] = round(report.images_per_second, 2)
    write_json(args.report, summary)
    print(report.summary())


if __name__ == "__main__":
    run(main)
