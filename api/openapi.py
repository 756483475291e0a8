"""The OpenAPI document says what the server does (checked by schemathesis in the tests).

:func:`add_head_to_gets` and :func:`install_openapi` (called by ``create_app``):

- every ``GET`` route also answers ``HEAD`` (same status and headers, no body), and the
  schema has a ``head`` operation for it (operation id ``<get id>_head``, no response body);
- every error response is ``application/problem+json`` with the ``Problem`` schema (FastAPI's
  default ``HTTPValidationError`` 422 is replaced: the server never sends it);
- the error statuses each operation can return are listed: 400 (malformed JSON / header),
  401 (when a token is configured: writes, or reads with ``LD3_READS_REQUIRE_TOKEN``),
  413 (body too large), 422 (validation, control characters), 503 (database or broker
  unavailable) everywhere; 404 where a path names a resource; 409 where it occurs;
- 415 (a body that is not JSON) on every ``POST``/``PUT``/``PATCH``;
- PNG report files are ``image/png``; a schedule in an export format is any JSON object.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

from api.problems import phrase

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "RFC 9457 problem details.",
    "type": "object",
    "required": ["type", "title", "status", "detail", "instance"],
    "properties": {
        "type": {"type": "string", "description": "urn:ld3:problem:<slug> or about:blank"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {"type": "object", "required": ["detail"],
                      "properties": {"detail": {"type": "string"}}},
        },
    },
}
COMMON_ERRORS = (400, 401, 413, 422, 503)
OPEN_OPERATIONS = {"/healthz", "/readyz"}
EXTRA_ERRORS: dict[tuple[str, str], tuple[int, ...]] = {
    ("post", "/jobs"): (),
    ("post", "/jobs/{job_id}/cancel"): (404, 409),
    ("post", "/models"): (409,),
    ("delete", "/models/{model_id}"): (404, 409),
    ("get", "/schedules/{key}"): (404,),
    ("get", "/schedules/id/{schedule_id}"): (404,),
}
BODY_METHODS = ("post", "put", "patch")
PNG_PATHS = ("/jobs/{job_id}/report/grid.png", "/jobs/{job_id}/report/fd_vs_nfe.png",
             "/jobs/{job_id}/report/schedule.png")
EXPORT_PATHS = ("/schedules/{key}", "/schedules/id/{schedule_id}")


def add_head_to_gets(routers: Iterable[APIRouter]) -> None:
    """Let every GET route of ``routers`` answer HEAD too (call before including them)."""
    for router in routers:
        for route in router.routes:
            if isinstance(route, APIRoute) and "GET" in route.methods:
                route.methods.add("HEAD")


def _problem_response(status: int) -> dict[str, Any]:
    return {
        "description": phrase(status),
        "content": {"application/problem+json": {
            "schema": {"$ref": "#/components/schemas/Problem"}}},
    }


def _errors_for(method: str, path: str) -> set[int]:
    base = "get" if method == "head" else method
    statuses = set(COMMON_ERRORS)
    if path in OPEN_OPERATIONS:
        statuses.discard(401)
    if "{" in path:
        statuses.add(404)
    if base in BODY_METHODS:
        statuses.add(415)
    statuses.update(EXTRA_ERRORS.get((base, path), ()))
    return statuses


def build_schema(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document of ``app`` (see module docstring)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the HEAD twins share the GET operation ids
        schema = get_openapi(title=app.title, version=app.version,
                             description=app.description, routes=app.routes)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["Problem"] = PROBLEM_SCHEMA
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    for path, operations in schema.get("paths", {}).items():
        for method, op in operations.items():
            responses = op.setdefault("responses", {})
            for status in list(responses):
                if status.isdigit() and int(status) >= 400:
                    del responses[status]
            for status in sorted(_errors_for(method, path)):
                responses[str(status)] = _problem_response(status)
            ok = responses.get("200")
            if ok is not None and path in PNG_PATHS:
                ok["content"] = {"image/png": {"schema": {"type": "string",
                                                          "format": "binary"}}}
            if ok is not None and path in EXPORT_PATHS:
                ok["content"] = {"application/json": {"schema": {"anyOf": [
                    {"$ref": "#/components/schemas/ScheduleOut"},
                    {"type": "object", "description": "an export format (?format=)"},
                ]}}}
            if "304" in responses:
                responses["304"] = {"description": "Not Modified (If-None-Match matched)"}
            if method == "head":
                op["operationId"] = f"{op.get('operationId', path)}_head"
                op["summary"] = f"{op.get('summary', '')} (headers only)".strip()
                for response in responses.values():
                    response.pop("content", None)
    return schema


def install_openapi(app: FastAPI) -> None:
    """Install the custom schema generator (cached after the first call)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_schema(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
