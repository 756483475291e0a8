"""The CLI's user-facing errors and notes on stderr, and how a failed API call becomes one."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ld3_client import ServiceError


class CLIError(Exception):
    """A user-facing error: printed as one line on stderr, exit status ``code``."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def from_service_error(exc: ServiceError) -> CLIError:
    """The one-line CLIError (exit 1) of a failed API call: the problem's status, title and
    detail; for 401/403 how to pass the token."""
    if exc.status in (401, 403):
        return CLIError(f"{exc.message()}; pass --token TOKEN or set LD3_API_TOKEN")
    return CLIError(exc.message())


def note(command: str, text: str) -> None:
    """Print ``ld3 <command>: <text>`` on stderr (errors, hints, what a command did)."""
    print(f"ld3 {command}: {text}", file=sys.stderr)
