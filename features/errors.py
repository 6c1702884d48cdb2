"""The one exception base for mistakes a user can fix: the CLI prints these in one line."""

__all__ = ["UserError"]


class UserError(Exception):
    """Bad input, data or environment; the message names the value and the fix."""
