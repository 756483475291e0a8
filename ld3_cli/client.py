"""A small HTTP client of the ld3-service API (used by ``ld3 submit``, ``status``, ``get``)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from ld3_cli.errors import CLIError


class APIClient:
    """Calls the API at ``base_url``; errors become :class:`CLIError` with one-line messages.

    Args:
        base_url: e.g. ``http://127.0.0.1:8000``.
        token: bearer token sent with every request (None: none).
        timeout: seconds per request.
    """

    def __init__(self, base_url: str, token: str | None = None, timeout: float = 30.0) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise CLIError(f"--url must start with http:// or https://, got {base_url!r}", 2)
        self.base_url = base_url.rstrip("/")
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    def close(self) -> None:
        """Close the connection pool."""
        self.http.close()

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        """Send a request; raise :class:`CLIError` on a connection error or a 4xx/5xx."""
        try:
            response = self.http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise CLIError(f"cannot reach the API at {self.base_url}: {exc}") from exc
        if response.status_code >= 400:
            raise CLIError(f"HTTP {response.status_code}: {problem_text(response)}")
        return response

    def submit(self, body: dict[str, Any], idempotency_key: str | None = None) -> dict[str, Any]:
        """``POST /jobs``; returns the job JSON."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self.request("POST", "/jobs", json=body, headers=headers).json()

    def job(self, job_id: str) -> dict[str, Any]:
        """``GET /jobs/{id}``."""
        return self.request("GET", f"/jobs/{quote(job_id, safe='')}").json()

    def cancel(self, job_id: str) -> dict[str, Any]:
        """``POST /jobs/{id}/cancel``: the job after the cancel request."""
        return self.request("POST", f"/jobs/{quote(job_id, safe='')}/cancel").json()

    def schedule(
        self, model: str, solver: str, nfe: int, order: int | None = None, fmt: str = "native"
    ) -> Any:
        """``GET /schedules/{model}/{solver}/{nfe}?format=&order=``; returns the JSON body."""
        params: dict[str, Any] = {}
        if fmt != "native":
            params["format"] = fmt
        if order is not None:
            params["order"] = order
        path = f"/schedules/{quote(model, safe='/:@')}/{quote(solver, safe='')}/{int(nfe)}"
        return self.request("GET", path, params=params).json()


def problem_text(response: httpx.Response) -> str:
    """One line from a problem+json answer (``title: detail``), or the start of the body."""
    try:
        data = response.json()
    except ValueError:
        return response.text.strip().replace("\n", " ")[:300] or response.reason_phrase
    if isinstance(data, dict):
        title = str(data.get("title") or response.reason_phrase)
        detail = data.get("detail")
        text = f"{title}: {detail}" if detail and detail != title else title
        errors = data.get("errors")
        if isinstance(errors, list) and errors:
            first = errors[0]
            if isinstance(first, dict):
                where = first.get("pointer") or first.get("parameter") or ""
                text += f" ({where} {first.get('detail', '')})".replace("( ", "(")
        return text.replace("\n", " ")
    return str(data)[:300]
