"""Artifact repository: files written by jobs (report, PNGs, checkpoints) and cache entries.

Paths are stored as given; relative paths are relative to ``Settings.artifacts_dir``
(preferred: API and worker containers may mount the folder at different places).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from registry.orm import Artifact, utcnow
from registry.settings import Settings


def _stage_artifact(
    session: Session,
    job_id: str | None,
    kind: str,
    path: str | Path,
    *,
    key: str | None = None,
    meta: Mapping[str, Any] | None = None,
) -> Artifact:
    """Insert or update (same job+kind, or same key) an artifact row without committing."""
    if not kind:
        raise ValueError("artifact kind must be a non-empty string")
    row = None
    if key is not None:
        row = session.scalar(select(Artifact).where(Artifact.key == key))
    if row is None and job_id is not None:
        row = session.scalar(
            select(Artifact).where(Artifact.job_id == str(job_id), Artifact.kind == kind)
        )
    if row is None:
        row = Artifact(job_id=job_id, kind=kind, key=key, created_at=utcnow())
        session.add(row)
    row.path = str(path)
    row.meta = dict(meta or {})
    if key is not None:
        row.key = key
    return row


def add_artifact(
    session: Session,
    job_id: str | None,
    kind: str,
    path: str | Path,
    *,
    key: str | None = None,
    meta: Mapping[str, Any] | None = None,
) -> Artifact:
    """Record a file for a job (or a keyed cache entry with ``job_id=None``) and commit.

    One row per (job, kind) and per ``key``: recording it again updates ``path``/``meta``
    (e.g. a newer checkpoint). ``kind`` is free text; the API serves ``report_json``,
    ``grid_png``, ``fd_plot_png`` and ``schedule_png`` (constants in :mod:`registry.orm`).
    Returns the row.
    """
    for attempt in range(2):
        row = _stage_artifact(session, job_id, kind, path, key=key, meta=meta)
        try:
            session.commit()
            return row
        except IntegrityError:
            session.rollback()
            if attempt:
                raise
    raise AssertionError("unreachable")


def get_artifact(session: Session, job_id: str, kind: str) -> Artifact | None:
    """The artifact of ``kind`` recorded for ``job_id``, or None."""
    return session.scalar(
        select(Artifact).where(Artifact.job_id == str(job_id), Artifact.kind == kind),
        execution_options={"populate_existing": True},
    )


def find_artifact(session: Session, key: str) -> Artifact | None:
    """The artifact recorded under cache ``key`` (e.g. teacher data), or None."""
    return session.scalar(
        select(Artifact).where(Artifact.key == key),
        execution_options={"populate_existing": True},
    )


def list_artifacts(session: Session, job_id: str) -> list[Artifact]:
    """All artifacts recorded for ``job_id`` (by kind)."""
    return list(
        session.scalars(
            select(Artifact).where(Artifact.job_id == str(job_id)).order_by(Artifact.kind)
        ).all()
    )


def resolve_path(settings: Settings, path: str | Path) -> Path:
    """Absolute path of an artifact: relative paths are taken under ``settings.artifacts_dir``."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else settings.artifacts_path / p
