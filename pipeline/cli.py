"""Entry-point wrapper shared by every stage: user errors in one line, tracebacks on demand."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from features.errors import UserError

__all__ = ["ArgumentParser", "one_line", "run"]

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # the shell's convention for SIGINT
EXIT_BROKEN_PIPE = 141  # the shell's convention for SIGPIPE: the reader went away


class ArgumentParser(argparse.ArgumentParser):
    """Every CLI's parser: lists ``--debug``, which :func:`run` handles before parsing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.add_argument(
            "--debug", action="store_true", help="on an error, show the full traceback"
        )


def one_line(message: str) -> str:
    """A multi-line message as one line, so logs keep it whole and grep finds it.

    A line ending in ``:`` introduces what follows; other line breaks become ``; ``.
    """
    parts = [line.strip() for line in message.splitlines() if line.strip()]
    joined = parts[0] if parts else ""
    for part in parts[1:]:
        joined += (" " if joined.endswith(":") else "; ") + part
    return joined


def run(main: Callable[[Sequence[str]], int | None], argv: Sequence[str] | None = None) -> None:
    """Call ``main(argv)`` and exit: 0, 2 for a :class:`UserError`, 130 for Ctrl-C.

    A user error is printed as one line on stderr, ``error: <what and how to fix it>``.

    ``--debug`` anywhere on the command line (or ``FEATURE_STORE_DEBUG=1``) re-raises, so
    the full traceback is one flag away.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("FEATURE_STORE_DEBUG") == "1"
    args = [arg for arg in args if arg != "--debug"]
    try:
        code = main(args)
        sys.stdout.flush()  # a closed pipe must fail here, not in the interpreter's exit
    except BrokenPipeError:
        # `... | head` closed our stdout: stop quietly, as cat and grep do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(EXIT_BROKEN_PIPE)
    except KeyboardInterrupt:
        if debug:
            raise
        print("interrupted: finished work is committed; rerun to resume", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    except UserError as error:
        if debug:
            raise
        print(f"error: {one_line(str(error))} (--debug shows the traceback)", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    sys.exit(code or 0)
