"""The Celery application of the GPU workers (Redis broker, no result backend).

Job state lives in the registry (the job row), so Celery only carries ``ld3.run_job(job_id)``
messages. Delivery semantics:

- ``task_acks_late``: a message is acknowledged only after the job finished (succeeded,
  failed or cancelled), so a worker that dies mid-job leaves it unacknowledged and Redis hands
  it to another worker once ``LD3_VISIBILITY_TIMEOUT`` seconds have passed.
- ``task_reject_on_worker_lost``: a pool child killed mid-task requeues its message at once.
- ``worker_prefetch_multiplier = 1`` and concurrency 1: a worker holds one job at a time (one
  worker per GPU; pin each with ``CUDA_VISIBLE_DEVICES``).

Start a worker with ``ld3 worker`` or ``celery -A worker.celery_app worker -Q ld3 -c 1``.
"""

from __future__ import annotations

from celery import Celery

from registry.settings import Settings, get_settings
from worker.config import WorkerSettings, get_worker_settings

TASK_NAME = "ld3.run_job"


def make_celery(settings: Settings | None = None, options: WorkerSettings | None = None) -> Celery:
    """Build the Celery app for ``settings.broker_url`` (``redis://...``) and the worker options.

    ``settings`` defaults to the environment (:func:`registry.settings.get_settings`); a
    missing broker URL leaves the app unconfigured (``ld3 worker`` refuses to start then).
    """
    settings = settings or get_settings()
    opts = options or get_worker_settings()
    timeout = float(settings.broker_timeout_s)
    app = Celery("ld3", include=["worker.tasks"])
    app.conf.update(
        broker_url=settings.broker_url,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_concurrency=opts.concurrency,
        task_default_queue=settings.celery_queue,
        task_routes={TASK_NAME: {"queue": settings.celery_queue}},
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        result_backend=settings.result_backend,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=timeout,
        broker_transport_options={
            "visibility_timeout": opts.visibility_timeout,
            "unacked_restore_interval": opts.restore_interval,
            "unacked_restore_throttle": 1,
            "socket_timeout": max(timeout, 5.0),
            "socket_connect_timeout": timeout,
            "global_keyprefix": f"{opts.key_prefix}:" if opts.key_prefix else "",
        },
        # A publish from the API fails fast when Redis is down (the API answers 503); one
        # quick retry re-opens a connection that went stale while Redis restarted.
        task_publish_retry=True,
        task_publish_retry_policy={
            "max_retries": 2,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.5,
        },
        # LD3_JOB_TIME_LIMIT_S: a soft limit only (the job fails with SoftTimeLimitExceeded); a
        # hard limit would kill the child and, with reject_on_worker_lost, requeue it forever.
        task_soft_time_limit=settings.job_time_limit_s,
        worker_send_task_events=False,
        worker_hijack_root_logger=False,
    )
    return app


app = make_celery()
