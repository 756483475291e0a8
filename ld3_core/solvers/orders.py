"""The order used at each step of a multistep solver; the solver names and their maximal
orders come from :mod:`ld3_core.spec` (re-exported here)."""

from __future__ import annotations

from ld3_core.spec import SOLVER_VARIANTS, SOLVERS, canonical_solver, max_order

__all__ = ["SOLVERS", "canonical_solver", "check_order", "max_order", "step_orders", "variants"]

# diffusers applies lower_order_final only below this many steps; we follow that rule.
LOWER_ORDER_FINAL_BELOW = 15


def variants(solver: str) -> tuple[str, ...]:
    """Accepted ``variant`` values of a solver; the first is the default."""
    return SOLVER_VARIANTS[canonical_solver(solver)]


def check_order(solver: str, order: int) -> int:
    """Validate ``order`` for ``solver``; returns it as int or raises ValueError."""
    if isinstance(order, bool) or not isinstance(order, int):
        raise ValueError(f"order must be an integer, got {order!r}")
    top = max_order(solver)
    if not 1 <= order <= top:
        raise ValueError(f"solver {solver!r} supports orders 1..{top}, got {order}")
    return order


def step_orders(nfe: int, order: int, lower_order_final: bool = True) -> list[int]:
    """Order used at each of the ``nfe`` steps of a multistep solver of nominal ``order``.

    Warm-up: step i uses at most i+1 (only i+1 model outputs exist). With
    ``lower_order_final`` and ``nfe < 15`` (diffusers' rule), step i also uses at most
    ``nfe - i``, so the last step is first order. Returns a list of ``nfe`` ints.
    """
    if nfe < 1:
        raise ValueError(f"nfe must be >= 1, got {nfe}")
    out = []
    for i in range(nfe):
        k = min(order, i + 1)
        if lower_order_final and nfe < LOWER_ORDER_FINAL_BELOW:
            k = min(k, nfe - i)
        out.append(k)
    return out
