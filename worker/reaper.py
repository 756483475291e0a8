"""The stale-job reaper every Celery worker runs: crash recovery in minutes, not hours.

Every ``reap_interval`` seconds (and once at start) the reaper asks the registry for
``running`` jobs whose heartbeat is older than ``stale_after_s``
(:func:`registry.recovery.stale_job_ids`). A job whose Redis lease
(``<prefix>:lease:<job id>``, see :mod:`worker.lease`) still exists is left alone: its worker
is alive but cannot reach the database for a moment. Any other is requeued in the registry
(:func:`registry.recovery.requeue_stale_job`, conditional, so of several reapers one wins)
and its task is published again; the worker that gets it resumes it from its checkpoints.

Bound: a job whose worker died is running again on another worker within
``stale_after_s + reap_interval`` (+ the new worker's start of the job), 150 s with the
defaults (lease 60 s -> stale after 120 s, sweep every 30 s). The broker's own redelivery
(``visibility_timeout``, default ``2 * stale_after_s``) is only the backstop.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class StaleJobReaper:
    """Background sweeper of stale running jobs (see module docstring).

    Args:
        session_factory: makes SQLAlchemy sessions on the registry.
        stale_after_s: heartbeat age after which a running job counts as lost.
        interval: seconds between sweeps.
        dispatch: ``dispatch(job_id)`` publishes the job's task again.
        lease_held: ``lease_held(job_id)`` is True while a live worker holds the job's lease
            (an error there counts as held: never requeue on doubt).
        after_sweep: called after every sweep (e.g. close the sweep's connections).
    """

    def __init__(
        self,
        session_factory: Any,
        stale_after_s: float,
        interval: float,
        dispatch: Callable[[str], None],
        lease_held: Callable[[str], bool],
        after_sweep: Callable[[], None] | None = None,
    ) -> None:
        self.session_factory = session_factory
        self.stale_after_s = float(stale_after_s)
        self.interval = max(0.1, float(interval))
        self.dispatch = dispatch
        self.lease_held = lease_held
        self.after_sweep = after_sweep
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _held(self, job_id: str) -> bool:
        try:
            return bool(self.lease_held(job_id))
        except Exception as exc:  # noqa: BLE001 - broker blip: do not requeue on doubt
            log.warning("reaper: lease of job %s unknown (%s); not requeued", job_id, exc)
            return True

    def sweep(self) -> list[str]:
        """One pass; returns the ids of the jobs requeued and dispatched again."""
        from registry.recovery import requeue_stale_job, stale_job_ids

        with self.session_factory() as session:
            candidates = stale_job_ids(session, self.stale_after_s)
        requeued = []
        for job_id in candidates:
            if self._held(job_id):
                continue
            with self.session_factory() as session:
                state = requeue_stale_job(session, job_id, self.stale_after_s)
            if state == "queued":
                log.warning("reaper: job %s lost its worker (no heartbeat for %.0fs); requeued",
                            job_id, self.stale_after_s)
                self.dispatch(job_id)
                requeued.append(job_id)
            elif state == "cancelled":
                log.info("reaper: job %s lost its worker while cancelling; cancelled", job_id)
        return requeued

    def _loop(self) -> None:
        while True:
            try:
                self.sweep()
            except Exception as exc:  # noqa: BLE001 - database/broker down: next sweep
                log.warning("reaper: sweep failed: %s", str(exc).splitlines()[0] if str(exc)
                            else type(exc).__name__)
            if self.after_sweep is not None:
                try:
                    self.after_sweep()
                except Exception:  # noqa: BLE001
                    pass
            if self._stop.wait(self.interval):
                return

    def start(self) -> StaleJobReaper:
        """Start the sweeping thread (idempotent)."""
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="ld3-reaper", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread (waits at most ``timeout`` seconds)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
