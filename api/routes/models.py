"""``/models``: the model catalog (built-ins always present; register diffusers models)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPBearer
from sqlalchemy.orm import Session

from api.deps import LimitQuery, OffsetQuery, get_session, get_settings, page_bounds, page_links
from api.problems import Problem
from api.schemas import ModelCreate, ModelOut, ModelPage
from ld3_client.urls import model_path
from registry.catalog import delete_model, get_model, list_models, register_model
from registry.settings import Settings

router = APIRouter(tags=["models"])
bearer = HTTPBearer(auto_error=False, description="LD3_API_TOKEN (needed when set)")
SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
PROBLEM = {"content": {"application/problem+json": {}}}


@router.get("/models", response_model=ModelPage, summary="The model catalog")
def list_catalog(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    limit: LimitQuery = None,
    offset: OffsetQuery = 0,
) -> dict:
    """Built-in models first, then registered ones by id; paginated."""
    lim, off = page_bounds(settings, limit, offset)
    models = list_models(session)
    nxt, prev = page_links(request, len(models), lim, off)
    return {
        "items": [m.to_dict() for m in models[off:off + lim]],
        "total": len(models),
        "limit": lim,
        "offset": off,
        "next": nxt,
        "prev": prev,
    }


@router.post(
    "/models",
    status_code=201,
    response_model=ModelOut,
    dependencies=[Depends(bearer)],
    responses={401: PROBLEM, 409: PROBLEM, 422: PROBLEM},
    summary="Register a diffusers model",
)
def register(body: ModelCreate, session: SessionDep, settings: SettingsDep) -> JSONResponse:
    """Register a hub id, or a local diffusers folder under ``LD3_MODEL_ROOTS`` (its
    ``model_index.json``/``config.json`` must parse; visible to the workers at the same
    path), with its kind, optional noise-schedule override, prediction type and loader
    options. 201 + ``Location``; 409 if the id is taken; 422 otherwise, with the same message
    whether a local path is missing, outside the roots or not a model folder."""
    info = register_model(
        session,
        source=body.source,
        kind=body.kind,
        model_id=body.id,
        noise_schedule=body.noise_schedule,
        prediction_type=body.prediction_type,
        options=body.options,
        description=body.description,
        model_roots=settings.model_root_paths,
    )
    return JSONResponse(
        ModelOut.model_validate(info.to_dict()).model_dump(mode="json"),
        status_code=201,
        headers={"Location": model_path(info.id)},
    )


@router.get("/models/{model_id:path}", response_model=ModelOut, responses={404: PROBLEM},
            summary="One catalog entry")
def read_model(model_id: str, session: SessionDep) -> dict:
    """A model by id (ids may contain ``/`` and ``:``)."""
    info = get_model(session, model_id)
    if info is None:
        raise Problem(404, f"model {model_id!r} is not in the catalog", slug="not-found")
    return info.to_dict()


@router.delete(
    "/models/{model_id:path}",
    status_code=204,
    dependencies=[Depends(bearer)],
    responses={401: PROBLEM, 404: PROBLEM, 409: PROBLEM, 422: PROBLEM},
    summary="Remove a registered model no job uses",
)
def unregister(model_id: str, session: SessionDep) -> Response:
    """Delete a registered model: 204; 404 when it is not registered; 409 for a built-in model
    or one that a job uses (its jobs and schedules refer to it)."""
    delete_model(session, model_id)
    return Response(status_code=204)
