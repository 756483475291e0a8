"""The dispatcher protocol: how the API hands a committed job to whatever runs it.

The API calls, in this order, for ``POST /jobs``: create the Job row (committed, state
``queued``) -> ``dispatcher.submit(job_id)``. If ``submit`` raises (broker unreachable), the
API deletes the row and answers 503, so no job row stays. ``POST /jobs/{id}/cancel`` first
records the cancel in the database, then calls ``dispatcher.cancel(job_id)`` if the
dispatcher has it (best effort, errors ignored). ``GET /readyz`` calls ``dispatcher.ping()``.

The API never builds a dispatcher itself (``api`` does not import ``worker``): whoever starts
the server passes one to ``create_app(settings, dispatcher)``. ``ld3 serve`` and the uvicorn
factory :func:`ld3_cli.server.build_app` pass ``worker.dispatch.get_dispatcher(settings)``
(Celery ``send_task`` of the job id with a broker, the in-process runner without one). An app
created without a dispatcher gets an :class:`UnavailableDispatcher`: it serves every read,
and answers ``POST /jobs`` with 503.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


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
    """Stand-in when no dispatcher was given or none could be built: every submit fails
    (``POST /jobs`` answers 503), ping is False (``/readyz`` answers 503)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def submit(self, job_id: str) -> None:
        """Always raises ``RuntimeError`` with the reason."""
        raise RuntimeError(f"no job dispatcher: {self.reason}")

    def ping(self) -> bool:
        """Always False."""
        return False
