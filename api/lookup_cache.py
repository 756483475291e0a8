"""Ready-to-send answers of ``GET /schedules/{model}/{solver}/{nfe}``, per process.

The lookup is what every sampler calls on every generation, so a hit costs no database
session, no serialization and no hashing: an :class:`Entry` holds the JSON bytes, the ETag
(computed once, when the entry is built) and the headers; a matching ``If-None-Match`` is a
304 built from the entry's headers alone.

Invalidation (published schedules are only ever added, never changed):

- a publication in THIS process (embedded runner, tests) clears the cache at once: the
  registry counts them (:func:`registry.schedules.local_publications`);
- a publication in ANOTHER process (a Celery worker) is found by a version check: the
  largest schedule id (:func:`registry.schedules.schedules_version`, one index lookup) is
  re-read at most every ``check_interval`` seconds (``LD3_SCHEDULE_CACHE_CHECK_S``, default
  1 s; 0 = on every request) and the cache is cleared when it changed. So a schedule
  published by a worker is served at most ``check_interval`` seconds later.

Only answers found in the database are cached (200s, published or interpolated), never errors.
Entries are keyed by the request's (path, raw query string). The route fills the cache;
:class:`LookupFastPath`, an ASGI middleware inside the auth/input guard, answers repeated
lookups from it before routing, dependency injection and parameter validation (a hit was
validated by the route when it was built).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from api.schedule_service import etag_matches
from registry.schedules import local_publications


@dataclass(frozen=True)
class Entry:
    """One cached answer: the JSON ``body`` bytes, its ``etag`` and the response headers."""

    body: bytes
    etag: str
    headers: dict[str, str] = field(default_factory=dict)
    raw_200: list[tuple[bytes, bytes]] = field(default_factory=list, compare=False)
    raw_304: list[tuple[bytes, bytes]] = field(default_factory=list, compare=False)

    def __post_init__(self) -> None:
        common = [(k.lower().encode("latin-1"), v.encode("latin-1"))
                  for k, v in self.headers.items()]
        self.raw_304.extend(common)
        self.raw_200.extend([*common, (b"content-type", b"application/json"),
                             (b"content-length", str(len(self.body)).encode())])

    def respond(self, if_none_match: str | None) -> Response:
        """The 200 answer, or 304 when ``if_none_match`` matches the ETag."""
        if if_none_match and etag_matches(if_none_match, self.etag):
            return Response(status_code=304, headers=self.headers)
        return Response(self.body, media_type="application/json", headers=self.headers)

    async def send(self, send: Send, if_none_match: str | None, head: bool) -> None:
        """Send the answer straight over ASGI (no Response object)."""
        if if_none_match and etag_matches(if_none_match, self.etag):
            await send({"type": "http.response.start", "status": 304, "headers": self.raw_304})
            await send({"type": "http.response.body", "body": b""})
            return
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_200})
        await send({"type": "http.response.body", "body": b"" if head else self.body})


def encode(body: Any) -> bytes:
    """JSON bytes exactly as ``JSONResponse`` renders ``body``."""
    return json.dumps(body, ensure_ascii=False, allow_nan=False, indent=None,
                      separators=(",", ":")).encode("utf-8")


class LookupCache:
    """Thread-safe map key -> :class:`Entry`, cleared on publication (module docstring).

    Args:
        version: ``version() -> int``, the registry's schedule version (runs a query).
        check_interval: seconds between two ``version()`` calls (0: every :meth:`get`).
        max_entries: the cache is cleared when it would grow beyond this.
    """

    def __init__(
        self, version: Callable[[], int], check_interval: float = 1.0, max_entries: int = 4096
    ) -> None:
        self._version_fn = version
        self.check_interval = float(check_interval)
        self.max_entries = int(max_entries)
        self._entries: dict[Any, Entry] = {}
        self._lock = threading.Lock()
        self._local = local_publications()
        self._version: int | None = None
        self._checked = -float("inf")
        self.generation = 0
        """Incremented on every clear; :meth:`put` drops entries built before a clear."""

    def due(self) -> bool:
        """True when the next :meth:`get` should run the version check first."""
        return (self._local != local_publications()
                or time.monotonic() - self._checked >= self.check_interval)

    def refresh(self) -> None:
        """Run the version check now; clear the cache if anything was published."""
        local = local_publications()
        version = self._version_fn()
        with self._lock:
            if local != self._local or version != self._version:
                self._entries.clear()
                self.generation += 1
            self._local, self._version = local, version
            self._checked = time.monotonic()

    def get(self, key: Any) -> Entry | None:
        """The cached entry of ``key`` (call :meth:`refresh` first when :meth:`due`)."""
        return self._entries.get(key)

    def put(self, key: Any, entry: Entry, generation: int) -> None:
        """Store ``entry`` under ``key`` if it was built in ``generation`` (the value of
        :attr:`generation` read before the database was asked), i.e. no clear came since."""
        with self._lock:
            if generation != self.generation or local_publications() != self._local:
                return
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
            self._entries[key] = entry

    def __len__(self) -> int:
        return len(self._entries)


def request_key(scope: Scope) -> tuple[str, bytes]:
    """The cache key of a lookup request: (decoded path, raw query string)."""
    return scope.get("path", ""), scope.get("query_string", b"")


class LookupFastPath:
    """ASGI middleware: answer ``GET``/``HEAD /schedules/{model}/{solver}/{nfe}`` from the
    :class:`LookupCache` when it holds the answer; everything else goes on to the app."""

    def __init__(self, app: ASGIApp, cache: LookupCache) -> None:
        self.app = app
        self.cache = cache

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] == "http" and scope.get("method") in ("GET", "HEAD")
                and scope.get("path", "").startswith("/schedules/")
                and not scope["path"].startswith("/schedules/id/")):
            cache = self.cache
            try:
                if cache.due():
                    await run_in_threadpool(cache.refresh)
            except Exception:  # noqa: BLE001 - database trouble: the route answers (503)
                await self.app(scope, receive, send)
                return
            entry = cache.get(request_key(scope))
            if entry is not None:
                inm = None
                for name, value in scope.get("headers", ()):
                    if name == b"if-none-match":
                        inm = value.decode("latin-1")
                        break
                await entry.send(send, inm, scope["method"] == "HEAD")
                return
        await self.app(scope, receive, send)
