"""Child process for the crash tests: run a store operation and stop dead at a chosen call.

A :class:`KillPoint` wraps one named function (``features.store.shards.publish``,
``features.store.committer.Committer.submit``, ...) so that its N-th matching call sends this
process SIGKILL, before or after the real call. SIGKILL cannot be caught, so nothing in the
store code gets a chance to clean up: the test sees exactly what a ``kill -9`` at that
call leaves. With ``--signal STOP`` the process freezes there
instead, holding the lock with a commit half done, so a test can look at the store from
outside and then let it go on (SIGCONT) or kill it.

Usage (from the repository root)::

    python -m tests.killpoints extract --refs refs.json --store STORE \
        --kill features.store.index.publish:before:2:index
    python -m tests.killpoints extract ... --kill features.store.shards.open:after:2:shard
    python -m tests.killpoints extract --layers fc6,fc7 ... --kill \
        features.store.writer.StoreWriter.commit:after:3:
    python -m tests.killpoints compact --store STORE --kill ...
    python -m tests.killpoints finetune --store CHECKPOINTS --images IMAGES --kill \
        classifiers.finetune.train.save_checkpoint:after:4:
"""

from __future__ import annotations

import argparse
import builtins
import functools
import importlib
import json
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from features.store.shards import SHARD_DIR

__all__ = ["MATCHERS", "KillPoint", "arm", "child_command", "main", "save_refs"]


def _shard_codes(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """``create_dataset(self, "codes", data=...)``: a shard's codes (the index's are virtual)."""
    return args[1] == "codes" and "data" in kwargs


def _shard_file(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """``open(tmp, "wb")`` or ``publish(tmp, final)`` of a shard: ``tmp`` is in ``shards/``."""
    return Path(args[0]).parent.name == SHARD_DIR


def _index_file(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """``open(tmp, "wb")`` or ``publish(tmp, final)`` of a commit record (the commit point)
    or of the ``index.h5`` checkpoint."""
    return Path(args[0]).parent.name != SHARD_DIR


def _store_directory(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """``fsync_path(folder)``: a checkpoint or a commit record was just renamed into place."""
    path = Path(args[0])
    return path.is_dir() and path.name != SHARD_DIR


# Each matcher narrows a shared function to one of its callers, so a call count means
# "the third index commit" rather than "the third write of any file".
MATCHERS: dict[str, Callable[[tuple[Any, ...], dict[str, Any]], bool]] = {
    "shard_codes": _shard_codes,
    "shard": _shard_file,
    "index": _index_file,
    "root": _store_directory,
}


@dataclass(frozen=True)
class KillPoint:
    """Die at the ``call``-th call of ``target`` that ``match`` accepts, ``when`` it runs."""

    target: str  # dotted path: module, then attributes (a class and its method)
    when: str  # "before" or "after" the real call
    call: int = 1
    match: str | None = None  # a key of MATCHERS

    def spec(self) -> str:
        return f"{self.target}:{self.when}:{self.call}:{self.match or ''}"

    @classmethod
    def parse(cls, text: str) -> KillPoint:
        target, when, call, match = text.split(":")
        return cls(target, when, int(call), match or None)


def _resolve(target: str) -> tuple[Any, str]:
    """The object that owns the last attribute of ``target``, and that attribute's name."""
    parts = target.split(".")
    for split in range(len(parts) - 1, 0, -1):
        try:
            owner = importlib.import_module(".".join(parts[:split]))
        except ModuleNotFoundError:
            continue
        for name in parts[split:-1]:
            owner = getattr(owner, name)
        return owner, parts[-1]
    raise ValueError(f"cannot import any module prefix of {target!r}")


def _stop_here(signum: int) -> None:
    """Signal this very thread: a signal sent to the process may be taken by another thread,
    and this one (often the committer) would run on into the call it should die before."""
    signal.pthread_kill(threading.get_ident(), signum)


def arm(point: KillPoint, signum: int = signal.SIGKILL) -> None:
    """Replace ``point.target`` with a wrapper that signals this process at the chosen call."""
    if point.when not in ("before", "after"):
        raise ValueError(f"when must be before or after, not {point.when!r}")
    owner, name = _resolve(point.target)
    # A builtin such as ``open`` is patched as a module global that shadows it.
    original = getattr(owner, name) if hasattr(owner, name) else getattr(builtins, name)
    matches = MATCHERS[point.match] if point.match else (lambda args, kwargs: True)
    seen = 0

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        nonlocal seen
        hit = False
        if matches(args, kwargs):
            seen += 1
            hit = seen == point.call
        if hit and point.when == "before":
            _stop_here(signum)
        result = original(*args, **kwargs)
        if hit and point.when == "after":
            _stop_here(signum)
        return result

    setattr(owner, name, wrapper)


def save_refs(refs: Sequence[Any], path: Path) -> Path:
    """Write ``ImageRef``s where a child's ``--refs`` reads them."""
    path.write_text(json.dumps([[ref.sha256, str(ref.path)] for ref in refs]))
    return path


def child_command(
    task: str,
    store: Path,
    *options: str,
    kill: KillPoint | None = None,
    signum: str = "KILL",
) -> list[str]:
    """The command line that runs ``task`` here in a fresh interpreter (cwd: repo root)."""
    command = [sys.executable, "-m", "tests.killpoints", task, "--store", str(store), *options]
    if kill is not None:
        command += ["--kill", kill.spec(), "--signal", signum]
    return command


def _extract(args: argparse.Namespace) -> None:
    from features.compute.extract import extract_codes
    from features.compute.loader import ImageRef
    from tests.conftest import LIMITS, SMALL_CONFIG

    refs = [ImageRef(sha, Path(path)) for sha, path in json.loads(args.refs.read_text())]
    config = replace(SMALL_CONFIG, batch_size=args.batch_size, commit_rows=args.commit_rows)
    stores = {layer: args.store / layer for layer in args.layers} if args.layers else args.store
    report = extract_codes(refs, stores, config, LIMITS, progress=False)
    print(report.summary())


def _compact(args: argparse.Namespace) -> None:
    from features.store.maintenance import compact

    before, after = compact(args.store, args.target_rows)
    print(f"compact: {before} shards -> {after}")


def _finetune(args: argparse.Namespace) -> None:
    """The tiny fine-tuning run of tests/classifiers/finetune_setup.py, checkpointing
    into STORE."""
    from classifiers.finetune.train import finetune
    from tests.classifiers.finetune_setup import tiny_job, tiny_net

    job = tiny_job(args.images, args.store, args.checkpoint_seconds)
    finetune(tiny_net(), job, progress=False)


def main(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("task", choices=("extract", "compact", "finetune"))
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--refs", type=Path, help="extract: JSON list of [sha256, path]")
    parser.add_argument(
        "--layers", type=lambda text: text.split(","), help="extract: fc6,fc7 into STORE/<layer>"
    )
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--commit-rows", type=int, default=8)
    parser.add_argument("--target-rows", type=int, default=1024)
    parser.add_argument("--images", type=Path, help="finetune: the tiny run's image folder")
    parser.add_argument("--checkpoint-seconds", type=float, default=1e-9)
    parser.add_argument("--kill", type=KillPoint.parse, help="target:when:call:match")
    parser.add_argument("--signal", choices=("KILL", "STOP"), default="KILL")
    args = parser.parse_args(argv)
    if args.kill is not None:
        arm(args.kill, signal.Signals[f"SIG{args.signal}"])
    {"extract": _extract, "compact": _compact, "finetune": _finetune}[args.task](args)


if __name__ == "__main__":
    main(sys.argv[1:])
