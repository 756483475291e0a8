"""Worker-only settings (environment variables prefixed ``LD3_``).

The shared settings (database, broker, queue, artifacts, token) live in
:mod:`registry.settings`;
these are the knobs that only the job runner and the Celery worker read. Defaults suit a
GPU host; the tests shorten the timeouts through the same environment variables.
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class WorkerSettings(BaseSettings):
    """Timing and queue options of the workers.

    Attributes:
        visibility_timeout: seconds (float) after which an unacknowledged job message is
            handed to another worker (Redis transport). A job whose worker was killed is
            redelivered after this long; a job running longer than this is redelivered too
            but the lease keeps the second copy waiting (``LD3_VISIBILITY_TIMEOUT``).
        restore_interval: seconds between the worker's sweeps for such messages.
        lease_seconds: time-to-live of a job's lease in Redis; renewed every
            ``lease_seconds / 3`` while the job runs, so it expires this long after a worker died.
        progress_interval: minimum seconds between two progress writes to the job row.
        cancel_poll_interval: minimum seconds between two cancel checks on the job row.
        concurrency: jobs per worker process (1: one job per GPU).
        max_attempts: a job claimed more often than this (its workers keep dying on it, e.g.
            out of memory) is marked failed instead of being run again.
        key_prefix: prefix of every Redis key of this service (Celery's queues and bookkeeping
            through kombu's ``global_keyprefix``, and the job leases), so several deployments
            or test runs can share one Redis database.
    """

    model_config = SettingsConfigDict(env_prefix="LD3_", extra="ignore")

    visibility_timeout: float = Field(default=7200.0, gt=0)
    restore_interval: float = Field(default=10.0, gt=0)
    lease_seconds: float = Field(default=60.0, gt=0)
    progress_interval: float = Field(default=1.0, ge=0)
    cancel_poll_interval: float = Field(default=1.0, ge=0)
    concurrency: int = Field(default=1, ge=1)
    max_attempts: int = Field(default=3, ge=1)
    key_prefix: str = "ld3"


@lru_cache(maxsize=1)
def get_worker_settings() -> WorkerSettings:
    """The process-wide :class:`WorkerSettings`, read once from the environment."""
    return WorkerSettings()
