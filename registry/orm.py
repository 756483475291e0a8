"""SQLAlchemy 2 typed ORM models: jobs, schedules, models (catalog), artifacts.

The Alembic migrations in ``migrations/versions`` create exactly these tables
(``tests/test_migrations.py`` checks that autogenerate finds no difference).

Times are timezone-aware UTC datetimes (SQLite hands them back naive: see :func:`utc`).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from ld3_core.spec import JOB_KINDS, JOB_STATES, MODEL_KINDS

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Artifact kinds the API knows how to serve; workers may add others (free-form strings).
ARTIFACT_REPORT_JSON = "report_json"
ARTIFACT_GRID_PNG = "grid_png"
ARTIFACT_FD_PLOT_PNG = "fd_plot_png"
ARTIFACT_SCHEDULE_PNG = "schedule_png"
ARTIFACT_CHECKPOINT = "checkpoint"
ARTIFACT_TEACHER = "teacher"


def utcnow() -> datetime:
    """Current time, timezone-aware UTC."""
    return datetime.now(timezone.utc)


def utc(value: datetime | None) -> datetime | None:
    """``value`` as an aware UTC datetime (SQLite returns naive UTC); None stays None."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def _in(column: str, values: tuple[str, ...]) -> str:
    quoted = ", ".join(f"'{v}'" for v in values)
    return f"{column} IN ({quoted})"


class Base(DeclarativeBase):
    """Declarative base holding the registry metadata (with a constraint naming convention)."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Job(Base):
    """One schedule-learning job (kind ``ld3`` or ``trust_region``) and its live progress."""

    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint(_in("kind", JOB_KINDS), name="kind"),
        CheckConstraint(_in("state", JOB_STATES), name="state"),
        Index("ix_jobs_state_created", "state", "created_at"),
        Index("ix_jobs_model_created", "model_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    model_id: Mapped[str] = mapped_column(String(255))
    solver: Mapped[str] = mapped_column(String(32))
    order: Mapped[int] = mapped_column(Integer)
    nfe: Mapped[int] = mapped_column(Integer)
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    state: Mapped[str] = mapped_column(String(16), default="queued")
    stage: Mapped[str | None] = mapped_column(String(64), nullable=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), nullable=True, unique=True)
    request_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(255), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    def __repr__(self) -> str:
        return f"Job(id={self.id!r}, kind={self.kind!r}, state={self.state!r})"


class Schedule(Base):
    """A published (immutable) schedule: ``nfe + 1`` decreasing times for one model/solver/order.

    ``timesteps`` are the solver times t (model's continuous time), ``model_timesteps`` the
    decoupled times fed to the network (LD3, None when not decoupled), ``sigmas`` the
    k-diffusion sigmas ``sigma_t / alpha_t`` of ``timesteps``. ``score`` is lower-is-better
    (an FD/FID from ``extractor``). ``noise_schedule`` is the model's
    ``NoiseSchedule.config()`` (used to export and interpolate).
    """

    __tablename__ = "schedules"
    __table_args__ = (
        Index("ix_schedules_key", "model_id", "solver", "order", "nfe"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_id: Mapped[str] = mapped_column(String(255))
    solver: Mapped[str] = mapped_column(String(32))
    order: Mapped[int] = mapped_column(Integer)
    nfe: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(32))
    timesteps: Mapped[list[float]] = mapped_column(JSON)
    model_timesteps: Mapped[list[float] | None] = mapped_column(JSON, nullable=True)
    sigmas: Mapped[list[float]] = mapped_column(JSON)
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    metric: Mapped[str | None] = mapped_column(String(64), nullable=True)
    extractor: Mapped[str | None] = mapped_column(String(64), nullable=True)
    noise_schedule: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    extra: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    job_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("jobs.id", ondelete="CASCADE"), unique=True
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    def __repr__(self) -> str:
        return (
            f"Schedule(id={self.id!r}, model={self.model_id!r}, solver={self.solver!r}, "
            f"order={self.order!r}, nfe={self.nfe!r}, score={self.score!r})"
        )


class CatalogModel(Base):
    """A registered model (built-in ``builtin:*`` ids are not stored: see ``registry.catalog``).

    ``source`` is a local diffusers folder or a hub id, what ``ld3_core.models.load`` takes;
    ``noise_schedule`` an optional ``NoiseSchedule.config()`` override; ``prediction_type``
    ``eps``/``x0``/``v`` or None (from the model's scheduler config); ``options`` are loader
    options (e.g. ``guidance_scale``, ``prompts``).
    """

    __tablename__ = "models"
    __table_args__ = (
        CheckConstraint(_in("kind", MODEL_KINDS), name="kind"),
    )

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    source: Mapped[str] = mapped_column(String(1024))
    kind: Mapped[str] = mapped_column(String(16))
    noise_schedule: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    prediction_type: Mapped[str | None] = mapped_column(String(8), nullable=True)
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    def __repr__(self) -> str:
        return f"CatalogModel(id={self.id!r}, kind={self.kind!r}, source={self.source!r})"


class Artifact(Base):
    """A file produced by a job (report, PNGs, checkpoint) or a cache entry (teacher data).

    ``path`` is relative to the artifacts folder (preferred, portable between containers) or
    absolute. ``key`` (unique, optional) names a cache entry shared between jobs.
    """

    __tablename__ = "artifacts"
    __table_args__ = (UniqueConstraint("job_id", "kind", name="uq_artifacts_job_kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str | None] = mapped_column(
        String(36), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=True, index=True
    )
    kind: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(String(1024))
    key: Mapped[str | None] = mapped_column(String(255), nullable=True, unique=True)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    def __repr__(self) -> str:
        return f"Artifact(job_id={self.job_id!r}, kind={self.kind!r}, path={self.path!r})"
