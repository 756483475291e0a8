"""FastAPI dependencies: the app's settings, a database session per request, the dispatcher,
and page helpers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Query, Request
from sqlalchemy.orm import Session

from api.dispatch import Dispatcher
from api.problems import Problem
from registry.settings import Settings

MAX_LIMIT = 1000
MAX_OFFSET = 2**31 - 1
MAX_ORDER = 4
MAX_NFE_BOUND = 1000
"""Static bounds shown in the OpenAPI schema; the settings may narrow them at run time
(``LD3_MAX_PAGE_SIZE``, ``LD3_MAX_NFE``: a value inside the schema bound but over the setting
is a 422 problem too)."""

LimitQuery = Annotated[int | None, Query(ge=1, le=MAX_LIMIT, description=(
    "page size, 1..LD3_MAX_PAGE_SIZE (default LD3_DEFAULT_PAGE_SIZE)"))]
OffsetQuery = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="items to skip")]
OrderQuery = Annotated[int | None, Query(ge=1, le=MAX_ORDER, description="solver order")]
NfeQuery = Annotated[int | None, Query(ge=1, le=MAX_NFE_BOUND, description="NFE")]


def get_settings(request: Request) -> Settings:
    """The settings the app was created with."""
    return request.app.state.settings


def get_dispatcher(request: Request) -> Dispatcher:
    """The app's job dispatcher."""
    return request.app.state.dispatcher


def get_session(request: Request) -> Iterator[Session]:
    """A Session for one request (closed afterwards; repository writes commit themselves)."""
    session = request.app.state.sessionmaker()
    try:
        yield session
    finally:
        session.close()


def page_bounds(settings: Settings, limit: int | None, offset: int) -> tuple[int, int]:
    """Validate ``?limit=``/``?offset=``: limit 1..max_page_size (default
    default_page_size), offset >= 0; 422 problem otherwise."""
    lim = settings.default_page_size if limit is None else limit
    errors = []
    if not 1 <= lim <= settings.max_page_size:
        errors.append(
            {"parameter": "limit", "detail": f"limit must be 1..{settings.max_page_size}"}
        )
    if offset < 0:
        errors.append({"parameter": "offset", "detail": "offset must be >= 0"})
    if errors:
        raise Problem(422, "invalid pagination", slug="validation-error", errors=errors)
    return lim, offset


def page_links(
    request: Request, total: int, limit: int, offset: int
) -> tuple[str | None, str | None]:
    """(next, prev) URLs (path + query) of a limit/offset page, or None at the ends."""
    params: dict[str, Any] = dict(request.query_params)

    def url(off: int) -> str:
        params.update(limit=limit, offset=off)
        return f"{request.url.path}?{urlencode(params)}"

    nxt = url(offset + limit) if offset + limit < total else None
    prev = url(max(0, offset - limit)) if offset > 0 else None
    return nxt, prev
