"""ASGI middleware: bearer-token auth and the request body size limit.

Both answer with problem+json before any route runs, so a rejected request stores nothing:

- **auth**: when ``Settings.api_token`` is set, writes (every method but GET/HEAD/OPTIONS)
  need ``Authorization: Bearer <token>``; reads too when ``reads_require_token``. Probes
  (``/healthz``, ``/readyz``) and the OpenAPI docs stay open. Missing/wrong token -> 401
  with ``WWW-Authenticate: Bearer``.
- **body limit**: a ``Content-Length`` over ``max_body_bytes`` -> 413 at once; otherwise the
  body is read (streamed, chunked or not) and 413 is answered as soon as it passes the limit.
  The buffered body is then replayed to the app.
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
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/docs", "/docs/oauth2-redirect", "/redoc",
                        "/openapi.json"})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


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
