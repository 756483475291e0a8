"""Schedule repository: publish a job's result (one transaction, idempotent) and look them up.

A published schedule never changes. The *best* schedule of a key (model, solver, order, nfe)
is the one with the lowest ``score`` (an FD-like, lower-is-better number); schedules without
a score come after scored ones; ties go to the newest.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ld3_core.spec import ACTIVE_STATES
from registry.artifacts import _stage_artifact
from registry.errors import JobStateError, NotFound
from registry.orm import Job, Schedule, utcnow

_publications = 0


def local_publications() -> int:
    """How many schedules this process published so far (caches of this process compare it
    to notice a publication at once; other processes' are found by :func:`schedules_version`)."""
    return _publications


def schedules_version(session: Session) -> int:
    """A number that changes whenever a schedule is published: the largest schedule id
    (one index lookup). Published schedules are never updated, only added."""
    return int(session.scalar(select(func.max(Schedule.id))) or 0)


_BEST_ORDER = (
    Schedule.score.is_(None),
    Schedule.score.asc(),
    Schedule.created_at.desc(),
    Schedule.id.desc(),
)


def _floats(name: str, values: Any, length: int | None = None) -> list[float]:
    """A plain list of finite floats from a list/tuple/tensor/array; ValueError otherwise."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().double().tolist()
    elif hasattr(values, "tolist"):
        values = values.tolist()
    if not isinstance(values, Sequence) or isinstance(values, (str, bytes)):
        raise ValueError(f"{name} must be a 1-D sequence of numbers")
    try:
        out = [float(v) for v in values]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a 1-D sequence of numbers") from exc
    if not all(math.isfinite(v) for v in out):
        raise ValueError(f"{name} must be finite")
    if length is not None and len(out) != length:
        raise ValueError(f"{name} must have nfe + 1 = {length} entries, got {len(out)}")
    return out


def _decreasing(name: str, values: list[float]) -> None:
    if any(b >= a for a, b in zip(values, values[1:], strict=False)):
        raise ValueError(f"{name} must be strictly decreasing")


def sigmas_from_noise_schedule(noise_schedule: Mapping[str, Any], timesteps: list[float]):
    """k-diffusion sigmas ``sigma_t / alpha_t`` of ``timesteps`` (t) for a schedule config."""
    import torch

    from ld3_core.schedules import from_config

    sched = from_config(dict(noise_schedule))
    return sched.kd_sigma(torch.tensor(timesteps, dtype=torch.float64)).tolist()


def get_schedule_for_job(session: Session, job_id: str) -> Schedule | None:
    """The schedule published by ``job_id``, or None."""
    return session.scalar(select(Schedule).where(Schedule.job_id == str(job_id)))


def publish_result(
    session: Session,
    job_id: str,
    *,
    timesteps: Sequence[float] | Any,
    sigmas: Sequence[float] | Any | None = None,
    model_timesteps: Sequence[float] | Any | None = None,
    score: float | None = None,
    metric: str | None = None,
    extractor: str | None = None,
    noise_schedule: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    artifacts: Mapping[str, str | Path] | None = None,
) -> Schedule:
    """Publish a job's schedule + report artifacts and set the job ``succeeded``: ONE commit.

    Idempotent: if the job already published, its existing schedule is returned and nothing
    is written (so a re-run job never creates a second schedule row; concurrent publishers
    are serialized by the unique ``schedules.job_id`` index).

    Takes ``timesteps`` (``nfe + 1`` strictly decreasing solver times t, list/tensor/array),
    optional ``model_timesteps`` (decoupled network times, same length), ``sigmas`` (k-diffusion
    sigmas of ``timesteps``; computed from ``noise_schedule`` when omitted), ``score`` (lower is
    better, e.g. FD) with its ``metric`` name (e.g. ``"fd"``) and ``extractor`` name,
    ``noise_schedule`` (the model's ``NoiseSchedule.config()``: strongly recommended, the API
    needs it to export and interpolate), ``extra`` (free JSON, e.g. heuristic scores), and
    ``artifacts`` mapping kind -> path (``report_json``, ``grid_png``, ``fd_plot_png``, ...;
    relative to the artifacts folder or absolute).

    Raises :class:`NotFound` for an unknown job, :class:`JobStateError` when the job is
    failed/cancelled, ``ValueError`` for malformed vectors (nothing is written then).
    Returns the Schedule row.
    """
    existing = get_schedule_for_job(session, job_id)
    if existing is not None:
        session.rollback()
        return existing
    job = session.scalar(
        select(Job).where(Job.id == str(job_id)).with_for_update(),
        execution_options={"populate_existing": True},
    )
    if job is None:
        session.rollback()
        raise NotFound(f"job {job_id!r} does not exist")
    existing = get_schedule_for_job(session, job_id)
    if existing is not None:
        session.rollback()
        return existing
    if job.state not in ACTIVE_STATES:
        state = job.state
        session.rollback()
        raise JobStateError(f"job {job_id} is {state}; it cannot publish a result")
    n = job.nfe + 1
    try:
        ts = _floats("timesteps", timesteps, n)
        _decreasing("timesteps", ts)
        mts = None if model_timesteps is None else _floats("model_timesteps", model_timesteps, n)
        if sigmas is None:
            if noise_schedule is None:
                raise ValueError("give sigmas or noise_schedule")
            sigmas = sigmas_from_noise_schedule(noise_schedule, ts)
        sig = _floats("sigmas", sigmas, n)
        sc = None if score is None else float(score)
        if sc is not None and not math.isfinite(sc):
            sc = None
    except ValueError:
        session.rollback()
        raise
    now = utcnow()
    row = Schedule(
        model_id=job.model_id,
        solver=job.solver,
        order=job.order,
        nfe=job.nfe,
        kind=job.kind,
        timesteps=ts,
        model_timesteps=mts,
        sigmas=sig,
        score=sc,
        metric=metric,
        extractor=extractor,
        noise_schedule=None if noise_schedule is None else dict(noise_schedule),
        extra=dict(extra or {}),
        job_id=job.id,
        created_at=now,
    )
    session.add(row)
    for kind, path in (artifacts or {}).items():
        _stage_artifact(session, job.id, kind, path)
    job.state = "succeeded"
    job.stage = "published"
    job.progress = 1.0
    job.finished_at = now
    job.heartbeat_at = now
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        existing = get_schedule_for_job(session, job_id)
        if existing is None:
            raise
        return existing
    global _publications
    _publications += 1
    return row


def get_schedule(session: Session, schedule_id: int) -> Schedule | None:
    """The schedule with primary key ``schedule_id``, or None."""
    return session.get(Schedule, int(schedule_id))


def best_schedule(
    session: Session, model_id: str, solver: str, order: int, nfe: int
) -> Schedule | None:
    """Best published schedule for the key (lowest score; unscored last; tie -> newest)."""
    return session.scalars(
        select(Schedule)
        .where(
            Schedule.model_id == model_id,
            Schedule.solver == solver,
            Schedule.order == int(order),
            Schedule.nfe == int(nfe),
        )
        .order_by(*_BEST_ORDER)
        .limit(1)
    ).first()


def best_schedules_by_nfe(
    session: Session, model_id: str, solver: str, order: int
) -> dict[int, Schedule]:
    """For one model/solver/order, the best schedule of every NFE that has one: {nfe: row}."""
    rows = session.scalars(
        select(Schedule)
        .where(
            Schedule.model_id == model_id,
            Schedule.solver == solver,
            Schedule.order == int(order),
        )
        .order_by(Schedule.nfe, *_BEST_ORDER)
    ).all()
    best: dict[int, Schedule] = {}
    for row in rows:
        best.setdefault(row.nfe, row)
    return best


def nearest_schedule(
    session: Session, model_id: str, solver: str, order: int, nfe: int
) -> Schedule | None:
    """The best schedule of the learned NFE closest to ``nfe`` (tie -> the larger NFE).

    Used as the source of an interpolated schedule; None when the model/solver/order has no
    published schedule at all.
    """
    best = best_schedules_by_nfe(session, model_id, solver, order)
    if not best:
        return None
    source = min(best, key=lambda k: (abs(k - int(nfe)), -k))
    return best[source]


def list_schedules(
    session: Session,
    *,
    model_id: str | None = None,
    solver: str | None = None,
    order: int | None = None,
    nfe: int | None = None,
    limit: int = 20,
    offset: int = 0,
) -> tuple[list[Schedule], int]:
    """Published schedules, newest first, with optional filters; returns (page, total)."""
    conds = []
    if model_id is not None:
        conds.append(Schedule.model_id == model_id)
    if solver is not None:
        conds.append(Schedule.solver == solver)
    if order is not None:
        conds.append(Schedule.order == int(order))
    if nfe is not None:
        conds.append(Schedule.nfe == int(nfe))
    total = session.scalar(select(func.count()).select_from(Schedule).where(*conds)) or 0
    rows = session.scalars(
        select(Schedule)
        .where(*conds)
        .order_by(Schedule.created_at.desc(), Schedule.id.desc())
        .limit(max(0, int(limit)))
        .offset(max(0, int(offset)))
    ).all()
    return list(rows), int(total)
