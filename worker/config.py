"""Worker-only settings (environment variables prefixed ``LD3_``).

The shared settings (database, broker, queue, artifacts, token) live in
:mod:`registry.settings`;
these are the knobs that only the job runner and the Celery worker read. Defaults suit a
GPU host; the tests shorten the timeouts through the same environment variables.
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class WorkerSettings(BaseSettings):
    """Timing and queue options of the workers.

    Attributes:
        visibility_timeout: seconds (float) after which an unacknowledged job message is
            handed to another worker (Redis transport; ``LD3_VISIBILITY_TIMEOUT``). Default:
            ``2 * stale_after_s`` (240 s): the broker's redelivery is the backstop of the
            heartbeat reaper. A job running longer than this is redelivered too, but the
            lease keeps the second copy waiting (it retries every <= ``lease_seconds``).
        stale_after_s: a ``running`` job whose ``heartbeat_at`` is older than this, and whose
            Redis lease has expired, is requeued by the reaper of any live worker
            (``LD3_STALE_AFTER_S``; default ``2 * lease_seconds`` = 120 s; must exceed
            ``lease_seconds``).
        reap_interval: seconds between two sweeps of a worker's reaper (default
            ``stale_after_s / 4``).
        restore_interval: seconds between the worker's sweeps for such messages.
        lease_seconds: time-to-live of a job's lease in Redis; renewed every
            ``lease_seconds / 3`` while the job runs, so it expires this long after a worker died.
        progress_interval: minimum seconds between two progress writes to the job row.
        concurrency: jobs per worker process (1: one job per GPU).
        max_attempts: a job claimed more often than this (its workers keep dying on it, e.g.
            out of memory) is marked failed instead of being run again.
        key_prefix: prefix of every Redis key of this service (Celery's queues and bookkeeping
            through kombu's ``global_keyprefix``, and the job leases), so several deployments
            or test runs can share one Redis database.
    """

    model_config = SettingsConfigDict(env_prefix="LD3_", extra="ignore")

    visibility_timeout: float | None = Field(default=None, gt=0)
    restore_interval: float = Field(default=10.0, gt=0)
    lease_seconds: float = Field(default=60.0, gt=0)
    stale_after_s: float | None = Field(default=None, gt=0)
    reap_interval: float | None = Field(default=None, gt=0)
    progress_interval: float = Field(default=1.0, ge=0)
    concurrency: int = Field(default=1, ge=1)
    max_attempts: int = Field(default=3, ge=1)
    key_prefix: str = "ld3"

    @model_validator(mode="after")
    def _derive_timeouts(self) -> WorkerSettings:
        """Fill ``stale_after_s``, ``reap_interval`` and ``visibility_timeout`` from the lease."""
        if self.stale_after_s is None:
            self.stale_after_s = 2.0 * self.lease_seconds
        if self.stale_after_s <= self.lease_seconds:
            raise ValueError("LD3_STALE_AFTER_S must be larger than LD3_LEASE_SECONDS")
        if self.reap_interval is None:
            self.reap_interval = self.stale_after_s / 4.0
        if self.visibility_timeout is None:
            self.visibility_timeout = 2.0 * self.stale_after_s
        return self


@lru_cache(maxsize=1)
def get_worker_settings() -> WorkerSettings:
    """The process-wide :class:`WorkerSettings`, read once from the environment."""
    return WorkerSettings()
