"""Seconds spent inside named functions of a module, for a benchmark that says where its
time goes without a profiler's overhead on every call."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from functools import wraps
from types import ModuleType
from unittest import mock

__all__ = ["timed"]


@contextmanager
def timed(module: ModuleType, names: Sequence[str], totals: dict[str, float]) -> Iterator[None]:
    """While inside, every call of ``module.<name>`` adds its wall seconds to
    ``totals[name]``; a name the module looks up at call time is the one replaced."""

    def clocked(name: str, function):
        @wraps(function)
        def call(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                totals[name] = totals.get(name, 0.0) + time.perf_counter() - started

        return call

    with ExitStack() as stack:
        for name in names:
            totals[name] = 0.0
            stack.enter_context(
                mock.patch.object(module, name, clocked(name, getattr(module, name)))
            )
        yield
