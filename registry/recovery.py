"""Lost-worker recovery in the registry: ``running`` jobs whose heartbeat stopped.

A running job's worker refreshes ``heartbeat_at`` every ``LD3_LEASE_SECONDS / 3``. When the
worker dies (SIGKILL, OOM, host lost) the heartbeat stops; :func:`requeue_stale_job` then
puts the job back to ``queued`` (stage ``requeued``) so the caller can dispatch it again; the
next worker resumes it from its checkpoints. The update is conditional (still ``running``,
heartbeat still old), so of several reapers exactly one wins, and a worker whose heartbeat
came back in the meantime keeps its job. A job whose cancel was requested is marked
``cancelled`` instead: a cancel completes even when its worker is gone.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update
from sqlalchemy.orm import Session

from registry.jobs import stale_jobs
from registry.orm import Job, utcnow


def stale_job_ids(session: Session, older_than_s: float) -> list[str]:
    """Ids of ``running`` jobs whose heartbeat is older than ``older_than_s`` seconds."""
    ids = [str(job.id) for job in stale_jobs(session, older_than_s)]
    session.rollback()
    return ids


def requeue_stale_job(session: Session, job_id: str, older_than_s: float) -> str | None:
    """Requeue job ``job_id`` if it is still running with a heartbeat older than
    ``older_than_s`` seconds, and commit.

    Returns ``"queued"`` (requeued: dispatch it again), ``"cancelled"`` (a cancel was
    pending), or None when the job is no longer stale (finished, heartbeat renewed, or
    another reaper got it first).
    """
    cutoff = utcnow() - timedelta(seconds=float(older_than_s))
    stale = (Job.id == str(job_id), Job.state == "running",
             Job.heartbeat_at.is_(None) | (Job.heartbeat_at < cutoff))
    cancelled = session.execute(
        update(Job).where(*stale, Job.cancel_requested.is_(True)).values(
            state="cancelled", stage="cancelled", finished_at=utcnow()),
        execution_options={"synchronize_session": False},
    ).rowcount
    if cancelled:
        session.commit()
        return "cancelled"
    requeued = session.execute(
        update(Job).where(*stale).values(state="queued", stage="requeued", worker=None),
        execution_options={"synchronize_session": False},
    ).rowcount
    session.commit()
    return "queued" if requeued else None


__all__ = ["requeue_stale_job", "stale_job_ids"]
