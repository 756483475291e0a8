"""FastAPI dependencies shared by every router: the app's settings, a database session per
request, the dispatcher, the noise-schedule resolver, validated page parameters, and the
bearer-token scheme shown in the OpenAPI document.

Routers take them as annotated parameters (``session: SessionDep``) and never reach into
``request.app.state`` themselves.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.security import HTTPBearer
from sqlalchemy.orm import Session

from api.dispatch import Dispatcher
from api.problems import Problem
from api.schedule_service import NoiseScheduleResolver
from registry.settings import Settings

MAX_LIMIT = 1000
MAX_OFFSET = 2**31 - 1
MAX_ORDER = 4
MAX_NFE_BOUND = 1000
"""Static bounds shown in the OpenAPI schema; the settings may narrow them at run time
(``LD3_MAX_PAGE_SIZE``, ``LD3_MAX_NFE``: a value inside the schema bound but over the setting
is a 422 problem too)."""

PROBLEM = {"content": {"application/problem+json": {}}}
"""``responses=`` entry of an error status (the OpenAPI hook fills in the Problem schema)."""

LimitQuery = Annotated[int | None, Query(ge=1, le=MAX_LIMIT, description=(
    "page size, 1..LD3_MAX_PAGE_SIZE (default LD3_DEFAULT_PAGE_SIZE)"))]
OffsetQuery = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="items to skip")]
OrderQuery = Annotated[int | None, Query(ge=1, le=MAX_ORDER, description="solver order")]
NfeQuery = Annotated[int | None, Query(ge=1, le=MAX_NFE_BOUND, description="NFE")]

bearer = HTTPBearer(auto_error=False, description="LD3_API_TOKEN (needed when set)")
"""The security scheme of writes. The check itself is done by
:class:`api.middleware.GuardMiddleware` before any route runs; this dependency only puts the
scheme into the OpenAPI document."""
AUTH = [Depends(bearer)]
"""``dependencies=AUTH`` on a route that needs the token when one is configured."""


def get_settings(request: Request) -> Settings:
    """The settings the app was created with."""
    return request.app.state.settings


def get_dispatcher(request: Request) -> Dispatcher:
    """The job dispatcher the app was given."""
    return request.app.state.dispatcher


def get_noise_schedules(request: Request) -> NoiseScheduleResolver:
    """The app's (per-process, cached) noise-schedule resolver."""
    return request.app.state.noise_schedules


def get_session(request: Request) -> Iterator[Session]:
    """A Session for one request (closed afterwards; repository writes commit themselves)."""
    session = request.app.state.sessionmaker()
    try:
        yield session
    finally:
        session.close()


@dataclass(frozen=True)
class PageParams:
    """Validated ``?limit=`` / ``?offset=`` of a list request."""

    limit: int
    offset: int


def page_bounds(settings: Settings, limit: int | None, offset: int) -> tuple[int, int]:
    """Validate ``?limit=``/``?offset=``: limit 1..max_page_size (default
    default_page_size), offset >= 0; returns (limit, offset), 422 problem otherwise."""
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


def get_page_params(
    settings: Annotated[Settings, Depends(get_settings)],
    limit: LimitQuery = None,
    offset: OffsetQuery = 0,
) -> PageParams:
    """The request's page parameters, checked against the settings (see :func:`page_bounds`)."""
    lim, off = page_bounds(settings, limit, offset)
    return PageParams(limit=lim, offset=off)


SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
DispatcherDep = Annotated[Dispatcher, Depends(get_dispatcher)]
NoiseSchedulesDep = Annotated[NoiseScheduleResolver, Depends(get_noise_schedules)]
PageDep = Annotated[PageParams, Depends(get_page_params)]
