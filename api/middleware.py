"""ASGI middleware: bearer-token auth and the request body size limit.

Both answer with problem+json before any route runs, so a rejected request stores nothing:

- **auth**: when ``Settings.api_token`` is set, writes (every method but GET/HEAD/OPTIONS)
  need ``Authorization: Bearer <token>``; reads too when ``reads_require_token``. Probes
  (``/healthz``, ``/readyz``) and the OpenAPI docs stay open. Missing/wrong token -> 401
  with ``WWW-Authenticate: Bearer``.
- **body limit**: a ``Content-Length`` over ``max_body_bytes`` -> 413 at once; otherwise the
  body is read (streamed, chunked or not) and 413 is answered as soon as it passes the limit.
  The buffered body is then replayed to the app.
- **content type**: a ``POST``/``PUT``/``PATCH`` with a non-empty body whose
  ``Content-Type`` is not JSON (``application/json`` or ``application/*+json``) -> 415 naming
  the expected type. A body *without* a ``Content-Type`` is refused the same way, even when
  it holds JSON: every client library sets the header for a JSON body, and a page in a
  browser can send a body without one cross-origin without a CORS preflight, which would let
  any website submit jobs to an API on localhost that runs without a token. A request
  without a body needs no ``Content-Type``.
- **text checks** (:mod:`api.input_guard`): control characters in the path, query string or
  JSON body, and JSON nested too deeply -> 422 problem+json.
"""

from __future__ import annotations

import hmac
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.input_guard import check_json_text, check_path, check_query
from api.problems import problem_response
from registry.settings import Settings

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
JSON_TYPE = "application/json"
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/docs", "/docs/oauth2-redirect", "/redoc",
                        "/openapi.json"})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def is_json_type(content_type: str | None) -> bool:
    """True for ``application/json`` and ``application/<x>+json`` (parameters such as
    ``charset`` ignored); False for anything else, a missing header included."""
    if content_type is None or not content_type.strip():
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    kind, _, subtype = media.partition("/")
    return kind == "application" and (subtype == "json" or subtype.endswith("+json"))


def token_ok(authorization: str | None, token: str) -> bool:
    """True when ``authorization`` is ``Bearer <token>`` (constant-time comparison)."""
    if not authorization:
        return False
    scheme, _, given = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


class GuardMiddleware:
    """Auth check, then body-size limit, for every HTTP request (see module docstring)."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def _reply(self, scope: Scope, send: Send, status: int, detail: str, **kw: Any) -> None:
        response = problem_response(None, status, detail, instance=scope.get("path", ""), **kw)
        await response(scope, _noop_receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope.get("method", "GET").upper()
        path = scope.get("path", "")
        token = self.settings.api_token
        needs_token = token and path not in OPEN_PATHS and (
            method not in READ_METHODS or self.settings.reads_require_token
        )
        if needs_token and not token_ok(_header(scope, b"authorization"), token):
            await self._reply(
                scope, send, 401, "a valid 'Authorization: Bearer <token>' header is required",
                slug="unauthorized", headers={"WWW-Authenticate": 'Bearer realm="ld3"'},
            )
            return
        bad = check_path(path) + check_query(scope.get("query_string", b""))
        if bad:
            await self._invalid(scope, send, bad)
            return
        limit = self.settings.max_body_bytes
        length = _header(scope, b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await self._reply(scope, send, 400, "invalid Content-Length header",
                                  slug="bad-request")
                return
            if declared > limit:
                await self._reply(
                    scope, send, 413, f"request body larger than {limit} bytes",
                    slug="body-too-large",
                )
                return
        chunked = _header(scope, b"transfer-encoding") is not None
        if method in READ_METHODS and length is None and not chunked:
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > limit:
                await self._reply(
                    scope, send, 413, f"request body larger than {limit} bytes",
                    slug="body-too-large",
                )
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        content_type = _header(scope, b"content-type")
        if method in BODY_METHODS and body and not is_json_type(content_type):
            given = (content_type or "").split(";", 1)[0].strip()[:100]
            accept = {"POST": "Accept-Post", "PATCH": "Accept-Patch"}.get(method)
            await self._reply(
                scope, send, 415,
                f"the request body must be {JSON_TYPE} (Content-Type: {JSON_TYPE}), "
                + (f"not {given!r}" if given else "and the request has no Content-Type"),
                slug="unsupported-media-type",
                errors=[{"header": "content-type", "detail": f"expected {JSON_TYPE}"}],
                headers={accept: JSON_TYPE} if accept else None,
            )
            return
        bad = check_json_text(body)
        if bad:
            await self._invalid(scope, send, bad)
            return
        await self.app(scope, _replay(body, receive), send)

    async def _invalid(self, scope: Scope, send: Send, errors: list[dict[str, Any]]) -> None:
        await self._reply(scope, send, 422, "; ".join(sorted({e["detail"] for e in errors})),
                          slug="validation-error", errors=errors)


async def _noop_receive() -> Message:
    return {"type": "http.disconnect"}


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
