"""Schedule lookup beyond the database: noise schedules, interpolation, export formats, ETags.

- :class:`NoiseScheduleResolver`: the ``NoiseSchedule`` of a model, from (1) the published
  row's ``noise_schedule`` config, (2) the catalog entry's override, (3) for ``builtin:*``
  models, ``ld3_core.models.load(id).schedule`` (loaded once per process).
- :func:`interpolate`: an NFE never learned -> ``ld3_core.interpolate.interpolate_schedule``
  applied to the best schedule of the nearest learned NFE (same model/solver/order).
- :func:`export`: ``ld3_core.export.to_format(fmt, timesteps, schedule, model_timesteps)``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from typing import Any

from fastapi.encoders import jsonable_encoder
from sqlalchemy.orm import Session

from api.problems import Problem
from api.serialize import job_url, schedule_id_url, schedule_key_url
from registry.catalog import BUILTIN_PREFIX, get_model
from registry.orm import Schedule
from registry.schedules import nearest_schedule

log = logging.getLogger("ld3.api")


def export_formats() -> tuple[str, ...]:
    """Accepted ``?format=`` values: ``ld3_core.export.EXPORT_FORMATS`` (``native`` first)."""
    from ld3_core.export import EXPORT_FORMATS

    return tuple(EXPORT_FORMATS)


class NoiseScheduleResolver:
    """Finds the ``ld3_core`` NoiseSchedule of a model (see module docstring); thread-safe."""

    def __init__(self) -> None:
        self._builtin: dict[str, Any] = {}
        self._lock = threading.Lock()

    def config_for(self, session: Session, model_id: str, row: Schedule | None) -> dict | None:
        """A ``NoiseSchedule.config()`` dict for the model, or None when unknown."""
        if row is not None and row.noise_schedule:
            return dict(row.noise_schedule)
        info = get_model(session, model_id)
        if info is not None and info.noise_schedule:
            return dict(info.noise_schedule)
        if model_id.startswith(BUILTIN_PREFIX) and info is not None:
            with self._lock:
                if model_id not in self._builtin:  # successes are cached, failures retried
                    try:
                        from ld3_core.models import load

                        self._builtin[model_id] = load(model_id).schedule.config()
                    except Exception as exc:  # noqa: BLE001 - unknown is a valid answer
                        log.warning("cannot load %s for its noise schedule: %s", model_id, exc)
                        return None
                return self._builtin[model_id]
        return None

    def schedule_for(self, session: Session, model_id: str, row: Schedule | None):
        """The NoiseSchedule object, or raise a 422 problem saying it is unknown."""
        cfg = self.config_for(session, model_id, row)
        if cfg is None:
            raise Problem(
                422,
                f"the noise schedule of model {model_id!r} is unknown (not recorded with the "
                "schedule nor in the catalog), so it cannot be interpolated or exported",
                slug="noise-schedule-unknown",
            )
        from ld3_core.schedules import from_config

        return from_config(cfg)


def interpolate(
    session: Session,
    resolver: NoiseScheduleResolver,
    model: str,
    solver: str,
    order: int,
    nfe: int,
) -> tuple[dict[str, Any], Any] | None:
    """Interpolated native record for an NFE with no published schedule, with its
    NoiseSchedule; None when the model/solver/order has no published schedule at all."""
    source = nearest_schedule(session, model, solver, order, nfe)
    if source is None:
        return None
    import torch

    from ld3_core.interpolate import interpolate_schedule

    sched = resolver.schedule_for(session, model, source)
    known = {source.nfe: torch.tensor(source.timesteps, dtype=torch.float64)}
    try:
        ts = interpolate_schedule(known, nfe, sched)
    except ValueError as exc:
        raise Problem(422, f"cannot interpolate: {exc}", slug="interpolation-failed") from exc
    ts = torch.as_tensor(ts, dtype=torch.float64)
    record = {
        "model": model,
        "solver": solver,
        "order": order,
        "nfe": nfe,
        "kind": source.kind,
        "source": (source.extra or {}).get("source") or source.kind,
        "format": "native",
        "timesteps": ts.tolist(),
        "model_timesteps": None,
        "sigmas": sched.kd_sigma(ts).tolist(),
        "score": None,
        "metric": None,
        "extractor": None,
        "noise_schedule": sched.config().get("name"),
        "job_id": None,
        "schedule_id": None,
        "created_at": None,
        "interpolated": True,
        "source_nfe": source.nfe,
        "source_schedule_id": source.id,
        "links": {
            "self": schedule_key_url(model, solver, nfe, order),
            "source": schedule_id_url(source.id),
            "source_job": job_url(source.job_id),
        },
    }
    return record, sched


def export(fmt: str, record: dict[str, Any], sched: Any) -> dict[str, Any]:
    """``to_format(fmt, timesteps, schedule, model_timesteps)`` of a native record, plus the
    ``interpolated`` flag (and ``source_nfe`` when interpolated)."""
    import torch

    from ld3_core.export import to_format

    ts = torch.tensor(record["timesteps"], dtype=torch.float64)
    mts = record.get("model_timesteps")
    mts_t = None if mts is None else torch.tensor(mts, dtype=torch.float64)
    try:
        out = to_format(fmt, ts, sched, model_timesteps=mts_t)
    except ValueError as exc:
        raise Problem(422, f"cannot export to {fmt!r}: {exc}", slug="export-failed") from exc
    body = dict(jsonable_encoder(out))
    body["interpolated"] = bool(record["interpolated"])
    body["source"] = record.get("source")
    if record["interpolated"]:
        body["source_nfe"] = record["source_nfe"]
    return body


def etag_of(body: Any) -> str:
    """Strong ETag of a JSON body: quoted first 32 hex digits of SHA-256 of canonical JSON."""
    text = json.dumps(jsonable_encoder(body), sort_keys=True, separators=(",", ":"))
    return '"' + hashlib.sha256(text.encode()).hexdigest()[:32] + '"'


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 weak comparison of ``If-None-Match`` (list or ``*``) against ``etag``."""
    if not if_none_match:
        return False
    if if_none_match == etag:  # the common case: a client sending back what it was given
        return True
    want = etag.removeprefix("W/")
    for tag in if_none_match.split(","):
        tag = tag.strip()
        if tag == "*" or tag.removeprefix("W/") == want:
            return True
    return False
