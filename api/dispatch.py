"""The dispatcher protocol: how the API hands a committed job to whatever runs it.

The API calls, in this order, for ``POST /jobs``: create the Job row (committed, state
``queued``) -> ``dispatcher.submit(job_id)``. If ``submit`` raises (broker unreachable), the
API deletes the row and answers 503, so no job row stays. ``POST /jobs/{id}/cancel`` first
records the cancel in the database, then calls ``dispatcher.cancel(job_id)`` if the
dispatcher has it (best effort, errors ignored). ``GET /readyz`` calls ``dispatcher.ping()``.

The default dispatcher comes from ``worker.dispatch.get_dispatcher(settings)`` (service-worker:
Celery ``send_task`` with the job id in full mode, the in-process runner in embedded mode).
"""

from __future__ import annotations

import logging
from typing import Protocol, runtime_checkable

from registry.settings import Settings

log = logging.getLogger("ld3.api")


@runtime_checkable
class Dispatcher(Protocol):
    """What ``api.app.create_app(dispatcher=...)`` needs.

    - ``submit(job_id: str) -> None``: start/enqueue the job whose row is already committed.
      Must raise (any exception) promptly -- within ``Settings.broker_timeout_s`` -- when the
      job cannot be enqueued.
    - ``ping() -> bool``: True when jobs can be dispatched (broker reachable; always True for
      the in-process runner). Should return within ``Settings.ready_timeout_s``.
    - optional ``cancel(job_id: str) -> None``: called after a cancel was recorded.
    - optional ``close() -> None``: called when the app shuts down.
    """

    def submit(self, job_id: str) -> None:
        """Enqueue the job ``job_id``; raise on failure."""

    def ping(self) -> bool:
        """Whether the broker / runner can take jobs."""


class UnavailableDispatcher:
    """Fallback when no dispatcher can be built: every submit fails (503), ping is False."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def submit(self, job_id: str) -> None:
        """Always raises ``RuntimeError`` with the reason."""
        raise RuntimeError(f"no job dispatcher: {self.reason}")

    def ping(self) -> bool:
        """Always False."""
        return False


def default_dispatcher(settings: Settings) -> Dispatcher:
    """``worker.dispatch.get_dispatcher(settings)``, or an :class:`UnavailableDispatcher` when
    it cannot build one (logged)."""
    from worker.dispatch import get_dispatcher

    try:
        return get_dispatcher(settings)
    except Exception as exc:  # noqa: BLE001 - report any construction failure as unavailable
        log.warning("could not build the job dispatcher: %s", exc)
        return UnavailableDispatcher(f"could not build the dispatcher: {exc}")
