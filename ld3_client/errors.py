""":class:`ServiceError`: every failure of a call to the service, with its problem+json."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

PROBLEM_TYPE_PREFIX = "urn:ld3:problem:"


class ServiceError(Exception):
    """A call to the service failed.

    Args:
        status: the HTTP status of the answer; None when the service could not be reached
            or answered something that is not HTTP.
        title: the problem's title (e.g. ``Not Found``), or what went wrong.
        detail: the problem's detail (one sentence), or the transport error.
        problem: the whole problem+json body (``type``, ``title``, ``status``, ``detail``,
            ``instance``, ``errors``); empty when there is none.
    """

    def __init__(
        self,
        status: int | None,
        title: str,
        detail: str | None = None,
        problem: Mapping[str, Any] | None = None,
    ) -> None:
        self.status = status
        self.title = title
        self.detail = detail
        self.problem: dict[str, Any] = dict(problem or {})
        super().__init__(self.message())

    @property
    def slug(self) -> str | None:
        """The problem type without its ``urn:ld3:problem:`` prefix (``not-found``, ...)."""
        kind = str(self.problem.get("type") or "")
        return kind[len(PROBLEM_TYPE_PREFIX):] if kind.startswith(PROBLEM_TYPE_PREFIX) else None

    @property
    def errors(self) -> list[dict[str, Any]]:
        """The problem's field errors (``pointer``/``parameter``/``header`` + ``detail``)."""
        errors = self.problem.get("errors")
        return [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []

    def message(self) -> str:
        """One line: ``HTTP <status> <title>: <detail>`` plus field errors the detail does not
        already say; ``<title>: <detail>`` when there was no HTTP answer."""
        head = self.title if self.status is None else f"HTTP {self.status} {self.title}"
        text = f"{head}: {self.detail}" if self.detail and self.detail != self.title else head
        for error in self.errors:
            said = str(error.get("detail") or "")
            if said and said not in text:
                where = error.get("pointer") or error.get("parameter") or error.get("header")
                text += f" ({where}: {said})" if where else f" ({said})"
        return " ".join(text.split())

    @classmethod
    def from_response(cls, response: httpx.Response) -> ServiceError:
        """The error of a 4xx/5xx answer (problem+json, other JSON or plain text)."""
        reason = response.reason_phrase or "Error"
        try:
            data = response.json()
        except ValueError:
            text = " ".join(response.text.split())[:300]
            return cls(response.status_code, reason, text or None)
        if not isinstance(data, dict):
            return cls(response.status_code, reason, str(data)[:300])
        detail = data.get("detail")
        return cls(response.status_code, str(data.get("title") or reason),
                   None if detail is None else str(detail), data)

    @classmethod
    def unreachable(cls, url: str, exc: Exception) -> ServiceError:
        """The error of a request that got no answer (connection refused, timeout, ...)."""
        return cls(None, f"cannot reach the API at {url}", str(exc) or type(exc).__name__)
