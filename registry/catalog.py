"""Model catalog: the built-in ``builtin:*`` models (always present, never stored) plus
registered diffusers models (local folder or hub id) stored in the ``models`` table.

:class:`ModelInfo` is what callers get for both; a worker loads a model with
``ld3_core.models.load(info.source, **info.options)``.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ld3_core.spec import MODEL_KINDS, PREDICTIONS
from registry.errors import CatalogError, NotFound
from registry.model_policy import (
    check_local_source,
    exists_under_roots,
    validate_loader_options,
)
from registry.orm import CatalogModel, Job, utc, utcnow
from registry.text import clean_text, has_unsafe_text, json_depth

log = logging.getLogger(__name__)

BUILTIN_PREFIX = "builtin:"
MODEL_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@+-]*(/[A-Za-z0-9._:@+-]+)*$")
HUB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
MAX_ID_LEN = 255
MAX_JSON_DEPTH = 32


@dataclass(frozen=True)
class ModelInfo:
    """One catalog entry (built-in or registered).

    ``source`` is what ``ld3_core.models.load`` takes (the id itself for built-ins),
    ``kind`` pixel|latent|text2img, ``noise_schedule`` a ``NoiseSchedule.config()`` override
    or None, ``prediction_type`` eps|x0|v or None (from the model), ``options`` loader options.
    """

    id: str
    source: str
    kind: str
    builtin: bool
    noise_schedule: dict[str, Any] | None = None
    prediction_type: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    description: str | None = None
    created_at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``created_at`` as ISO-8601 or None)."""
        return {
            "id": self.id,
            "source": self.source,
            "kind": self.kind,
            "builtin": self.builtin,
            "noise_schedule": self.noise_schedule,
            "prediction_type": self.prediction_type,
            "options": dict(self.options),
            "description": self.description,
            "created_at": self.created_at.isoformat() if self.created_at else None,
        }


def builtin_ids() -> list[str]:
    """Built-in model ids (``builtin:<name>``), from ``ld3_core.models.builtin_ids()``."""
    from ld3_core.models import builtin_ids as core_builtin_ids

    return list(core_builtin_ids())


def _builtin_info(model_id: str) -> ModelInfo:
    return ModelInfo(
        id=model_id,
        source=model_id,
        kind="pixel",
        builtin=True,
        description="built-in model shipped with ld3_core",
    )


def _json_object(value: Any, what: str, model_id: str) -> dict[str, Any] | None:
    """A stored JSON value as a dict fit to serialize again, or None (logged) when it is
    not an object, nested too deeply or holds unsafe text (a row written by hand or by an
    older version must never break the catalog)."""
    if value is None:
        return None
    if not isinstance(value, dict) or json_depth(value) > MAX_JSON_DEPTH or has_unsafe_text(
        value
    ):
        log.warning("model %r: stored %s is not a usable JSON object; ignored", model_id, what)
        return None
    return dict(value)


def _info(row: CatalogModel) -> ModelInfo:
    return ModelInfo(
        id=row.id,
        source=row.source,
        kind=row.kind,
        builtin=False,
        noise_schedule=_json_object(row.noise_schedule, "noise_schedule", row.id),
        prediction_type=row.prediction_type,
        options=_json_object(row.options, "options", row.id) or {},
        description=row.description,
        created_at=utc(row.created_at),
    )


def get_model(session: Session, model_id: str) -> ModelInfo | None:
    """Catalog entry for ``model_id`` (built-in or registered), or None."""
    if model_id.startswith(BUILTIN_PREFIX):
        return _builtin_info(model_id) if model_id in builtin_ids() else None
    row = session.get(CatalogModel, model_id)
    return None if row is None else _info(row)


def list_models(session: Session) -> list[ModelInfo]:
    """Every catalog entry: built-ins first (sorted), then registered models by id."""
    rows = session.scalars(select(CatalogModel).order_by(CatalogModel.id)).all()
    return [_builtin_info(m) for m in builtin_ids()] + [_info(r) for r in rows]


def page_models(session: Session, *, limit: int, offset: int) -> tuple[list[ModelInfo], int]:
    """One page of :func:`list_models` (same order: built-ins, then registered models by id);
    returns (page, total). The registered part is paged in SQL."""
    limit, offset = max(0, int(limit)), max(0, int(offset))
    builtins = builtin_ids()
    total = len(builtins) + count_models(session)
    page = [_builtin_info(m) for m in builtins[offset:offset + limit]]
    room = limit - len(page)
    if room > 0:
        rows = session.scalars(
            select(CatalogModel)
            .order_by(CatalogModel.id)
            .offset(max(0, offset - len(builtins)))
            .limit(room)
        ).all()
        page += [_info(r) for r in rows]
    return page, total


def classify_source(source: str, model_roots: Sequence[str | Path] | None = None) -> str:
    """``"local"`` for a filesystem path, else ``"hub"``.

    A source is local when it starts with ``/``, ``./``, ``../`` or ``~``, or names an existing
    path inside ``model_roots``; a hub id is ``org/name``. Whether the path exists is only
    looked at inside ``model_roots`` (never an oracle for the rest of the host). Raises
    :class:`CatalogError` for anything else.
    """
    if not isinstance(source, str) or not source.strip():
        raise CatalogError("source must be a non-empty string", field="source")
    looks_local = source.startswith(("/", "./", "../", "~")) or os.path.isabs(source)
    roots = [Path(r) for r in (model_roots or ())]
    if looks_local or exists_under_roots(source, roots):
        return "local"
    if HUB_ID_RE.match(source):
        return "hub"
    raise CatalogError(
        f"source {source!r} is neither a model folder under the model roots nor a hub id "
        "'org/name'",
        field="source",
    )


def validate_noise_schedule(config: Mapping[str, Any]) -> dict[str, Any]:
    """Check a ``NoiseSchedule.config()``-style dict by building it; returns it as a dict."""
    if not isinstance(config, Mapping) or "name" not in config:
        raise CatalogError("noise_schedule must be an object with a 'name'", field="schedule")
    if json_depth(dict(config)) > MAX_JSON_DEPTH or has_unsafe_text(dict(config)):
        raise CatalogError("invalid noise schedule: nested too deeply or control characters",
                           field="schedule")
    from ld3_core.schedules import from_config

    try:
        from_config(dict(config))
    except Exception as exc:  # noqa: BLE001 - any failure to build it means "invalid"
        detail = clean_text(exc, 300)
        raise CatalogError(f"invalid noise schedule: {detail}", field="schedule") from None
    return dict(config)


def register_model(
    session: Session,
    *,
    source: str,
    kind: str,
    model_id: str | None = None,
    noise_schedule: Mapping[str, Any] | None = None,
    prediction_type: str | None = None,
    options: Mapping[str, Any] | None = None,
    description: str | None = None,
    model_roots: Sequence[str | Path] | None = None,
) -> ModelInfo:
    """Validate and store a model and commit; returns its :class:`ModelInfo`.

    ``source``: a local diffusers folder inside one of ``model_roots`` (None or empty: no
    local folder is accepted; see :mod:`registry.model_policy`; stored as a resolved absolute
    path) or a hub id ``org/name`` (not fetched). ``options``: loader options
    (:func:`registry.model_policy.validate_loader_options`). ``model_id`` defaults to the hub
    id; a local folder needs an explicit id. Ids match ``MODEL_ID_RE`` (letters, digits,
    ``._:@+-``, ``/`` between segments) and may not start with ``builtin:``. Raises
    :class:`CatalogError` (``field`` says which input; ``conflict=True`` when the id is
    taken); nothing is stored then.
    """
    if kind not in MODEL_KINDS:
        raise CatalogError(f"kind must be one of {', '.join(MODEL_KINDS)}", field="kind")
    if prediction_type is not None and prediction_type not in PREDICTIONS:
        raise CatalogError(
            f"prediction_type must be one of {', '.join(PREDICTIONS)}",
            field="prediction_type",
        )
    roots = [Path(r) for r in (model_roots or ())]
    where = classify_source(source, roots)
    if model_id is None:
        if where != "hub":
            raise CatalogError("an id is required for a local model folder", field="id")
        model_id = source
    local_path = check_local_source(source, roots) if where == "local" else None
    loader_options = validate_loader_options(options)
    if len(model_id) > MAX_ID_LEN or not MODEL_ID_RE.match(model_id):
        raise CatalogError(
            "id must be letters, digits and ._:@+- in '/'-separated segments", field="id"
        )
    if model_id.startswith(BUILTIN_PREFIX):
        raise CatalogError("ids starting with 'builtin:' are reserved", field="id")
    sched = None if noise_schedule is None else validate_noise_schedule(noise_schedule)
    stored_source = str(local_path) if local_path is not None else source
    if session.get(CatalogModel, model_id) is not None:
        raise CatalogError(f"model {model_id!r} is already registered", field="id", conflict=True)
    row = CatalogModel(
        id=model_id,
        source=stored_source,
        kind=kind,
        noise_schedule=sched,
        prediction_type=prediction_type,
        options=loader_options,
        description=description,
        created_at=utcnow(),
    )
    session.add(row)
    try:
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        raise CatalogError(
            f"model {model_id!r} is already registered", field="id", conflict=True
        ) from exc
    return _info(row)


def count_models(session: Session) -> int:
    """Number of registered (stored) models."""
    return int(session.scalar(select(func.count()).select_from(CatalogModel)) or 0)


def delete_model(session: Session, model_id: str) -> None:
    """Remove a registered model and commit.

    Raises :class:`NotFound` when no such registered model exists, :class:`CatalogError`
    (``conflict=True``) for a built-in model or one that a job uses (its jobs and their
    schedules refer to it); nothing is deleted then.
    """
    if model_id.startswith(BUILTIN_PREFIX):
        if model_id in builtin_ids():
            raise CatalogError(f"built-in model {model_id!r} cannot be deleted", conflict=True)
        raise NotFound(f"model {model_id!r} is not in the catalog")
    row = session.get(CatalogModel, model_id)
    if row is None:
        raise NotFound(f"model {model_id!r} is not in the catalog")
    used = session.scalar(select(func.count()).select_from(Job).where(Job.model_id == model_id))
    if used:
        session.rollback()
        raise CatalogError(
            f"model {model_id!r} is used by {used} job(s); it cannot be deleted", conflict=True
        )
    session.delete(row)
    session.commit()
