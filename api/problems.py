"""RFC 9457 problem details (``application/problem+json``) for every 4xx/5xx response.

:class:`Problem` is the exception routes raise; :func:`install_handlers` maps everything else
(Starlette/FastAPI HTTP errors incl. unknown routes and 405, request validation errors,
registry errors, database outages, unexpected exceptions) to the same JSON shape::

    {"type": "urn:ld3:problem:<slug>" | "about:blank", "title": str, "status": int,
     "detail": str, "instance": "<request path>", "errors": [...]}   # errors: validation only
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from registry.errors import (
    DB_UNAVAILABLE,
    CatalogError,
    IdempotencyConflict,
    JobStateError,
    NotFound,
)

log = logging.getLogger("ld3.api")

PROBLEM_JSON = "application/problem+json"
TYPE_PREFIX = "urn:ld3:problem:"

RFC9110_PHRASES = {413: "Content Too Large", 422: "Unprocessable Content"}


def phrase(status: int) -> str:
    """The HTTP reason phrase of ``status`` (RFC 9110 names for 413 and 422)."""
    if status in RFC9110_PHRASES:
        return RFC9110_PHRASES[status]
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


class Problem(Exception):
    """An HTTP error rendered as problem+json.

    ``status`` HTTP code; ``slug`` short problem type (``type`` becomes
    ``urn:ld3:problem:<slug>``; None -> ``about:blank``); ``title`` defaults to the reason
    phrase; ``errors`` a list of ``{"pointer"|"parameter"|"header": ..., "detail": ...}``;
    ``headers`` extra response headers; ``extra`` extra members of the problem object.
    """

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        slug: str | None = None,
        title: str | None = None,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.slug = slug
        self.title = title
        self.errors = errors
        self.headers = headers or {}
        self.extra = extra


def problem_response(
    request: Request | None,
    status: int,
    detail: str | None = None,
    *,
    slug: str | None = None,
    title: str | None = None,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
    instance: str | None = None,
    **extra: Any,
) -> JSONResponse:
    """Build a problem+json response for ``status`` (see module docstring for the shape)."""
    body: dict[str, Any] = {
        "type": TYPE_PREFIX + slug if slug else "about:blank",
        "title": title or phrase(status),
        "status": status,
        "detail": detail or phrase(status),
        "instance": instance if instance is not None else (request.url.path if request else ""),
    }
    if errors is not None:
        body["errors"] = errors
    body.update(extra)
    return JSONResponse(
        jsonable_encoder(body), status_code=status, headers=headers, media_type=PROBLEM_JSON
    )


def validation_errors(raw: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pydantic/FastAPI error dicts -> RFC 9457 ``errors`` members (JSON pointer for the body,
    ``parameter`` for query/path, ``header`` for headers); input values are not echoed."""
    out = []
    for err in raw:
        loc = [str(p) for p in err.get("loc", ())]
        item: dict[str, Any] = {"detail": str(err.get("msg", "invalid")), "type": err.get("type")}
        where, rest = (loc[0], loc[1:]) if loc else ("body", [])
        if where == "body":
            item["pointer"] = "#/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in rest)
        elif where in ("query", "path"):
            item["parameter"] = ".".join(rest)
        elif where == "header":
            item["header"] = ".".join(rest)
        else:
            item["pointer"] = "#/" + "/".join(loc)
        item["loc"] = loc
        out.append(item)
    return out


def _allowed_methods(request: Request) -> list[str]:
    """Methods of every route whose path matches the request (for the 405 ``Allow`` header),
    from ``app.state.route_methods``: a list of (compiled path regex, methods)."""
    methods: set[str] = set()
    for regex, route_methods in getattr(request.app.state, "route_methods", ()):
        if regex.match(request.url.path):
            methods |= set(route_methods)
    return sorted(methods)


def install_handlers(app: FastAPI) -> None:
    """Register the exception handlers that turn every error into problem+json."""

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> Response:
        return problem_response(
            request, exc.status, exc.detail, slug=exc.slug, title=exc.title,
            errors=exc.errors, headers=exc.headers, **exc.extra,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        detail = exc.detail if isinstance(exc.detail, str) else None
        if exc.status_code == 404 and detail in (None, "Not Found"):
            detail = f"no route for {request.method} {request.url.path}"
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            detail = f"method {request.method} not allowed on {request.url.path}"
            headers["Allow"] = ", ".join(_allowed_methods(request))
        return problem_response(request, exc.status_code, detail, headers=headers or None)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        raw = list(exc.errors())
        if any(e.get("type") == "json_invalid" for e in raw):
            return problem_response(
                request, 400, "the request body is not valid JSON", slug="malformed-json",
                errors=validation_errors(raw),
            )
        return problem_response(
            request, 422, "the request is not valid; see errors", slug="validation-error",
            errors=validation_errors(raw),
        )

    @app.exception_handler(NotFound)
    async def _not_found(request: Request, exc: NotFound) -> Response:
        return problem_response(request, 404, str(exc), slug="not-found")

    @app.exception_handler(IdempotencyConflict)
    async def _idem(request: Request, exc: IdempotencyConflict) -> Response:
        return problem_response(request, 422, str(exc), slug="idempotency-key-reused")

    @app.exception_handler(JobStateError)
    async def _state(request: Request, exc: JobStateError) -> Response:
        return problem_response(request, 409, str(exc), slug="job-state")

    @app.exception_handler(CatalogError)
    async def _catalog(request: Request, exc: CatalogError) -> Response:
        if exc.conflict:
            slug = "model-exists" if exc.field == "id" else "model-not-deletable"
            return problem_response(request, 409, str(exc), slug=slug)
        errors = [{"pointer": f"#/{exc.field}", "detail": str(exc)}] if exc.field else None
        return problem_response(
            request, 422, str(exc), slug="validation-error", errors=errors
        )

    for exc_type in DB_UNAVAILABLE:

        @app.exception_handler(exc_type)
        async def _db_down(request: Request, exc: Exception) -> Response:
            log.warning("database unavailable: %s", str(exc).splitlines()[0] if str(exc) else exc)
            return problem_response(
                request, 503, "the database is unavailable; retry later",
                slug="database-unavailable", headers={"Retry-After": "5"},
            )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(request, 500, "internal server error", slug="internal")
