"""ORM rows -> JSON-ready dicts, and the URLs the API links to."""

from __future__ import annotations

from typing import Any

from ld3_client.urls import job_path, schedule_path
from ld3_core.spec import ACTIVE_STATES, JOB_STAGES, stage_fraction
from registry.orm import (
    ARTIFACT_FD_PLOT_PNG,
    ARTIFACT_GRID_PNG,
    ARTIFACT_REPORT_JSON,
    ARTIFACT_SCHEDULE_PNG,
    Job,
    Schedule,
    utc,
)


def schedule_key_url(model: str, solver: str, nfe: int, order: int) -> str:
    """``/schedules/{model}/{solver}/{nfe}?order=N`` with the model id's ``/`` and ``:`` kept."""
    return f"{schedule_path(model, solver, nfe)}?order={int(order)}"


def schedule_id_url(schedule_id: int) -> str:
    """Immutable URL of one published schedule."""
    return f"/schedules/id/{int(schedule_id)}"


def job_url(job_id: str) -> str:
    """URL of a job."""
    return job_path(job_id)


def stage_progress(kind: str, stage: str | None, progress: float) -> float | None:
    """The fraction (0..1) of a job's current stage done, from its overall ``progress`` and
    the stage weights of its kind (:data:`ld3_core.spec.JOB_STAGES`); None outside those
    stages (``queued``, ``starting``, ``published``, ``failed``, ``cancelled``)."""
    stages = JOB_STAGES.get(kind)
    return stage_fraction(stages, stage, progress) if stages else None


def report_page_url(job_id: str) -> str:
    """URL of a job's HTML report page (HTML whatever the ``Accept`` header)."""
    return f"{job_url(job_id)}/report?format=html"


def job_out(job: Job, schedule: Schedule | None, artifact_kinds: set[str]) -> dict[str, Any]:
    """A job as the API returns it (see ``api.schemas.JobOut``).

    ``links``: ``self``, ``report_html`` (the report page; while the job runs it shows the
    progress), ``cancel`` while queued/running, ``result`` and ``schedule`` once published,
    and the report files that exist: ``report`` (JSON for API clients, the page for
    browsers), ``report_json``, ``report_grid``, ``report_fd_vs_nfe``, ``report_schedule``.
    """
    links = {"self": job_url(job.id), "report_html": report_page_url(job.id)}
    if job.state in ACTIVE_STATES:
        links["cancel"] = f"{job_url(job.id)}/cancel"
    if schedule is not None:
        links["result"] = schedule_id_url(schedule.id)
        links["schedule"] = schedule_key_url(job.model_id, job.solver, job.nfe, job.order)
    if ARTIFACT_REPORT_JSON in artifact_kinds:
        links["report"] = f"{job_url(job.id)}/report"
        links["report_json"] = f"{job_url(job.id)}/report.json"
    if ARTIFACT_GRID_PNG in artifact_kinds:
        links["report_grid"] = f"{job_url(job.id)}/report/grid.png"
    if ARTIFACT_FD_PLOT_PNG in artifact_kinds:
        links["report_fd_vs_nfe"] = f"{job_url(job.id)}/report/fd_vs_nfe.png"
    if ARTIFACT_SCHEDULE_PNG in artifact_kinds:
        links["report_schedule"] = f"{job_url(job.id)}/report/schedule.png"
    return {
        "id": job.id,
        "kind": job.kind,
        "model": job.model_id,
        "solver": job.solver,
        "order": job.order,
        "nfe": job.nfe,
        "options": job.options or {},
        "state": job.state,
        "stage": job.stage,
        "progress": float(job.progress or 0.0),
        "stage_progress": stage_progress(job.kind, job.stage, float(job.progress or 0.0)),
        "loss": job.loss,
        "error": job.error,
        "cancel_requested": bool(job.cancel_requested),
        "attempts": int(job.attempts or 0),
        "worker": job.worker,
        "created_at": utc(job.created_at),
        "updated_at": utc(job.updated_at),
        "started_at": utc(job.started_at),
        "finished_at": utc(job.finished_at),
        "heartbeat_at": utc(job.heartbeat_at),
        "schedule_id": schedule.id if schedule is not None else None,
        "links": links,
    }


def job_settings(extra: dict[str, Any]) -> dict[str, Any] | None:
    """What the job that made a schedule ran with, defaults and variants resolved:
    ``options`` (every job option), ``optimize`` (the optimizer's settings), ``teacher``,
    ``trust_region`` (p, init, variant) and ``ld3`` (the hyper-parameters of the first LD3
    run); None for rows published without them."""
    if "resolved_options" not in extra:
        return None
    runs = extra.get("ld3_runs") or {}
    first = next(iter(runs.values()), {}) if isinstance(runs, dict) else {}
    return {
        "options": extra.get("resolved_options"),
        "optimize": extra.get("settings"),
        "teacher": extra.get("teacher"),
        "trust_region": extra.get("trust_region"),
        "ld3": first.get("config") if isinstance(first, dict) else None,
    }


def schedule_out(row: Schedule) -> dict[str, Any]:
    """A published schedule in the native format (see ``api.schemas.ScheduleOut``)."""
    links = {
        "self": schedule_key_url(row.model_id, row.solver, row.nfe, row.order),
        "canonical": schedule_id_url(row.id),
        "job": job_url(row.job_id),
        "report_html": report_page_url(row.job_id),
    }
    extra = row.extra if isinstance(row.extra, dict) else {}
    gain = extra.get("gain") if isinstance(extra.get("gain"), dict) else None
    return {
        "model": row.model_id,
        "solver": row.solver,
        "order": row.order,
        "nfe": row.nfe,
        "kind": row.kind,
        "source": extra.get("source") or row.kind,
        "format": "native",
        "timesteps": list(row.timesteps),
        "model_timesteps": None if row.model_timesteps is None else list(row.model_timesteps),
        "sigmas": list(row.sigmas),
        "score": row.score,
        "score_ci": extra.get("fd_ci"),
        "metric": row.metric,
        "extractor": row.extractor,
        "best_heuristic": extra.get("best_heuristic"),
        "ratio_to_best_heuristic": None if gain is None else gain.get("ratio"),
        "ratio_ci": None if gain is None else gain.get("ratio_ci"),
        "noise_schedule": (row.noise_schedule or {}).get("name"),
        "settings": job_settings(extra),
        "job_id": row.job_id,
        "schedule_id": row.id,
        "created_at": utc(row.created_at),
        "interpolated": False,
        "source_nfe": None,
        "source_schedule_id": None,
        "links": links,
    }
