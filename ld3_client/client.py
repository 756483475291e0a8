""":class:`ServiceClient`: calls the ld3-service API; every failure is a ServiceError."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from ld3_client.errors import ServiceError
from ld3_client.urls import JOBS, MODELS, job_cancel_path, job_path, model_path, schedule_path

MAX_CATALOG_PAGES = 20


class ServiceClient:
    """A client of the API at ``base_url``.

    Args:
        base_url: e.g. ``http://127.0.0.1:8000`` (a path prefix is kept).
        token: bearer token sent with every request (None: none).
        timeout: seconds per request (for the client made here; a given ``http`` keeps its
            own).
        http: an ``httpx.Client`` to send the requests with (tests pass one with a mock
            transport, or a FastAPI ``TestClient``); it is left open by :meth:`close`.
        headers: more headers sent with every request.

    Raises ValueError when ``base_url`` is not an http(s) URL.
    """

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        timeout: float = 30.0,
        http: httpx.Client | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ValueError(f"the API URL must start with http:// or https://, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.headers: dict[str, str] = {"Accept": "application/json"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.headers.update(headers or {})
        self._own_http = http is None
        self.http = httpx.Client(timeout=timeout) if http is None else http

    def __enter__(self) -> ServiceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool made here (a given ``http`` client stays open)."""
        if self._own_http:
            self.http.close()

    def url(self, path: str) -> str:
        """The absolute URL of a service path (``/jobs/...``) or link; absolute URLs as given."""
        if path.startswith(("http://", "https://")):
            return path
        return f"{self.base_url}/{path.lstrip('/')}"

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """Send a request to ``path``; returns the 2xx/3xx response, raises ServiceError
        when the API cannot be reached or answers 4xx/5xx."""
        try:
            response = self.http.request(
                method, self.url(path), params=dict(params) if params else None, json=json,
                headers={**self.headers, **(headers or {})},
            )
        except httpx.HTTPError as exc:
            raise ServiceError.unreachable(self.base_url, exc) from exc
        if response.status_code >= 400:
            raise ServiceError.from_response(response)
        return response

    def get_json(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        """``GET path`` (a service path or a link of an answer); returns the decoded JSON."""
        return _json(self.request("GET", path, params=params))

    def submit_job(
        self, body: Mapping[str, Any], idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """``POST /jobs`` with ``body`` (kind, model, solver, nfe, order, options); returns
        the job."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return _json(self.request("POST", JOBS, json=dict(body), headers=headers))

    def job(self, job_id: str) -> dict[str, Any]:
        """``GET /jobs/{id}``: the job (state, stage, progress, stage_progress, links, ...)."""
        return self.get_json(job_path(job_id))

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        """``POST /jobs/{id}/cancel``: the job after the cancel request."""
        return _json(self.request("POST", job_cancel_path(job_id)))

    def schedule(
        self, model: str, solver: str, nfe: int, *, order: int | None = None,
        fmt: str = "native",
    ) -> dict[str, Any]:
        """``GET /schedules/{model}/{solver}/{nfe}?format=&order=``: the best published (or
        an interpolated) schedule in format ``fmt``."""
        params: dict[str, Any] = {"format": fmt}
        if order is not None:
            params["order"] = int(order)
        return self.get_json(schedule_path(model, solver, nfe), params)

    def model(self, model_id: str) -> dict[str, Any]:
        """``GET /models/{id}``: one catalog entry (ServiceError 404 when unknown)."""
        return self.get_json(model_path(model_id))

    def models(self) -> list[dict[str, Any]]:
        """``GET /models``, every page (at most 20): the catalog, built-in models first."""
        items: list[dict[str, Any]] = []
        for _ in range(MAX_CATALOG_PAGES):
            page = self.get_json(MODELS, {"offset": len(items)})
            got = list(page.get("items") or []) if isinstance(page, dict) else []
            items.extend(got)
            if not got or len(items) >= int(page.get("total") or 0):
                break
        return items


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        text = " ".join(response.text.split())[:200]
        raise ServiceError(response.status_code, "the answer is not JSON", text or None) from None
