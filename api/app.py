"""The FastAPI application factory.

``create_app(settings=None, dispatcher=None)``: ``settings`` default to
``registry.settings.get_settings()`` (``LD3_*`` environment). The ``dispatcher`` (see
:mod:`api.dispatch` for the protocol) is injected by whoever starts the server
(:func:`ld3_cli.server.build_app` composes the worker's); without one, reads work and job
submissions answer 503. With SQLite (or ``LD3_AUTO_MIGRATE=1``) the schema is upgraded to
head on creation.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.routing import APIRoute

from api.dispatch import Dispatcher, UnavailableDispatcher
from api.lookup_cache import LookupCache, LookupFastPath
from api.middleware import GuardMiddleware
from api.openapi import add_head_to_gets, install_openapi
from api.problems import install_handlers
from api.routes import health, jobs, models, reports, schedules
from api.schedule_service import NoiseScheduleResolver
from registry import db
from registry.settings import Settings, get_settings

log = logging.getLogger("ld3.api")

DESCRIPTION = """
Learn optimized diffusion-sampler time steps (LD3, trust region) as jobs and serve them.

Errors are RFC 9457 `application/problem+json`. When `LD3_API_TOKEN` is set, writes need
`Authorization: Bearer <token>` (reads too with `LD3_READS_REQUIRE_TOKEN=1`).
"""


def _schedules_version(sessionmaker) -> int:
    from registry.schedules import schedules_version

    with sessionmaker() as session:
        return schedules_version(session)


def create_app(
    settings: Settings | None = None, dispatcher: Dispatcher | None = None
) -> FastAPI:
    """Build the API app for ``settings`` with ``dispatcher`` (see module docstring) and
    return it.

    The app holds ``state.settings``, ``state.engine``, ``state.sessionmaker``,
    ``state.dispatcher`` and ``state.noise_schedules``. On shutdown the dispatcher's optional
    ``close()`` is called.
    """
    settings = settings or get_settings()
    if settings.should_auto_migrate:
        db.init_db(settings)
    if dispatcher is None:
        log.warning("no job dispatcher was given to create_app: job submissions answer 503")
        dispatcher = UnavailableDispatcher("no dispatcher was given to create_app")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        close = getattr(app.state.dispatcher, "close", None)
        if callable(close):
            try:
                close()
            except Exception as exc:  # noqa: BLE001 - shutting down anyway
                log.warning("dispatcher.close() failed: %s", exc)

    app = FastAPI(
        title="ld3-service",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.engine = db.get_engine(settings)
    app.state.sessionmaker = db.get_sessionmaker(settings)
    app.state.dispatcher = dispatcher
    app.state.noise_schedules = NoiseScheduleResolver()
    app.state.lookup_cache = LookupCache(
        lambda: _schedules_version(app.state.sessionmaker), settings.schedule_cache_check_s
    )
    install_handlers(app)
    app.add_middleware(LookupFastPath, cache=app.state.lookup_cache)  # inside the guard
    app.add_middleware(GuardMiddleware, settings=settings)
    routers = [module.router for module in (health, jobs, reports, schedules, models)]
    add_head_to_gets(routers)
    app.state.route_methods = [
        (route.path_regex, set(route.methods or ()))
        for router in routers
        for route in router.routes
        if isinstance(route, APIRoute)
    ]
    for router in routers:
        app.include_router(router)
    install_openapi(app)
    return app
