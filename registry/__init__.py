"""The registry: settings, database access and repository functions shared by api/ and worker/.

Knows nothing of HTTP or Celery. Typical worker use::

    from registry import db, claim_job, update_progress, publish_result, mark_failed
    with db.session_scope(settings) as s:
        job = claim_job(s, job_id, worker="host-1")

See ``docs/api.md`` ("Repository functions") for the full list.
"""

from registry import db
from registry.artifacts import (
    add_artifact,
    find_artifact,
    get_artifact,
    list_artifacts,
    resolve_path,
)
from registry.catalog import (
    ModelInfo,
    builtin_ids,
    get_model,
    list_models,
    page_models,
    register_model,
)
from registry.errors import CatalogError, IdempotencyConflict, JobStateError, NotFound
from registry.jobs import (
    JobView,
    claim_job,
    count_jobs,
    create_job,
    delete_job,
    get_job,
    get_job_view,
    heartbeat,
    is_cancel_requested,
    job_views,
    list_jobs,
    mark_cancelled,
    mark_failed,
    request_cancel,
    stale_jobs,
    update_progress,
)
from registry.orm import (
    ARTIFACT_CHECKPOINT,
    ARTIFACT_FD_PLOT_PNG,
    ARTIFACT_GRID_PNG,
    ARTIFACT_REPORT_JSON,
    ARTIFACT_SCHEDULE_PNG,
    ARTIFACT_TEACHER,
    Artifact,
    CatalogModel,
    Job,
    Schedule,
)
from registry.schedules import (
    best_schedule,
    best_schedules_by_nfe,
    get_schedule,
    get_schedule_for_job,
    list_schedules,
    nearest_schedule,
    publish_result,
)
from registry.settings import Settings, get_settings

__all__ = [
    "ARTIFACT_CHECKPOINT",
    "ARTIFACT_FD_PLOT_PNG",
    "ARTIFACT_GRID_PNG",
    "ARTIFACT_REPORT_JSON",
    "ARTIFACT_SCHEDULE_PNG",
    "ARTIFACT_TEACHER",
    "Artifact",
    "CatalogError",
    "CatalogModel",
    "IdempotencyConflict",
    "Job",
    "JobStateError",
    "JobView",
    "ModelInfo",
    "NotFound",
    "Schedule",
    "Settings",
    "add_artifact",
    "best_schedule",
    "best_schedules_by_nfe",
    "builtin_ids",
    "claim_job",
    "count_jobs",
    "create_job",
    "db",
    "delete_job",
    "find_artifact",
    "get_artifact",
    "get_job",
    "get_job_view",
    "get_model",
    "get_schedule",
    "get_schedule_for_job",
    "get_settings",
    "heartbeat",
    "is_cancel_requested",
    "job_views",
    "list_artifacts",
    "list_jobs",
    "list_models",
    "list_schedules",
    "mark_cancelled",
    "mark_failed",
    "nearest_schedule",
    "page_models",
    "publish_result",
    "register_model",
    "request_cancel",
    "resolve_path",
    "stale_jobs",
    "update_progress",
]
