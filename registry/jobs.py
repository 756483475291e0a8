"""Job repository: create (idempotent), read, list, cancel, and the worker's state transitions.

Every function takes a SQLAlchemy ``Session``. Write functions commit their own single
transaction (state changes use conditional ``UPDATE ... WHERE state IN (...)`` so two processes
never both win a transition) and return fresh ORM objects (the session is created with
``expire_on_commit=False``, so they stay readable after the commit).

State machine::

    queued --claim_job--> running --publish_result--> succeeded
       |                     |---mark_failed-------> failed
       |                     '---mark_cancelled----> cancelled   (after request_cancel)
       '--request_cancel----------------------------> cancelled   (never started)
"""

from __future__ import annotations

import hashlib
import json
import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ld3_core.spec import ACTIVE_STATES, JOB_STATES, JobSpec
from registry.errors import IdempotencyConflict, JobStateError, NotFound
from registry.orm import Artifact, Job, Schedule, utcnow
from registry.text import clean_text

MAX_ERROR_CHARS = 20_000


def request_hash(
    *, kind: str, model_id: str, solver: str, order: int, nfe: int, options: Mapping[str, Any]
) -> str:
    """SHA-256 hex digest of a job request (canonical JSON), compared on idempotent retries."""
    body = {
        "kind": kind,
        "model": model_id,
        "solver": solver,
        "order": int(order),
        "nfe": int(nfe),
        "options": dict(options),
    }
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def get_job(session: Session, job_id: str) -> Job | None:
    """The job with id ``job_id`` (fresh from the database), or None."""
    return session.get(Job, str(job_id), populate_existing=True)


def _require(session: Session, job_id: str) -> Job:
    job = get_job(session, job_id)
    if job is None:
        raise NotFound(f"job {job_id!r} does not exist")
    return job


def create_job(
    session: Session,
    spec: JobSpec,
    *,
    idempotency_key: str | None = None,
    job_id: str | None = None,
) -> tuple[Job, bool]:
    """Insert a ``queued`` job for ``spec`` (a validated :class:`ld3_core.spec.JobSpec`) and
    commit; returns ``(job, created)``.

    The options are stored as the client gave them (``exclude_unset``); the defaults they
    resolve to are recorded with the published schedule. With ``idempotency_key``: if a job
    with that key exists and was created from the same request (same kind/model/solver/order/
    nfe/options) it is returned with ``created=False``; a different request raises
    :class:`IdempotencyConflict`. Concurrent creations with one key are safe (unique index).
    ``job_id`` defaults to a new UUID4 string. Whether the model is in the catalog is the
    caller's check.
    """
    if not isinstance(spec, JobSpec):
        raise TypeError(f"spec must be a JobSpec, got {type(spec).__name__}")
    kind, req = spec.kind, spec.request
    model_id, solver, order, nfe = req.model, req.solver, req.order, req.nfe
    opts = spec.options.model_dump(mode="json", exclude_unset=True)
    digest = request_hash(
        kind=kind, model_id=model_id, solver=solver, order=order, nfe=nfe, options=opts
    )

    def existing_for_key() -> Job | None:
        if idempotency_key is None:
            return None
        job = session.scalar(
            select(Job).where(Job.idempotency_key == idempotency_key),
            execution_options={"populate_existing": True},
        )
        if job is not None and job.request_hash != digest:
            raise IdempotencyConflict(
                f"Idempotency-Key {idempotency_key!r} was already used with a different request"
            )
        return job

    found = existing_for_key()
    if found is not None:
        return found, False
    now = utcnow()
    job = Job(
        id=job_id or str(uuid.uuid4()),
        kind=kind,
        model_id=model_id,
        solver=solver,
        order=int(order),
        nfe=int(nfe),
        options=opts,
        state="queued",
        stage="queued",
        progress=0.0,
        cancel_requested=False,
        idempotency_key=idempotency_key,
        request_hash=digest,
        attempts=0,
        created_at=now,
        updated_at=now,
    )
    session.add(job)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        found = existing_for_key()
        if found is None:
            raise
        return found, False
    return job, True


def delete_job(session: Session, job_id: str) -> bool:
    """Delete a job (and, by cascade, its artifacts/schedule) and commit; True if it existed.

    Used by the API to undo a job whose dispatch failed (broker down), so no row stays.
    """
    job = session.get(Job, str(job_id))
    if job is None:
        return False
    session.delete(job)
    session.commit()
    return True


def list_jobs(
    session: Session,
    *,
    state: str | None = None,
    model_id: str | None = None,
    kind: str | None = None,
    limit: int = 20,
    offset: int = 0,
) -> tuple[list[Job], int]:
    """Jobs, newest first, filtered by ``state``/``model_id``/``kind``; returns (page, total)."""
    if state is not None and state not in JOB_STATES:
        raise ValueError(f"unknown state {state!r}; known: {', '.join(JOB_STATES)}")
    conds = []
    if state is not None:
        conds.append(Job.state == state)
    if model_id is not None:
        conds.append(Job.model_id == model_id)
    if kind is not None:
        conds.append(Job.kind == kind)
    total = session.scalar(select(func.count()).select_from(Job).where(*conds)) or 0
    rows = session.scalars(
        select(Job)
        .where(*conds)
        .order_by(Job.created_at.desc(), Job.id.desc())
        .limit(max(0, int(limit)))
        .offset(max(0, int(offset))),
        execution_options={"populate_existing": True},
    ).all()
    return list(rows), int(total)


@dataclass(frozen=True)
class JobView:
    """A job with what is shown next to it: its published schedule (None until it publishes)
    and the kinds of the artifacts recorded for it (``report_json``, ``grid_png``, ...)."""

    job: Job
    schedule: Schedule | None
    artifact_kinds: frozenset[str]


def job_views(session: Session, jobs: Sequence[Job]) -> list[JobView]:
    """:class:`JobView` of each of ``jobs`` (same order), with two queries for all of them."""
    ids = [j.id for j in jobs]
    if not ids:
        return []
    schedules = {
        s.job_id: s for s in session.scalars(select(Schedule).where(Schedule.job_id.in_(ids)))
    }
    kinds: dict[str, set[str]] = {}
    for job_id, kind in session.execute(
        select(Artifact.job_id, Artifact.kind).where(Artifact.job_id.in_(ids))
    ):
        kinds.setdefault(job_id, set()).add(kind)
    return [JobView(j, schedules.get(j.id), frozenset(kinds.get(j.id, ()))) for j in jobs]


def get_job_view(session: Session, job_id: str) -> JobView | None:
    """The :class:`JobView` of ``job_id`` (fresh from the database), or None."""
    job = get_job(session, job_id)
    return None if job is None else job_views(session, [job])[0]


def count_jobs(session: Session) -> int:
    """Number of job rows (tests check that rejected requests write nothing)."""
    return int(session.scalar(select(func.count()).select_from(Job)) or 0)


def _update(session: Session, job_id: str, *conds: Any, **values: Any) -> bool:
    result = session.execute(
        update(Job).where(Job.id == str(job_id), *conds).values(**values),
        execution_options={"synchronize_session": False},
    )
    return bool(result.rowcount)


def request_cancel(session: Session, job_id: str) -> Job:
    """Ask for a job to stop and commit; returns the fresh job.

    A ``queued`` job becomes ``cancelled`` at once (a worker that later receives it gets None
    from :func:`claim_job`); a ``running`` job gets ``cancel_requested=True`` and its worker
    stops at the next progress update (then calls :func:`mark_cancelled`). Cancelling a
    cancelled job is a no-op. Raises :class:`NotFound`, or :class:`JobStateError` for a
    ``succeeded``/``failed`` job.
    """
    now = utcnow()
    if _update(
        session, job_id, Job.state == "queued",
        state="cancelled", cancel_requested=True, stage="cancelled", finished_at=now,
    ):
        session.commit()
        return _require(session, job_id)
    if _update(session, job_id, Job.state == "running", cancel_requested=True):
        session.commit()
        return _require(session, job_id)
    session.rollback()
    job = _require(session, job_id)
    if job.state == "cancelled":
        return job
    raise JobStateError(f"job {job_id} already {job.state}; it cannot be cancelled")


def is_cancel_requested(session: Session, job_id: str) -> bool:
    """True when a cancel was requested for the job (or it no longer exists)."""
    value = session.scalar(select(Job.cancel_requested).where(Job.id == str(job_id)))
    return True if value is None else bool(value)


def claim_job(
    session: Session,
    job_id: str,
    worker: str | None = None,
    *,
    stale_after_s: float | None = None,
) -> Job | None:
    """Mark a job ``running`` for ``worker`` and commit; returns it, or None if it must not run.

    Takes a ``queued`` job, or re-takes a ``running`` one (a redelivered task after its worker
    died: ``attempts`` is incremented, ``started_at`` kept). With ``stale_after_s``, a running
    job whose heartbeat is newer than that many seconds is left to its live worker (None).
    Returns None when the job does not exist (e.g. deleted after a failed dispatch), is
    finished (succeeded/failed/cancelled), or had a cancel requested (it is then marked
    ``cancelled``).
    """
    now = utcnow()
    conds: list[Any] = [Job.state.in_(ACTIVE_STATES), Job.cancel_requested.is_(False)]
    if stale_after_s is not None:
        cutoff = now - timedelta(seconds=float(stale_after_s))
        conds.append(
            (Job.state == "queued") | Job.heartbeat_at.is_(None) | (Job.heartbeat_at < cutoff)
        )
    claimed = _update(
        session, job_id, *conds,
        state="running",
        stage="starting",
        started_at=func.coalesce(Job.started_at, now),
        attempts=Job.attempts + 1,
        worker=worker,
        heartbeat_at=now,
        error=None,
    )
    if claimed:
        session.commit()
        return get_job(session, job_id)
    session.rollback()
    job = get_job(session, job_id)
    if job is not None and job.state in ACTIVE_STATES and job.cancel_requested:
        mark_cancelled(session, job_id)
    return None


def update_progress(
    session: Session,
    job_id: str,
    *,
    stage: str | None = None,
    progress: float | None = None,
    loss: float | None = None,
) -> bool:
    """Record a running job's progress (and heartbeat) and commit; returns "should stop".

    ``stage`` is a short name (``teacher``, ``optimize``, ``score``, ``publish``), ``progress``
    the overall fraction in [0, 1] (clamped), ``loss`` the current loss (non-finite -> None);
    None leaves a field unchanged. Returns True when the worker should stop: a cancel was
    requested, or the job is no longer ``running`` (cancelled/failed elsewhere, or deleted).
    """
    values: dict[str, Any] = {"heartbeat_at": utcnow()}
    if stage is not None:
        values["stage"] = str(stage)[:64]
    if progress is not None:
        p = float(progress)
        values["progress"] = min(1.0, max(0.0, p)) if math.isfinite(p) else 0.0
    if loss is not None:
        f = float(loss)
        values["loss"] = f if math.isfinite(f) else None
    _update(session, job_id, Job.state == "running", **values)
    session.commit()
    row = session.execute(
        select(Job.state, Job.cancel_requested).where(Job.id == str(job_id))
    ).first()
    return row is None or row.state != "running" or bool(row.cancel_requested)


def heartbeat(session: Session, job_id: str) -> bool:
    """Refresh a running job's heartbeat only; same return value as :func:`update_progress`."""
    return update_progress(session, job_id)


def mark_failed(session: Session, job_id: str, error: str) -> Job:
    """Set a queued/running job ``failed`` with ``error`` and commit.

    ``error`` is cleaned (control characters and lone surrogates become ``?``, see
    :func:`registry.text.clean_text`) and truncated, so every backend can store it. A
    finished job (succeeded/failed/cancelled) is left as it is. Returns the fresh job;
    raises :class:`NotFound`.
    """
    _update(
        session, job_id, Job.state.in_(ACTIVE_STATES),
        state="failed", stage="failed", error=clean_text(error, MAX_ERROR_CHARS),
        finished_at=utcnow(),
    )
    session.commit()
    return _require(session, job_id)


def mark_cancelled(session: Session, job_id: str) -> Job:
    """Set a queued/running job ``cancelled`` and commit (a finished job is left as it is).

    Returns the fresh job; raises :class:`NotFound`.
    """
    _update(
        session, job_id, Job.state.in_(ACTIVE_STATES),
        state="cancelled", stage="cancelled", cancel_requested=True, finished_at=utcnow(),
    )
    session.commit()
    return _require(session, job_id)


def stale_jobs(session: Session, older_than_s: float) -> list[Job]:
    """Running jobs whose heartbeat is older than ``older_than_s`` seconds (lost workers)."""
    cutoff = utcnow() - timedelta(seconds=float(older_than_s))
    return list(
        session.scalars(
            select(Job)
            .where(Job.state == "running")
            .where(Job.heartbeat_at.is_(None) | (Job.heartbeat_at < cutoff))
            .order_by(Job.created_at)
        ).all()
    )


__all__ = [
    "JobStateError",
    "JobView",
    "claim_job",
    "count_jobs",
    "create_job",
    "delete_job",
    "get_job",
    "get_job_view",
    "heartbeat",
    "is_cancel_requested",
    "job_views",
    "list_jobs",
    "mark_cancelled",
    "mark_failed",
    "request_cancel",
    "request_hash",
    "stale_jobs",
    "update_progress",
]
