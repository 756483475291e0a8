"""``/models``: the model catalog (built-ins always present; register diffusers models)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from api.deps import AUTH, PROBLEM, PageDep, SessionDep, SettingsDep
from api.pagination import Page, make_page
from api.problems import Problem
from api.schemas import ModelCreate, ModelOut
from ld3_client.urls import model_path
from registry.catalog import ModelInfo, delete_model, get_model, page_models, register_model

router = APIRouter(tags=["models"])


def model_body(info: ModelInfo) -> ModelOut:
    """The ``GET /models/{id}`` body of a catalog entry."""
    return ModelOut.model_validate(info.to_dict())


@router.get("/models", response_model=Page[ModelOut], summary="The model catalog")
def list_catalog(request: Request, session: SessionDep, page: PageDep) -> Page[ModelOut]:
    """Built-in models first, then registered ones by id; paginated."""
    models, total = page_models(session, limit=page.limit, offset=page.offset)
    return make_page(request, [model_body(m) for m in models], total, page)


@router.post(
    "/models",
    status_code=201,
    response_model=ModelOut,
    dependencies=AUTH,
    responses={401: PROBLEM, 409: PROBLEM, 422: PROBLEM},
    summary="Register a diffusers model",
)
def register(
    body: ModelCreate, session: SessionDep, settings: SettingsDep, response: Response
) -> ModelOut:
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
    response.headers["Location"] = model_path(info.id)
    return model_body(info)


@router.get("/models/{model_id:path}", response_model=ModelOut, responses={404: PROBLEM},
            summary="One catalog entry")
def read_model(model_id: str, session: SessionDep) -> ModelOut:
    """A model by id (ids may contain ``/`` and ``:``)."""
    info = get_model(session, model_id)
    if info is None:
        raise Problem(404, f"model {model_id!r} is not in the catalog", slug="not-found")
    return model_body(info)


@router.delete(
    "/models/{model_id:path}",
    status_code=204,
    dependencies=AUTH,
    responses={401: PROBLEM, 404: PROBLEM, 409: PROBLEM, 422: PROBLEM},
    summary="Remove a registered model no job uses",
)
def unregister(model_id: str, session: SessionDep) -> Response:
    """Delete a registered model: 204; 404 when it is not registered; 409 for a built-in model
    or one that a job uses (its jobs and schedules refer to it)."""
    delete_model(session, model_id)
    return Response(status_code=204)
