"""The Celery task ``ld3.run_job(job_id)``: a lease, then :func:`worker.pipeline.run_job`.

The task body is the same pipeline the embedded runner calls. Around it:

- a Redis lease (:class:`worker.lease.JobLease`) so a message redelivered while the job still
  runs on a live worker waits (``retry`` after the lease's remaining time) instead of running
  the job twice; after a worker was killed its lease expires and the redelivered message
  resumes the job from its checkpoint;
- the registry being unreachable (PostgreSQL down) is retried with a growing delay; the job
  resumes from its checkpoint when the database is back.

Each worker's main process also runs a :class:`worker.reaper.StaleJobReaper`: a job whose
worker died (heartbeat older than ``LD3_STALE_AFTER_S``, lease expired) is requeued and
published again within minutes, without waiting for the broker's visibility timeout.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

from celery.signals import worker_process_init, worker_ready, worker_shutdown

from worker.celery_app import TASK_NAME, app

log = logging.getLogger(__name__)


@worker_process_init.connect
def _fresh_connections(**_: Any) -> None:  # pragma: no cover - runs in pool children
    """A forked pool child must not reuse the parent's database connections."""
    from registry.db import dispose_engines

    dispose_engines()


_reaper: Any = None


@worker_ready.connect
def _start_reaper(**_: Any) -> None:  # pragma: no cover - runs in the worker main process
    """Start this worker's :class:`worker.reaper.StaleJobReaper` (main process only).

    It uses an engine of its own whose connections are closed after every sweep, so no
    pooled connection is shared with pool children forked later.
    """
    global _reaper
    from sqlalchemy.orm import sessionmaker

    from registry.db import create_engine_for
    from registry.settings import get_settings
    from worker.config import get_worker_settings
    from worker.reaper import StaleJobReaper

    settings = get_settings()
    opts = get_worker_settings()
    engine = create_engine_for(settings)
    client = _redis_client(str(settings.broker_url))

    def dispatch(job_id: str) -> None:
        app.send_task(TASK_NAME, args=[job_id], queue=settings.celery_queue)

    def lease_held(job_id: str) -> bool:
        return bool(client.exists(f"{opts.key_prefix}:lease:{job_id}"))

    assert opts.stale_after_s is not None and opts.reap_interval is not None
    _reaper = StaleJobReaper(
        sessionmaker(bind=engine, expire_on_commit=False), opts.stale_after_s,
        opts.reap_interval, dispatch, lease_held, after_sweep=engine.dispose,
    ).start()
    log.info("stale-job reaper: every %.1fs, jobs without heartbeat for %.1fs",
             opts.reap_interval, opts.stale_after_s)


@worker_shutdown.connect
def _stop_reaper(**_: Any) -> None:  # pragma: no cover - runs in the worker main process
    """Stop the reaper thread."""
    if _reaper is not None:
        _reaper.stop()


def _redis_client(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)


@app.task(name=TASK_NAME, bind=True, max_retries=None, acks_late=True, reject_on_worker_lost=True)
def run_job_task(self: Any, job_id: str) -> str:
    """Run job ``job_id`` (see :mod:`worker.pipeline`); returns its final state."""
    from registry.settings import get_settings
    from worker.config import get_worker_settings
    from worker.lease import JobLease
    from worker.pipeline import RegistryUnavailable, run_job

    settings = get_settings()
    opts = get_worker_settings()
    lease = JobLease(
        _redis_client(str(settings.broker_url)), job_id, opts.lease_seconds, opts.key_prefix
    )
    import redis

    try:
        acquired = lease.acquire()
    except redis.RedisError as exc:  # broker blip: try again (or Redis redelivers it later)
        raise self.retry(countdown=5.0) from exc
    if not acquired:
        wait = max(1.0, lease.remaining())
        log.info("job %s is leased by a live worker; retrying in %.1fs", job_id, wait)
        raise self.retry(countdown=wait)
    worker_name = self.request.hostname or socket.gethostname()
    try:
        state = run_job(job_id, settings, worker_name=worker_name, stale_after_s=None)
    except RegistryUnavailable as exc:
        delay = min(60.0, 2.0 * (self.request.retries + 1))
        log.warning("job %s: registry unavailable (%s); retrying in %.0fs", job_id, exc, delay)
        raise self.retry(countdown=delay) from exc
    finally:
        lease.release()
    return state
