"""How the API hands a committed job to whatever runs it.

:func:`get_dispatcher` returns, from the settings alone:

- :class:`CeleryDispatcher` when ``LD3_BROKER_URL`` is set: ``submit`` publishes the Celery
  task ``ld3.run_job(job_id)``; ``ping`` is a Redis ``PING`` with a short timeout.
- :class:`EmbeddedDispatcher` otherwise: one background thread in this process runs the jobs
  one after another through the same :func:`worker.pipeline.run_job` the Celery task calls.
  When started it first picks up the jobs a previous process left ``queued`` or ``running``.

Both share the interface ``submit(job_id)``, ``cancel(job_id)``, ``ping() -> bool``. Cancel is
carried by the job row (``cancel_requested``, set by the registry): the runner checks it
between iterations, so ``cancel`` only needs to nudge the runner.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from registry.settings import Settings

log = logging.getLogger(__name__)


class DispatchError(RuntimeError):
    """The job could not be handed to a runner (e.g. the broker is unreachable)."""


class Dispatcher(Protocol):
    """What the API needs from a job runner."""

    def submit(self, job_id: str) -> None:
        """Hand the (committed, queued) job ``job_id`` to a runner; raises DispatchError."""

    def cancel(self, job_id: str) -> None:
        """Nudge the runner after the job row was flagged ``cancel_requested``."""

    def ping(self) -> bool:
        """Whether jobs can be submitted right now (broker reachable / runner alive)."""


class CeleryDispatcher:
    """Publishes ``ld3.run_job(job_id)`` to the Redis broker of ``settings``."""

    def __init__(self, settings: Settings) -> None:
        if not settings.broker_url:
            raise ValueError("CeleryDispatcher needs settings.broker_url (LD3_BROKER_URL)")
        from worker.celery_app import make_celery
        from worker.config import WorkerSettings

        self.settings = settings
        self.app = make_celery(settings, WorkerSettings())  # read now: key prefix, timeouts
        self._redis: Any = None

    def _client(self) -> Any:
        if self._redis is None:
            import redis

            timeout = float(self.settings.broker_timeout_s)
            self._redis = redis.Redis.from_url(
                str(self.settings.broker_url),
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                retry_on_timeout=False,
            )
        return self._redis

    def submit(self, job_id: str) -> None:
        """Publish the task for ``job_id``; raises :class:`DispatchError` when Redis is down."""
        from worker.celery_app import TASK_NAME

        try:
            self.app.send_task(TASK_NAME, args=[str(job_id)], queue=self.settings.celery_queue)
        except Exception as exc:  # kombu/redis raise many types; all mean "not enqueued"
            msg = f"could not enqueue job {job_id}: broker unreachable ({exc})"
            raise DispatchError(msg) from exc

    def cancel(self, job_id: str) -> None:
        """Nothing to do: the worker reads ``cancel_requested`` from the job row."""

    def ping(self) -> bool:
        """Redis ``PING`` within ``settings.broker_timeout_s``; False on any error."""
        try:
            return bool(self._client().ping())
        except Exception:  # noqa: BLE001 - any failure means "not ready"
            return False

    def close(self) -> None:
        """Release the broker connections and forget this instance."""
        _forget(self)
        try:
            self.app.pool.force_close_all()
        except Exception:  # noqa: BLE001
            pass
        if self._redis is not None:
            self._redis.close()


RunFn = Callable[..., Any]


class EmbeddedDispatcher:
    """Runs jobs in a background thread of this process (embedded mode, no broker).

    Args:
        settings: service settings (database and artifacts of the jobs).
        session_factory: SQLAlchemy session factory; default: the registry's for ``settings``.
        recover: at start, resubmit the jobs left ``queued`` or ``running`` by a previous
            process (a ``running`` one resumes from its checkpoint).
        run: the job function (default :func:`worker.pipeline.run_job`).

    One job at a time, in submission order. Only one process may run an embedded dispatcher
    on a given database (``ld3 serve`` runs a single API process in embedded mode).
    """

    def __init__(
        self,
        settings: Settings,
        session_factory: Any = None,
        *,
        recover: bool = True,
        run: RunFn | None = None,
    ) -> None:
        self.settings = settings
        self.session_factory = session_factory
        self.recover = recover
        self._run = run
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._pending: set[str] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.current: str | None = None

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> EmbeddedDispatcher:
        """Start the runner thread (idempotent); with ``recover``, enqueue leftover jobs."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return self
            self._thread = threading.Thread(target=self._loop, name="ld3-embedded", daemon=True)
            self._thread.start()
        if self.recover:
            for job_id in self._leftover_jobs():
                self._enqueue(job_id)
        return self

    def _leftover_jobs(self) -> list[str]:
        from registry import jobs

        try:
            with self._session() as session:
                found = []
                for state in ("running", "queued"):
                    page, _ = jobs.list_jobs(session, state=state, limit=100_000)
                    found.extend(page)
            found.sort(key=lambda j: (j.state != "running", j.created_at))
            return [str(j.id) for j in found]
        except Exception as exc:  # noqa: BLE001 - a missing table etc. must not kill the API
            log.warning("embedded runner: could not list unfinished jobs: %s", exc)
            return []

    def _session(self) -> Any:
        if self.session_factory is None:
            from registry.db import get_sessionmaker

            self.session_factory = get_sessionmaker(self.settings)
        return self.session_factory()

    def shutdown(self, wait: bool = True, timeout: float | None = None) -> None:
        """Stop the thread after the current job (queued jobs stay queued in the registry)."""
        thread = self._thread
        if thread is None:
            return
        with self._lock:
            while True:
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    break
            self._pending.clear()
        self._queue.put(None)
        if wait:
            thread.join(timeout)
        self._thread = None

    def close(self) -> None:
        """Stop the runner thread (the API calls this at shutdown) and forget this instance.

        Waits at most 5 s for a running job: a job cut short by the process exit stays
        ``running`` and resumes from its checkpoint when the next runner starts.
        """
        _forget(self)
        self.shutdown(wait=True, timeout=5)

    # -- Dispatcher interface ----------------------------------------------------------
    def submit(self, job_id: str) -> None:
        """Queue ``job_id`` for the runner thread (started on first use)."""
        self.start()
        self._enqueue(str(job_id))

    def _enqueue(self, job_id: str) -> None:
        with self._lock:
            if job_id in self._pending:
                return
            self._pending.add(job_id)
        self._queue.put(job_id)

    def cancel(self, job_id: str) -> None:
        """Nothing to do: the runner reads ``cancel_requested`` from the job row."""

    def ping(self) -> bool:
        """True while the runner thread is alive (or not started yet: it starts on submit)."""
        return self._thread is None or self._thread.is_alive()

    # -- runner ------------------------------------------------------------------------
    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Block until no job is queued or running (True) or ``timeout`` seconds pass."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                idle = not self._pending and self.current is None
            if idle:
                return True
            time.sleep(0.05)
        return False

    def _loop(self) -> None:
        run = self._run
        if run is None:
            from worker.pipeline import run_job as run
        while True:
            job_id = self._queue.get()
            if job_id is None:
                return
            with self._lock:
                self.current = job_id
            try:
                run(job_id, self.settings, self.session_factory)
            except Exception:  # noqa: BLE001 - run_job records failures; keep serving
                log.exception("embedded runner: job %s raised", job_id)
            finally:
                with self._lock:
                    self._pending.discard(job_id)
                    self.current = None


_dispatchers: dict[tuple[Any, ...], Any] = {}
_dispatchers_lock = threading.Lock()


def get_dispatcher(settings: Settings, session_factory: Any = None) -> Any:
    """The dispatcher for ``settings``: Celery when a broker URL is set, else embedded.

    Cached per (database, broker, queue, artifacts) so every caller in a process shares one
    embedded runner thread. The embedded one is started (and recovers leftover jobs) here.
    """
    key = (
        str(settings.database_url),
        settings.broker_url,
        settings.celery_queue,
        str(settings.artifacts_dir),
    )
    with _dispatchers_lock:
        dispatcher = _dispatchers.get(key)
        if dispatcher is None:
            if settings.broker_url:
                dispatcher = CeleryDispatcher(settings)
            else:
                dispatcher = EmbeddedDispatcher(settings, session_factory)
            _dispatchers[key] = dispatcher
    if isinstance(dispatcher, EmbeddedDispatcher):
        dispatcher.start()
    return dispatcher


def _forget(dispatcher: Any) -> None:
    with _dispatchers_lock:
        for key, value in list(_dispatchers.items()):
            if value is dispatcher:
                del _dispatchers[key]


def reset_dispatchers() -> None:
    """Stop and forget every cached dispatcher (tests; process shutdown)."""
    with _dispatchers_lock:
        items = list(_dispatchers.values())
        _dispatchers.clear()
    for dispatcher in items:
        if isinstance(dispatcher, EmbeddedDispatcher):
            dispatcher.shutdown(wait=True, timeout=30)
        elif isinstance(dispatcher, CeleryDispatcher):
            dispatcher.close()
