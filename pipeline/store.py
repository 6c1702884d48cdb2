"""``python -m pipeline.store {info,verify,repair,compact} [STORE]``: look after a store."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from features.store import maintenance
from pipeline.cli import ArgumentParser, run
from pipeline.params import load_params


def _store_path(given: Path | None, params: Path) -> Path:
    return given if given is not None else Path(load_params(params).paths.store)


def main(argv: Sequence[str]) -> int:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("command", choices=("info", "verify", "repair", "compact"))
    parser.add_argument("store", type=Path, nargs="?", help="default: paths.store in params")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--quick", action="store_true", help="verify: skip re-hashing bytes")
    parser.add_argument(
        "--strict", action="store_true", help="verify: fail on orphans and temporary files too"
    )
    parser.add_argument(
        "--target-rows", type=int, default=16384, help="compact: rows per merged shard"
    )
    args = parser.parse_intermixed_args(argv)  # `verify --strict STORE` as well
    store = _store_path(args.store, args.params)
    if args.command == "info":
        print(json.dumps(maintenance.info(store), indent=2))
        return 0
    if args.command == "compact":
        before, after = maintenance.compact(store, args.target_rows)
        print(f"compact: {before} shards -> {after}")
        return 0
    report = (
        maintenance.repair(store)
        if args.command == "repair"
        else maintenance.verify(store, full=not args.quick)
    )
    for finding in report.problems:
        print(f"problem: {finding}")
    for finding in report.notices:
        print(f"notice: {finding}")
    print(f"{args.command}: {store}: {report.summary()}")
    if not report.ok:
        return 1
    return 1 if args.strict and report.notices else 0


if __name__ == "__main__":
    run(main)
