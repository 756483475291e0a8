"""Exceptions raised by the repository functions (all subclasses of ``ValueError``/``LookupError``
so plain library callers can catch them; the API maps them to problem+json responses)."""

from __future__ import annotations

from sqlalchemy import exc as sa_exc

DB_UNAVAILABLE: tuple[type[Exception], ...] = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.DisconnectionError,
    sa_exc.TimeoutError,
)
"""Errors that mean "the database cannot be reached right now": retry later, not a bug."""


def is_db_unavailable(exc: BaseException) -> bool:
    """True when ``exc`` means the database is unreachable right now (one of
    :data:`DB_UNAVAILABLE`, or a DBAPI error whose connection was invalidated)."""
    if isinstance(exc, DB_UNAVAILABLE):
        return True
    return isinstance(exc, sa_exc.DBAPIError) and bool(exc.connection_invalidated)


class RegistryError(Exception):
    """Base class of registry errors."""


class NotFound(RegistryError, LookupError):
    """The job / model / schedule asked for does not exist."""


class IdempotencyConflict(RegistryError, ValueError):
    """An idempotency key was reused with a different request body (HTTP 422)."""


class JobStateError(RegistryError, ValueError):
    """The job is in a state that does not allow the operation (HTTP 409)."""


class CatalogError(RegistryError, ValueError):
    """A model registration is invalid (HTTP 422) or the id is taken (``conflict=True``, 409)."""

    def __init__(self, message: str, *, field: str | None = None, conflict: bool = False):
        super().__init__(message)
        self.field = field
        self.conflict = conflict
