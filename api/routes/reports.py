"""``/jobs/{id}/report``: a job's report as an HTML page or JSON, and its PNG figures.

``GET /jobs/{id}/report`` is negotiated (:mod:`api.negotiation`): HTML for a browser, JSON
for API clients (no ``Accept``, ``*/*``, ``application/json``); ``?format=html|json``
overrides the header. ``GET /jobs/{id}/report.json`` is always the JSON.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Response
from fastapi.responses import FileResponse, HTMLResponse
from sqlalchemy.orm import Session

from api.deps import PROBLEM, SessionDep, SettingsDep
from api.negotiation import prefers_html
from api.problems import Problem
from api.report_page import render_report_page
from api.routes.jobs import job_body, require_job_view
from registry.artifacts import get_artifact, resolve_path
from registry.jobs import get_job
from registry.orm import (
    ARTIFACT_FD_PLOT_PNG,
    ARTIFACT_GRID_PNG,
    ARTIFACT_REPORT_JSON,
    ARTIFACT_SCHEDULE_PNG,
)
from registry.settings import Settings

log = logging.getLogger("ld3.api")
router = APIRouter(tags=["jobs"])

PAGE_IMAGES = {"grid": ARTIFACT_GRID_PNG, "fd_vs_nfe": ARTIFACT_FD_PLOT_PNG,
               "schedule": ARTIFACT_SCHEDULE_PNG}
"""Image of the report page -> the artifact kind that holds it."""
VARY = {"Vary": "Accept"}
FormatQuery = Annotated[
    Literal["json", "html"] | None,
    Query(alias="format", description="json | html (default: by the Accept header)"),
]
REPORT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The report JSON, or its HTML page",
          "content": {"application/json": {"schema": {"type": "object"}},
                      "text/html": {"schema": {"type": "string"}}}},
    404: PROBLEM,
}


def _artifact_path(session: Session, settings: Settings, job_id: str, kind: str) -> Path | None:
    """The existing file of the job's artifact ``kind``, or None."""
    art = get_artifact(session, job_id, kind)
    if art is None:
        return None
    path = resolve_path(settings, art.path)
    return path if path.is_file() else None


def _artifact_file(
    session: Session, settings: Settings, job_id: str, kind: str, what: str
) -> Path:
    """The file of the job's artifact ``kind``; a 404 problem naming ``what`` otherwise."""
    if get_job(session, job_id) is None:
        raise Problem(404, f"job {job_id!r} does not exist", slug="not-found")
    art = get_artifact(session, job_id, kind)
    if art is None:
        raise Problem(404, f"job {job_id} has no {what} (yet)", slug="not-found")
    path = resolve_path(settings, art.path)
    if not path.is_file():
        raise Problem(404, f"the {what} file of job {job_id} is missing", slug="not-found")
    return path


def _read_report(path: Path | None) -> dict[str, Any] | None:
    """The report JSON at ``path`` as a dict, or None when absent or unreadable (logged)."""
    if path is None:
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("report %s is unreadable: %s", path, exc)
        return None
    return data if isinstance(data, dict) else None


def _page(session: Session, settings: Settings, job_id: str) -> HTMLResponse:
    """The report page of ``job_id`` (see :func:`api.report_page.render_report_page`)."""
    view = require_job_view(session, job_id)
    job = job_body(view).model_dump(mode="json")
    report = None
    if view.job.state == "succeeded":
        report = _read_report(_artifact_path(session, settings, job_id, ARTIFACT_REPORT_JSON))
    images = [name for name, kind in PAGE_IMAGES.items()
              if report is not None and _artifact_path(session, settings, job_id, kind)]
    return HTMLResponse(render_report_page(job, report, images), headers=VARY)


@router.get("/jobs/{job_id}/report", responses=REPORT_RESPONSES,
            summary="Job report: HTML page for browsers, JSON otherwise")
def read_report(
    job_id: str,
    session: SessionDep,
    settings: SettingsDep,
    fmt: FormatQuery = None,
    accept: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Response:
    """The job's report. **HTML** (``?format=html``, or an ``Accept`` header that prefers
    ``text/html`` to ``application/json``, as browsers send): the winner and its source with
    the ratio to the best heuristic and its 95 % interval, the FD table of every candidate
    with intervals and the noise floor, the sample grid, the FD-vs-NFE and schedule plots; a
    job without a report yet gets a page with its state and progress (200). **JSON**
    otherwise (same as ``/jobs/{id}/report.json``): 404 until the report exists."""
    html = fmt == "html" or (fmt is None and prefers_html(accept))
    if html:
        return _page(session, settings, job_id)
    path = _artifact_file(session, settings, job_id, ARTIFACT_REPORT_JSON, "report")
    return FileResponse(path, media_type="application/json", headers=VARY)


@router.get("/jobs/{job_id}/report.json", summary="Job report (JSON)", responses={
    200: {"content": {"application/json": {"schema": {"type": "object"}}}}, 404: PROBLEM})
def read_report_json(job_id: str, session: SessionDep, settings: SettingsDep) -> FileResponse:
    """The report JSON: the winner, every candidate's FD with its interval, the gain over the
    best heuristic, the noise floor, the splits and the settings."""
    path = _artifact_file(session, settings, job_id, ARTIFACT_REPORT_JSON, "report")
    return FileResponse(path, media_type="application/json")


@router.get("/jobs/{job_id}/report/grid.png", responses={404: PROBLEM},
            summary="Sample grid PNG (teacher row first, one row per schedule)")
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


@router.get("/jobs/{job_id}/report/schedule.png", responses={404: PROBLEM},
            summary="Schedule plot PNG (time steps of the candidates)")
def read_schedule_plot(job_id: str, session: SessionDep, settings: SettingsDep) -> FileResponse:
    """The schedule plot PNG of the report: the published time steps, the best heuristic's
    and the other candidates'."""
    path = _artifact_file(session, settings, job_id, ARTIFACT_SCHEDULE_PNG, "schedule plot")
    return FileResponse(path, media_type="image/png")
