"""Child process for the stage-write tests: run a stage, police its writes, maybe die in one.

Every file a stage opens for writing under ``--root`` must be a temporary file (its name
starts with :data:`features.files.TMP_PREFIX`) that is renamed into place when complete.
An open of a final name is a write that a kill could leave half done: the guard exits 3
naming it. With ``--kill K`` the process SIGKILLs itself right after the K-th such open,
the moment a non-atomic writer would leave an empty report behind.

Usage (from a workspace)::

    python -m tests.write_guard --root . --kill 2 -- python -m pipeline.compare ...
"""

from __future__ import annotations

import argparse
import builtins
import io
import os
import runpy
import signal
import sys
from pathlib import Path
from typing import Any

from features.files import TMP_PREFIX

EXIT_UNSAFE_WRITE = 3
_WRITE_MODES = frozenset("wax+")


def _guard(root: Path, kill_at: int | None) -> None:
    real_open = builtins.open
    opened = 0

    def guarded_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        nonlocal opened
        path = Path(os.fsdecode(file)) if isinstance(file, str | bytes | os.PathLike) else None
        writing = path is not None and bool(_WRITE_MODES & set(mode))
        inside = writing and path.resolve().is_relative_to(root)
        if inside and not path.name.startswith(TMP_PREFIX):
            print(f"write_guard: {path} opened for writing in place", file=sys.stderr)
            os._exit(EXIT_UNSAFE_WRITE)
        stream = real_open(file, mode, *args, **kwargs)
        if inside:
            opened += 1
            if opened == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
        return stream

    builtins.open = io.open = guarded_open  # pathlib's write_text goes through io.open


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--kill", type=int, default=None, help="die after the K-th write open")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- python -m MODULE ARGS")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if command[:2] != ["python", "-m"]:
        parser.error("the command must be `python -m MODULE ...`")
    _guard(args.root.resolve(), args.kill)
    sys.argv = [command[2], *command[3:]]
    runpy.run_module(command[2], run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
