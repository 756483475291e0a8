"""The composition of the service process: the API app with the worker's job dispatcher.

``api`` knows the dispatcher only as a protocol (:mod:`api.dispatch`); this module is where a
real one is built and handed to :func:`api.app.create_app`. ``ld3 serve`` uses it, and
uvicorn can load it directly as an app factory::

    uvicorn --factory ld3_cli.server:build_app --host 127.0.0.1 --port 8000
"""

from __future__ import annotations

import logging
from typing import Any

from api.dispatch import Dispatcher, UnavailableDispatcher
from registry.settings import Settings, get_settings

log = logging.getLogger("ld3.api")


def build_dispatcher(settings: Settings) -> Dispatcher:
    """``worker.dispatch.get_dispatcher(settings)`` (Celery with ``LD3_BROKER_URL``, else the
    in-process runner, started), or an :class:`api.dispatch.UnavailableDispatcher` when it
    fails to build one (logged).

    With SQLite (or ``LD3_AUTO_MIGRATE=1``) the schema is upgraded first, as ``create_app``
    would: the in-process runner looks for the jobs a previous process left as it starts.
    """
    if settings.should_auto_migrate:
        from registry import db

        db.init_db(settings)
    from worker.dispatch import get_dispatcher

    try:
        return get_dispatcher(settings)
    except Exception as exc:  # noqa: BLE001 - report any construction failure as unavailable
        log.warning("could not build the job dispatcher: %s", exc)
        return UnavailableDispatcher(f"could not build the dispatcher: {exc}")


def build_app(settings: Settings | None = None) -> Any:
    """The FastAPI app for ``settings`` (default: the ``LD3_*`` environment) with the
    dispatcher of :func:`build_dispatcher`; also the uvicorn ``--factory`` entry point."""
    from api.app import create_app

    settings = settings or get_settings()
    return create_app(settings, build_dispatcher(settings))
