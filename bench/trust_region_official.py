"""What moves the "paper" trust-region result: orders, p, and the optimizer.

On ``builtin:gmm-digits`` (exact posterior-mean denoiser, float64) prints the mean L2 error to
the exact ODE solution (64 fixed x_T) divided by the logSNR-steps error, for:

- ``paper``: ``optimize(variant="paper")`` (orders 1-2-3..3-2-1, trunc 3, our optimizer);
- ``sampler-orders``: ``optimize(variant="stepwise", trunc=3)``: the same trunc-3 objective
  with the sampler's own orders (1-2..2-1 for order 2), i.e. an earlier version's
  ``variant="paper"`` at NFE <= 7;
- ``fd``: the paper objective minimized as the authors' step_optim.py does: SciPy
  ``trust-constr`` with finite-difference gradients and default limits, constraint
  ``lambda_{i+1} >= lambda_i``, from uniform lambda (our code, their settings).

each for p = 1 and p = 2 (the authors' code hard-codes p = 2).

    python bench/trust_region_official.py [--nfes 6 8 10 12] [--solvers unipc dpm++]
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
import torch
from scipy.optimize import LinearConstraint, minimize

from ld3_core import heuristics, models
from ld3_core import trust_region as tr
from ld3_core.reference import exact_solution
from ld3_core.schedules import NoiseSchedule
from ld3_core.solvers import solve


def finite_difference_paper(schedule: NoiseSchedule, nfe: int, p: float) -> torch.Tensor:
    """The paper objective minimized with SciPy's defaults (finite differences), from logSNR.

    Returns (nfe+1,) decreasing times t."""
    lam0, lam1 = schedule.lambda_min, schedule.lambda_max
    orders = tr.paper_orders(nfe)
    diff = np.zeros((nfe, nfe - 1))
    for i in range(nfe - 1):
        diff[i, i], diff[i + 1, i] = 1.0, -1.0
    lower = np.zeros(nfe)
    lower[0], lower[-1] = lam0, -lam1

    def fun(x: np.ndarray) -> float:
        lam = np.concatenate([[lam0], x, [lam1]])
        return tr.objective_lambdas(lam, schedule, orders, p, tr.PAPER_TRUNC)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = minimize(fun, np.linspace(lam0, lam1, nfe + 1)[1:-1], method="trust-constr",
                       constraints=[LinearConstraint(diff, lower, np.inf)])
    lam = np.maximum.accumulate(np.concatenate([[lam0], res.x, [lam1]]))
    t = schedule.t_of_lambda(torch.tensor(lam, dtype=torch.float64)).clone()
    t[0], t[-1] = schedule.t_max, schedule.t_min
    return t


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nfes", type=int, nargs="+", default=[6, 8, 10, 12])
    parser.add_argument("--solvers", nargs="+", default=["unipc", "dpm++"])
    parser.add_argument("--n", type=int, default=64)
    args = parser.parse_args(argv)
    model = models.load("builtin:gmm-digits", dtype="float64")
    sched = model.schedule
    x_T = model.sample_prior(args.n, torch.Generator().manual_seed(0), dtype=torch.float64)
    exact = exact_solution(model, x_T, rtol=1e-8)

    def error(ts: torch.Tensor, solver: str) -> float:
        with torch.no_grad():
            x = solve(model, x_T, ts, solver, 2)
        return float((x - exact).flatten(1).norm(dim=1).mean())

    cols = [f"{name}-p{p:g}" for p in (1, 2) for name in ("paper", "sampler-orders", "fd")]
    print(f"{'solver':>7} {'NFE':>4} " + " ".join(f"{c:>17}" for c in cols))
    for solver in args.solvers:
        for nfe in args.nfes:
            base = error(heuristics.discretize("logsnr", nfe, sched), solver)
            cells = []
            for p in (1.0, 2.0):
                for ts in (tr.optimize(sched, nfe, solver, 2, p=p, variant="paper"),
                           tr.optimize(sched, nfe, solver, 2, p=p, variant="stepwise", trunc=3),
                           finite_difference_paper(sched, nfe, p)):
                    cells.append(f"{error(ts, solver) / base:>17.3f}")
            print(f"{solver:>7} {nfe:>4} " + " ".join(cells), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
