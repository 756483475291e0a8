"""Solver names, their maximal orders, and the order used at each step."""

from __future__ import annotations

SOLVERS = ("euler", "dpm++", "unipc", "ipndm")

_MAX_ORDER = {"euler": 1, "dpm++": 3, "unipc": 3, "ipndm": 4}
_VARIANTS = {"euler": ("default",), "dpm++": ("taylor", "diffusers"), "unipc": ("bh2", "bh1"),
             "ipndm": ("fixed", "variable")}
_ALIASES = {
    "ddim": "euler",
    "dpmpp": "dpm++",
    "dpm_solver++": "dpm++",
    "dpmsolver++": "dpm++",
    "dpm-solver++": "dpm++",
    "uni_pc": "unipc",
    "uni-pc": "unipc",
}

# diffusers applies lower_order_final only below this many steps; we follow that rule.
LOWER_ORDER_FINAL_BELOW = 15


def canonical_solver(name: str) -> str:
    """The canonical solver name for ``name`` (aliases like ``ddim`` -> ``euler``)."""
    if not isinstance(name, str):
        raise ValueError(f"solver must be a string, got {type(name).__name__}")
    key = name.lower()
    key = _ALIASES.get(key, key)
    if key not in _MAX_ORDER:
        raise ValueError(f"unknown solver {name!r}; known: {', '.join(SOLVERS)}")
    return key


def max_order(solver: str) -> int:
    """Highest order the solver supports (euler 1, dpm++ 3, unipc 3, ipndm 4)."""
    return _MAX_ORDER[canonical_solver(solver)]


def variants(solver: str) -> tuple[str, ...]:
    """Accepted ``variant`` values of a solver; the first is the default."""
    return _VARIANTS[canonical_solver(solver)]


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
