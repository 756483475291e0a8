"""Turning a :class:`ld3_core.spec.SpecError` into the API's 422 problem."""

from __future__ import annotations

from typing import Any, Literal

from api.problems import Problem
from ld3_core.spec import SpecError


def field_error(name: str, detail: str, where: Literal["pointer", "parameter"]) -> dict[str, Any]:
    """One RFC 9457 ``errors`` member: ``{"pointer": "#/<name>"}`` for a body field,
    ``{"parameter": "<name>"}`` for a path or query parameter."""
    return {where: f"#/{name}" if where == "pointer" else name, "detail": detail}


def spec_problem(exc: SpecError, where: Literal["pointer", "parameter"]) -> Problem:
    """The 422 ``validation-error`` problem listing every bad field of ``exc``."""
    errors = [field_error(name, detail, where) for name, detail in exc.errors]
    return Problem(422, str(exc), slug="validation-error", errors=errors)
