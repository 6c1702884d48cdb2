"""What the store raises: user-fixable errors, and a full disk told apart from other I/O."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager

from features.errors import UserError

__all__ = ["StoreError", "StoreFullError", "disk_full_is"]


class StoreError(UserError):
    """The store is missing, unreadable or asked for codes it does not hold."""


class StoreFullError(StoreError):
    """The disk filled up during a commit; the previous commit is intact."""


def _is_disk_full(error: OSError) -> bool:
    return error.errno in (errno.ENOSPC, errno.EDQUOT) or "No space left" in str(error)


@contextmanager
def disk_full_is(message: str) -> Iterator[None]:
    """Re-raise ENOSPC/EDQUOT inside the block as :class:`StoreFullError` with ``message``."""
    try:
        yield
    except OSError as error:
        if _is_disk_full(error):
            raise StoreFullError(message) from error
        raise
