"""``python -m pipeline.store {info,verify,repair,compact} [STORE]``: look after stores.

With no STORE, every feature set's store in params.yaml (or the one ``--features`` names).
"""

from __future__ import annotations

import json
from argparse import Namespace
from collections.abc import Sequence
from pathlib import Path

from features.store import maintenance
from pipeline.cli import ArgumentParser, run
from pipeline.params import load_params


def _stores(given: Path | None, features: str | None, params_path: Path) -> list[Path]:
    if given is not None:
        return [given]
    params = load_params(params_path)
    names = [params.feature_set(features)] if features else list(params.stored_sets)
    return [params.paths.store_for(name) for name in names]


def main(argv: Sequence[str]) -> int:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("command", choices=("info", "verify", "repair", "compact"))
    parser.add_argument("store", type=Path, nargs="?", help="default: every feature set's store")
    parser.add_argument("--features", help="with no STORE: only this feature set's store")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--quick", action="store_true", help="verify: skip re-hashing bytes")
    parser.add_argument(
        "--strict", action="store_true", help="verify: fail on orphans and temporary files too"
    )
    parser.add_argument(
        "--target-rows", type=int, default=16384, help="compact: rows per merged shard"
    )
    args = parser.parse_intermixed_args(argv)  # `verify --strict STORE` as well
    codes = [_look_after(store, args) for store in _stores(args.store, args.features, args.params)]
    return max(codes)


def _look_after(store: Path, args: Namespace) -> int:
    """Run the command on one store; its exit status."""
    if args.command == "info":
        print(json.dumps(maintenance.info(store), indent=2))
        return 0
    if args.command == "compact":
        before, after = maintenance.compact(store, args.target_rows)
        print(f"compact: {before} shards -> {after} ({store})")
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
