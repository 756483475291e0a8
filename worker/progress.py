"""Progress reporting of a running job: throttled writes to the job row, cancel checks, heartbeat.

:class:`JobProgress` is the ``progress`` callback handed to ``ld3_core`` (teacher generation,
LD3 training): it receives ``{"stage", "fraction", "loss"}`` dicts, maps the stage fraction
to the job's overall fraction, writes it to the job row at most every ``interval`` seconds and
raises :class:`Cancelled` when the row says the job should stop (cancel requested). Writes
that fail because the database is briefly unreachable are skipped (the job goes on).

:class:`Heartbeat` refreshes the job's ``heartbeat_at`` from a background thread, so a job in
a long step without callbacks still shows a live worker.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from ld3_core.ld3 import Cancelled
from ld3_core.spec import stage_spans

log = logging.getLogger(__name__)

SessionFactory = Callable[[], Any]


class JobProgress:
    """Throttled progress writer and cancel checker for one job.

    Args:
        session_factory: makes SQLAlchemy sessions on the registry.
        job_id: the job.
        stages: ``(name, weight)`` pairs in run order; a stage's fraction in [0, 1] maps
            linearly into its share of the overall [0, 1].
        interval: minimum seconds between two writes (a stage change always writes).
        clock: time source (tests).
    """

    def __init__(
        self,
        session_factory: SessionFactory,
        job_id: str,
        stages: Sequence[tuple[str, float]],
        interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._span = stage_spans(stages)
        self.session_factory = session_factory
        self.job_id = str(job_id)
        self.interval = float(interval)
        self.clock = clock
        self.stage: str | None = None
        self.fraction = 0.0
        self.loss: float | None = None
        self._last_write = -math.inf
        self.writes = 0
        self.first_iteration: int | None = None

    def overall(self, stage: str, fraction: float) -> float:
        """Overall job fraction of ``fraction`` (0..1) of ``stage``."""
        lo, hi = self._span.get(stage, (self.fraction, self.fraction))
        f = min(1.0, max(0.0, float(fraction))) if math.isfinite(float(fraction)) else 0.0
        return lo + f * (hi - lo)

    def enter(self, stage: str) -> None:
        """Start ``stage``: write it at once; raises :class:`Cancelled` if the job must stop."""
        self.report(stage, 0.0, None, force=True)

    def __call__(self, info: dict[str, Any]) -> None:
        """The ``progress`` callback of ``ld3_core``: ``{"stage", "fraction", "loss"}``."""
        # ld3_core's own stage names ("init", "train", ...) are sub-stages of the job's stage
        if self.first_iteration is None and info.get("iteration") is not None:
            self.first_iteration = int(info["iteration"])  # > 1 after a resume
        stage = self.stage or str(info.get("stage") or "optimize")
        self.report(stage, float(info.get("fraction") or 0.0), info.get("loss"))

    def report(
        self, stage: str, fraction: float, loss: float | None = None, force: bool = False
    ) -> None:
        """Record progress; writes when ``force``, on a stage change, or every ``interval``."""
        changed = stage != self.stage
        self.stage = stage
        self.fraction = max(self.fraction, self.overall(stage, fraction))
        if loss is not None:
            try:
                value = float(loss)
            except (TypeError, ValueError):
                value = math.nan
            self.loss = value if math.isfinite(value) else self.loss
        now = self.clock()
        if not (force or changed or now - self._last_write >= self.interval):
            return
        self._last_write = now
        if self._write():
            raise Cancelled(f"job {self.job_id} was cancelled")

    def _write(self) -> bool:
        from registry import jobs

        try:
            with self.session_factory() as session:
                stop = jobs.update_progress(
                    session, self.job_id, stage=self.stage, progress=self.fraction, loss=self.loss
                )
        except SQLAlchemyError as exc:
            log.warning("job %s: progress not recorded (%s)", self.job_id, exc.__class__.__name__)
            return False
        self.writes += 1
        return bool(stop)


class Heartbeat:
    """Refreshes a running job's ``heartbeat_at`` every ``interval`` seconds in a thread.

    ``stop_requested`` becomes True once the row says the job should stop (cancel), which
    the next :class:`JobProgress` write also notices.
    """

    def __init__(self, session_factory: SessionFactory, job_id: str, interval: float) -> None:
        self.session_factory = session_factory
        self.job_id = str(job_id)
        self.interval = max(0.05, float(interval))
        self.stop_requested = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Heartbeat:
        self._thread = threading.Thread(target=self._loop, name="ld3-heartbeat", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        from registry import jobs

        while not self._stop.wait(self.interval):
            try:
                with self.session_factory() as session:
                    self.stop_requested = jobs.heartbeat(session, self.job_id) or False
            except SQLAlchemyError as exc:
                log.warning("job %s: heartbeat failed (%s)", self.job_id, exc.__class__.__name__)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
