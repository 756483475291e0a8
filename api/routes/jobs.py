"""``/jobs``: submit, read, list and cancel jobs (the report is in :mod:`api.routes.reports`)."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from sqlalchemy.orm import Session

from api.deps import AUTH, PROBLEM, DispatcherDep, PageDep, SessionDep, SettingsDep
from api.pagination import Page, make_page
from api.problems import Problem
from api.schemas import JobCreate, JobOut
from api.serialize import job_out, job_url
from api.validation import field_error, spec_problem
from ld3_core.spec import JobKind, JobSpec, JobState, SpecError
from registry.catalog import get_model
from registry.jobs import (
    JobView,
    create_job,
    delete_job,
    get_job_view,
    job_views,
    list_jobs,
    request_cancel,
)

log = logging.getLogger("ld3.api")
router = APIRouter(tags=["jobs"])


def job_body(view: JobView) -> JobOut:
    """The ``GET /jobs/{id}`` body of a :class:`JobView`."""
    return JobOut.model_validate(job_out(view.job, view.schedule, set(view.artifact_kinds)))


def require_job_view(session: Session, job_id: str) -> JobView:
    """The :class:`JobView` of ``job_id``; a 404 problem when there is no such job."""
    view = get_job_view(session, job_id)
    if view is None:
        raise Problem(404, f"job {job_id!r} does not exist", slug="not-found")
    return view


@router.post(
    "/jobs",
    status_code=202,
    response_model=JobOut,
    dependencies=AUTH,
    responses={401: PROBLEM, 413: PROBLEM, 422: PROBLEM, 503: PROBLEM},
    summary="Submit a schedule-learning job",
)
def submit_job(
    body: JobCreate,
    session: SessionDep,
    settings: SettingsDep,
    dispatcher: DispatcherDep,
    response: Response,
    idempotency_key: Annotated[
        str | None, Header(alias="Idempotency-Key", min_length=1, max_length=255)
    ] = None,
) -> JobOut:
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
    response.headers["Location"] = job_url(job.id)
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    return job_body(get_job_view(session, job.id) or JobView(job, None, frozenset()))


@router.get("/jobs", response_model=Page[JobOut], summary="List jobs (newest first)")
def list_all_jobs(
    request: Request,
    session: SessionDep,
    page: PageDep,
    state: JobState | None = None,
    model: Annotated[str | None, Query(max_length=255)] = None,
    kind: JobKind | None = None,
) -> Page[JobOut]:
    """Jobs filtered by ``state``/``model``/``kind``, paginated with ``limit``/``offset``
    (``next``/``prev`` links)."""
    jobs, total = list_jobs(session, state=state, model_id=model, kind=kind,
                            limit=page.limit, offset=page.offset)
    return make_page(request, [job_body(v) for v in job_views(session, jobs)], total, page)


@router.get("/jobs/{job_id}", response_model=JobOut, responses={404: PROBLEM},
            summary="A job's state and progress")
def read_job(job_id: str, session: SessionDep) -> JobOut:
    """State, stage, progress fraction, current loss, error, timestamps and links (result
    schedule and report once published, the report page always)."""
    return job_body(require_job_view(session, job_id))


@router.post(
    "/jobs/{job_id}/cancel",
    response_model=JobOut,
    dependencies=AUTH,
    responses={202: {"model": JobOut}, 404: PROBLEM, 409: PROBLEM},
    summary="Cancel a job",
)
def cancel_job(
    job_id: str, session: SessionDep, dispatcher: DispatcherDep, response: Response
) -> JobOut:
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
    if job.state != "cancelled":
        response.status_code = 202
    return job_body(job_views(session, [job])[0])
