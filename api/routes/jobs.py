"""``/jobs``: submit, read, list, cancel, and the per-job report files."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import HTTPBearer
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.deps import (
    LimitQuery,
    OffsetQuery,
    get_dispatcher,
    get_session,
    get_settings,
    page_bounds,
    page_links,
)
from api.dispatch import Dispatcher
from api.problems import Problem
from api.schemas import JobCreate, JobOut, JobPage
from api.serialize import job_out, job_url
from api.validation import field_error, spec_problem
from ld3_core.spec import JobKind, JobSpec, JobState, SpecError
from registry.artifacts import get_artifact, resolve_path
from registry.catalog import get_model
from registry.jobs import create_job, delete_job, get_job, list_jobs, request_cancel
from registry.orm import (
    ARTIFACT_FD_PLOT_PNG,
    ARTIFACT_GRID_PNG,
    ARTIFACT_REPORT_JSON,
    Artifact,
    Job,
    Schedule,
)
from registry.schedules import get_schedule_for_job
from registry.settings import Settings

log = logging.getLogger("ld3.api")
router = APIRouter(tags=["jobs"])
bearer = HTTPBearer(auto_error=False, description="LD3_API_TOKEN (needed when set)")

SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
DispatcherDep = Annotated[Dispatcher, Depends(get_dispatcher)]
PROBLEM = {"content": {"application/problem+json": {}}}


def _render(session: Session, job: Job) -> dict:
    schedule = get_schedule_for_job(session, job.id)
    kinds = set(session.scalars(select(Artifact.kind).where(Artifact.job_id == job.id)).all())
    return job_out(job, schedule, kinds)


def _require_job(session: Session, job_id: str) -> Job:
    job = get_job(session, job_id)
    if job is None:
        raise Problem(404, f"job {job_id!r} does not exist", slug="not-found")
    return job


@router.post(
    "/jobs",
    status_code=202,
    response_model=JobOut,
    dependencies=[Depends(bearer)],
    responses={401: PROBLEM, 413: PROBLEM, 422: PROBLEM, 503: PROBLEM},
    summary="Submit a schedule-learning job",
)
def submit_job(
    body: JobCreate,
    session: SessionDep,
    settings: SettingsDep,
    dispatcher: DispatcherDep,
    idempotency_key: Annotated[
        str | None, Header(alias="Idempotency-Key", min_length=1, max_length=255)
    ] = None,
) -> JSONResponse:
    """Validate, store a ``queued`` job, hand it to the dispatcher; 202 + ``Location``.

    With ``Idempotency-Key``, retrying the same body returns the same job (header
    ``Idempotent-Replayed: true``); the same key with another body is a 422. If the job
    cannot be queued (broker down) the row is removed and the answer is 503.
    """
    try:
        spec = JobSpec.parse(body.kind, body.model, body.solver, body.nfe, body.order,
                             body.options, max_nfe=settings.max_nfe)
    except SpecError as exc:
        raise spec_problem(exc, "pointer") from None
    if get_model(session, spec.request.model) is None:
        raise Problem(
            422, f"unknown model {body.model!r}; see GET /models or register it first",
            slug="validation-error",
            errors=[field_error("model", f"unknown model {body.model!r}", "pointer")],
        )
    job, created = create_job(session, spec, idempotency_key=idempotency_key)
    if created:
        try:
            dispatcher.submit(job.id)
        except Exception as exc:  # noqa: BLE001 - any failure means "not queued"
            log.warning("dispatch of job %s failed: %s", job.id, exc)
            delete_job(session, job.id)
            raise Problem(
                503, f"the job could not be queued (broker unavailable?): {exc}",
                slug="broker-unavailable", headers={"Retry-After": "5"},
            ) from exc
    fresh = get_job(session, job.id) or job
    headers = {"Location": job_url(job.id)}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(
        JobOut.model_validate(_render(session, fresh)).model_dump(mode="json"),
        status_code=202,
        headers=headers,
    )


@router.get("/jobs", response_model=JobPage, summary="List jobs (newest first)")
def list_all_jobs(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    state: JobState | None = None,
    model: Annotated[str | None, Query(max_length=255)] = None,
    kind: JobKind | None = None,
    limit: LimitQuery = None,
    offset: OffsetQuery = 0,
) -> dict:
    """Jobs filtered by ``state``/``model``/``kind``, paginated with ``limit``/``offset``
    (``next``/``prev`` links)."""
    lim, off = page_bounds(settings, limit, offset)
    jobs, total = list_jobs(session, state=state, model_id=model, kind=kind, limit=lim, offset=off)
    ids = [j.id for j in jobs]
    schedules = {
        s.job_id: s for s in session.scalars(select(Schedule).where(Schedule.job_id.in_(ids)))
    } if ids else {}
    kinds: dict[str, set[str]] = {}
    if ids:
        for job_id, kind_name in session.execute(
            select(Artifact.job_id, Artifact.kind).where(Artifact.job_id.in_(ids))
        ):
            kinds.setdefault(job_id, set()).add(kind_name)
    nxt, prev = page_links(request, total, lim, off)
    return {
        "items": [job_out(j, schedules.get(j.id), kinds.get(j.id, set())) for j in jobs],
        "total": total,
        "limit": lim,
        "offset": off,
        "next": nxt,
        "prev": prev,
    }


@router.get("/jobs/{job_id}", response_model=JobOut, responses={404: PROBLEM},
            summary="A job's state and progress")
def read_job(job_id: str, session: SessionDep) -> dict:
    """State, stage, progress fraction, current loss, error, timestamps and links (result
    schedule and report once published)."""
    return _render(session, _require_job(session, job_id))


@router.post(
    "/jobs/{job_id}/cancel",
    response_model=JobOut,
    dependencies=[Depends(bearer)],
    responses={202: {"model": JobOut}, 404: PROBLEM, 409: PROBLEM},
    summary="Cancel a job",
)
def cancel_job(job_id: str, session: SessionDep, dispatcher: DispatcherDep) -> JSONResponse:
    """A queued job is cancelled at once (200); a running one is asked to stop (202, state
    stays ``running`` with ``cancel_requested`` until the worker stops). A finished job: 409.
    """
    job = request_cancel(session, job_id)
    cancel = getattr(dispatcher, "cancel", None)
    if callable(cancel):
        try:
            cancel(job_id)
        except Exception as exc:  # noqa: BLE001 - the database flag is what counts
            log.warning("dispatcher.cancel(%s) failed: %s", job_id, exc)
    status = 200 if job.state == "cancelled" else 202
    return JSONResponse(
        JobOut.model_validate(_render(session, job)).model_dump(mode="json"), status_code=status
    )


def _artifact_file(
    session: Session, settings: Settings, job_id: str, kind: str, what: str
) -> Path:
    _require_job(session, job_id)
    art = get_artifact(session, job_id, kind)
    if art is None:
        raise Problem(404, f"job {job_id} has no {what} (yet)", slug="not-found")
    path = resolve_path(settings, art.path)
    if not path.is_file():
        raise Problem(404, f"the {what} file of job {job_id} is missing", slug="not-found")
    return path


@router.get("/jobs/{job_id}/report", responses={404: PROBLEM}, summary="Job report (JSON)")
def read_report(job_id: str, session: SessionDep, settings: SettingsDep) -> FileResponse:
    """The report JSON: every heuristic, the optimized schedule(s), scores, extractor name."""
    path = _artifact_file(session, settings, job_id, ARTIFACT_REPORT_JSON, "report")
    return FileResponse(path, media_type="application/json")


@router.get("/jobs/{job_id}/report/grid.png", responses={404: PROBLEM},
            summary="Sample grid PNG (one row per schedule)")
def read_grid(job_id: str, session: SessionDep, settings: SettingsDep) -> FileResponse:
    """The sample-grid PNG of the report."""
    path = _artifact_file(session, settings, job_id, ARTIFACT_GRID_PNG, "sample grid")
    return FileResponse(path, media_type="image/png")


@router.get("/jobs/{job_id}/report/fd_vs_nfe.png", responses={404: PROBLEM},
            summary="FD-vs-NFE plot PNG")
def read_fd_plot(job_id: str, session: SessionDep, settings: SettingsDep) -> FileResponse:
    """The FD-vs-NFE plot PNG of the report."""
    path = _artifact_file(session, settings, job_id, ARTIFACT_FD_PLOT_PNG, "FD-vs-NFE plot")
    return FileResponse(path, media_type="image/png")
