"""The CLI's user-facing error type."""

from __future__ import annotations


class CLIError(Exception):
    """A user-facing error: printed as one line on stderr, exit status ``code``."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code
