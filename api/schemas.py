"""Request and response bodies (pydantic v2), shown in the OpenAPI docs at ``/docs``.

Request bodies are strict: unknown fields are rejected, numbers must be JSON integers
(``"5"`` or ``5.0`` for ``nfe`` is a 422), so a typo never silently becomes a default.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from ld3_core.spec import (
    SOLVERS,
    JobKind,
    JobOptions,
    JobState,
    ModelKind,
    Prediction,
)

LINE = r"^[^\x00-\x1f\x7f-\x9f]*$"
"""A single-line text: no control characters (checked at the edge, see api.input_guard)."""
TEXT = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$"
"""A free text: TAB, LF and CR allowed, no other control characters."""
OPTIONS_DOC = (
    " At most 32 levels of nesting; no control characters in keys or texts (422 otherwise)."
)


class JobCreate(BaseModel):
    """``POST /jobs`` body (:class:`ld3_core.spec.JobSpec` on the wire). ``order`` defaults to
    min(2, max order of the solver); ``nfe`` is 1..``LD3_MAX_NFE`` (50); ``options`` are the
    job's :class:`ld3_core.spec.JobOptions` (every field optional)."""

    model_config = ConfigDict(extra="forbid")

    kind: JobKind
    model: StrictStr = Field(
        min_length=1, max_length=255, pattern=LINE, examples=["builtin:gmm-digits"]
    )
    solver: StrictStr = Field(
        min_length=1, max_length=32, examples=["unipc"],
        json_schema_extra={"enum": list(SOLVERS)},
    )
    order: StrictInt | None = Field(
        None, ge=1, le=4, examples=[2], description="1..the solver's maximum order"
    )
    nfe: StrictInt = Field(ge=1, le=1000, examples=[6], description="1..LD3_MAX_NFE (50)")
    options: JobOptions = Field(
        default_factory=JobOptions, description="Job options (docs/service.md)." + OPTIONS_DOC
    )


class ModelCreate(BaseModel):
    """``POST /models`` body: a diffusers model in a local folder or on the hub."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    id: StrictStr | None = Field(
        None, min_length=1, max_length=255, pattern=LINE,
        description="Catalog id (default: the hub id; required for a local folder).",
    )
    source: StrictStr = Field(
        min_length=1, max_length=1024, pattern=LINE,
        description="Hub id org/name, or a local diffusers folder under LD3_MODEL_ROOTS.",
    )
    kind: ModelKind
    noise_schedule: dict[str, Any] | None = Field(
        None, alias="schedule",
        description="NoiseSchedule config override, e.g. {'name': 'discrete_vp', "
        "'beta_start': 0.00085, 'beta_end': 0.012, 'beta_schedule': 'scaled_linear'}.",
    )
    prediction_type: Prediction | None = None
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="Loader options: device, dtype, guidance_scale, prompts, revision, "
        "local_files_only, resolution, class_labels, max_sequence_length." + OPTIONS_DOC,
    )
    description: StrictStr | None = Field(None, max_length=2000, pattern=TEXT)


class JobOut(BaseModel):
    """A job as returned by ``GET /jobs/{id}``."""

    id: str
    kind: str
    model: str
    solver: str
    order: int
    nfe: int
    options: dict[str, Any]
    state: JobState
    stage: str | None
    progress: float = Field(description="Overall fraction done, 0..1.")
    stage_progress: float | None = Field(
        None, description="Fraction of the current stage done, 0..1 (null outside the "
        "weighted stages optimize, report, publish).")
    loss: float | None = Field(description="Current training/validation loss, if any.")
    error: str | None
    cancel_requested: bool
    attempts: int
    worker: str | None
    created_at: datetime
    updated_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    schedule_id: int | None = None
    links: dict[str, str]


class ScheduleOut(BaseModel):
    """A schedule in the native format. ``timesteps``: nfe+1 decreasing solver times t;
    ``model_timesteps``: decoupled network times (None if not decoupled / interpolated);
    ``sigmas``: k-diffusion sigmas sigma_t/alpha_t of ``timesteps``; ``score``: lower is better
    (metric + extractor name), ``score_ci`` its 95 % bootstrap interval on held-out samples;
    ``source``: what made the schedule (``ld3``, ``trust_region`` or ``heuristic:<name>`` when
    no learned candidate beat the best heuristic beyond the interval); ``best_heuristic``,
    ``ratio_to_best_heuristic`` and ``ratio_ci``: the gain over the best heuristic;
    ``interpolated``: true when derived from ``source_nfe``."""

    model: str
    solver: str
    order: int
    nfe: int
    kind: str | None
    source: str | None = None
    format: str = "native"
    timesteps: list[float]
    model_timesteps: list[float] | None
    sigmas: list[float]
    score: float | None
    score_ci: list[float] | None = None
    metric: str | None
    extractor: str | None
    best_heuristic: str | None = None
    ratio_to_best_heuristic: float | None = None
    ratio_ci: list[float] | None = None
    noise_schedule: str | None
    settings: dict[str, Any] | None = Field(
        None, description="What the job ran with, defaults and variants resolved: options, "
        "optimize, teacher, trust_region (p, init, variant), ld3 (hyper-parameters).")
    job_id: str | None
    schedule_id: int | None
    created_at: datetime | None
    interpolated: bool
    source_nfe: int | None = None
    source_schedule_id: int | None = None
    links: dict[str, str]


class ModelOut(BaseModel):
    """A catalog entry."""

    id: str
    source: str
    kind: str
    builtin: bool
    noise_schedule: dict[str, Any] | None
    prediction_type: str | None
    options: dict[str, Any]
    description: str | None
    created_at: datetime | None
