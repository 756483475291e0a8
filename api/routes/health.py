"""``/healthz`` (process up) and ``/readyz`` (database and broker reachable)."""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api.problems import problem_response
from registry.db import ping

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process is up")
async def healthz() -> dict[str, str]:
    """Always ``{"status": "ok"}`` while the process serves requests (no dependencies)."""
    return {"status": "ok"}


async def _check(fn: Any, timeout: float) -> str:
    try:
        with anyio.fail_after(timeout):
            result = await anyio.to_thread.run_sync(fn, abandon_on_cancel=True)
    except TimeoutError:
        return f"timeout after {timeout:g}s"
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"error: {first[:200]}"
    return "ok" if result is not False else "unreachable"


@router.get("/readyz", summary="Readiness: database and broker reachable",
            responses={503: {"content": {"application/problem+json": {}}}})
async def readyz(request: Request) -> JSONResponse:
    """200 ``{"status": "ready", "checks": {...}}`` when ``SELECT 1`` works and
    ``dispatcher.ping()`` is true; 503 problem+json with the same ``checks`` otherwise."""
    state = request.app.state
    timeout = state.settings.ready_timeout_s
    checks = {
        "database": await _check(lambda: ping(state.engine), timeout),
        "broker": await _check(state.dispatcher.ping, timeout),
    }
    if all(v == "ok" for v in checks.values()):
        return JSONResponse({"status": "ready", "checks": checks,
                             "mode": "embedded" if state.settings.embedded else "full"})
    failed = ", ".join(k for k, v in checks.items() if v != "ok")
    return problem_response(
        request, 503, f"not ready: {failed} unavailable", slug="not-ready",
        headers={"Retry-After": "5"}, checks=checks,
    )
