"""Checks of job requests against ``ld3_core`` (solver names, orders) and the settings (NFE).

Solver names and maximum orders come from ``ld3_core.solvers.SOLVERS`` / ``max_order``; while
that module is not importable the known table below is used.
"""

from __future__ import annotations

from typing import Any

from api.problems import Problem

FALLBACK_MAX_ORDER = {"euler": 1, "dpm++": 3, "unipc": 3, "ipndm": 4}


def solvers() -> tuple[str, ...]:
    """Solver names accepted in jobs and schedule URLs (``ld3_core.solvers.SOLVERS``)."""
    try:
        from ld3_core.solvers import SOLVERS
    except ImportError:
        return tuple(FALLBACK_MAX_ORDER)
    return tuple(SOLVERS)


def max_order(solver: str) -> int:
    """Highest order ``solver`` supports (``ld3_core.solvers.max_order``)."""
    try:
        from ld3_core.solvers import max_order as core_max_order
    except ImportError:
        return FALLBACK_MAX_ORDER[solver]
    return int(core_max_order(solver))


def default_order(solver: str) -> int:
    """Order used when a request gives none: 2, or the solver's maximum if that is lower."""
    return min(2, max_order(solver))


def field_error(pointer: str, detail: str, where: str = "pointer") -> dict[str, Any]:
    """One RFC 9457 ``errors`` member."""
    return {where: pointer, "detail": detail}


def check_solver_order(
    solver: str, order: int | None, *, where: str = "pointer"
) -> tuple[int, list[dict[str, Any]]]:
    """Validate ``solver`` and ``order`` (None -> default); returns (order, errors)."""
    names = solvers()
    sp, op = ("#/solver", "#/order") if where == "pointer" else ("solver", "order")
    if solver not in names:
        return 0, [field_error(sp, f"unknown solver {solver!r}; known: {', '.join(names)}",
                               where)]
    top = max_order(solver)
    if order is None:
        return default_order(solver), []
    if not 1 <= order <= top:
        return order, [field_error(op, f"order must be 1..{top} for solver {solver!r}", where)]
    return order, []


def raise_if(errors: list[dict[str, Any]]) -> None:
    """Raise a 422 validation problem when ``errors`` is not empty."""
    if errors:
        raise Problem(
            422, "; ".join(e["detail"] for e in errors), slug="validation-error", errors=errors
        )
