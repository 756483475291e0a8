"""A per-job lease in Redis, so one job runs on at most one worker at a time.

Celery's Redis transport redelivers an unacknowledged message once its visibility timeout has
passed: after the worker died (what we want: the job resumes elsewhere) but also while a long
job is still running on a live worker. The lease tells the two apart: the running worker
holds ``<prefix>:lease:<job id>`` and renews it every ``ttl / 3`` seconds from a background
thread; a dead worker stops renewing, so its lease expires ``ttl`` seconds later.
"""

from __future__ import annotations

import logging
import threading
import uuid
from types import TracebackType

import redis

log = logging.getLogger(__name__)

_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


class JobLease:
    """Exclusive, self-renewing lease on one job id.

    Args:
        client: a ``redis.Redis`` client.
        job_id: the job the lease is for.
        ttl: lease lifetime in seconds; renewed every ``ttl / 3`` seconds while held.
        prefix: key prefix (``<prefix>:lease:<job id>``).

    Use :meth:`acquire` (returns False when another live worker holds it), then
    :meth:`release`, or the context manager form after a successful :meth:`acquire`.
    """

    def __init__(self, client: redis.Redis, job_id: object, ttl: float, prefix: str = "ld3"):
        if ttl <= 0:
            raise ValueError(f"lease ttl must be positive seconds, got {ttl!r}")
        self.client = client
        self.key = f"{prefix}:lease:{job_id}"
        self.ttl_ms = max(1, int(ttl * 1000))
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> bool:
        """Take the lease if nobody holds it; start renewing it. Returns whether it was taken."""
        if not self.client.set(self.key, self.token, nx=True, px=self.ttl_ms):
            return False
        self._stop.clear()
        self._thread = threading.Thread(target=self._renew_loop, name="ld3-lease", daemon=True)
        self._thread.start()
        return True

    def remaining(self) -> float:
        """Seconds until the current holder's lease expires (0 when nobody holds it)."""
        ms = self.client.pttl(self.key)
        return max(0.0, ms / 1000.0) if ms and ms > 0 else 0.0

    def _renew_loop(self) -> None:
        interval = self.ttl_ms / 3000.0
        while not self._stop.wait(interval):
            try:
                if not self.client.eval(_RENEW, 1, self.key, self.token, self.ttl_ms):
                    log.warning("lease %s was lost (expired or taken over)", self.key)
            except redis.RedisError as exc:  # broker blip: keep running, try again later
                log.warning("could not renew lease %s: %s", self.key, exc)

    def release(self) -> None:
        """Stop renewing and delete the lease if this holder still owns it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        try:
            self.client.eval(_RELEASE, 1, self.key, self.token)
        except redis.RedisError as exc:
            log.warning("could not release lease %s (it expires by itself): %s", self.key, exc)

    def __enter__(self) -> JobLease:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
