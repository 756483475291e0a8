"""Benchmark of trust-region time steps: optimization time and error on builtin:gmm-digits.

Prints two tables:

1. seconds per schedule (``ld3_core.trust_region.optimize_detailed``, wall clock, this CPU)
   for NFE 4..20, for each objective variant, with the SciPy iteration count;
2. on ``builtin:gmm-digits`` (exact posterior-mean denoiser, float64), the mean L2 error to
   the exact ODE solution (``ld3_core.reference.exact_solution``) of the trust-region steps,
   as a ratio to uniform-lambda (logSNR) steps and to the best heuristic at that NFE.

    python bench/trust_region.py                       # full run (a few minutes on 1 core)
    python bench/trust_region.py --quick               # NFE 5, 6, 8, 10, n = 16
    python bench/trust_region.py --nfes 5 10 --n 32 --solvers unipc --variants paper
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

from ld3_core import heuristics, models
from ld3_core import trust_region as tr
from ld3_core.reference import exact_solution
from ld3_core.solvers import solve


def _timing(schedule, nfes, solver, order, variants, repeats):
    print(f"\n## seconds per schedule ({solver}-{order}, {schedule!r}, p=1, init=logsnr;"
          f" best of {repeats})")
    print(f"{'NFE':>4} " + " ".join(f"{v + ' s':>12} {'iters':>6}" for v in variants))
    for nfe in nfes:
        cells = []
        for variant in variants:
            best, iters = float("inf"), 0
            for _ in range(repeats):
                res = tr.optimize_detailed(schedule, nfe, solver, order, 1, variant=variant)
                if res.seconds < best:
                    best, iters = res.seconds, res.iterations
            cells.append(f"{best:>12.3f} {iters:>6d}")
        print(f"{nfe:>4} " + " ".join(cells), flush=True)


def _errors(model, nfes, solvers, variants, n, seed, rtol):
    x_T = model.sample_prior(n, torch.Generator().manual_seed(seed), dtype=torch.float64)
    start = time.perf_counter()
    exact = exact_solution(model, x_T, rtol=rtol)
    print(f"\n## error to the exact ODE solution on {model.name} (n={n}, seed={seed}; "
          f"reference {time.perf_counter() - start:.1f}s, rtol {rtol:g})")
    print("ratio < 1: the trust-region steps are better")

    def error(ts, solver):
        with torch.no_grad():
            x = solve(model, x_T, ts, solver, 2)
        return float((x - exact).flatten(1).norm(dim=1).mean())

    head = " ".join(f"{v + '/logsnr':>16} {v + '/best':>14}" for v in variants)
    print(f"{'solver':>7} {'NFE':>4} {'logsnr err':>11} {'best heur':>15} {head}")
    for solver in solvers:
        for nfe in nfes:
            heur = {k: error(t, solver) for k, t in
                    heuristics.all_heuristics(nfe, model.schedule).items()}
            best = min(heur, key=heur.__getitem__)
            cells = []
            for variant in variants:
                ts = tr.optimize(model.schedule, nfe, solver, 2, p=1, variant=variant)
                e = error(ts, solver)
                cells.append(f"{e / heur['logsnr']:>16.3f} {e / heur[best]:>14.3f}")
            print(f"{solver:>7} {nfe:>4} {heur['logsnr']:>11.4f} "
                  f"{best + ' ' + format(heur[best], '.4f'):>15} " + " ".join(cells), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nfes", type=int, nargs="+", default=None)
    parser.add_argument("--timing-nfes", type=int, nargs="+", default=list(range(4, 21)))
    parser.add_argument("--n", type=int, default=64, help="samples for the error table")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rtol", type=float, default=1e-9, help="exact_solution tolerance")
    parser.add_argument("--solvers", nargs="+", default=["unipc", "dpm++"])
    parser.add_argument("--variants", nargs="+", default=list(tr.VARIANTS))
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="NFE 5 6 8 10, n = 16, rtol 1e-7")
    parser.add_argument("--skip-timing", action="store_true")
    parser.add_argument("--skip-errors", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.nfes = args.nfes or [5, 6, 8, 10]
        args.timing_nfes = [4, 6, 8, 10, 12, 15, 20]
        args.n, args.rtol = 16, 1e-7
    nfes = args.nfes or [4, 5, 6, 8, 10, 12, 15, 20]
    bad = [v for v in args.variants if v not in tr.VARIANTS]
    if bad or args.n < 1 or min(nfes + args.timing_nfes) < 1:
        print(f"error: bad variants {bad} / n / NFEs", file=sys.stderr)
        return 2
    load = os.getloadavg()
    print(f"# trust-region bench: torch threads {torch.get_num_threads()}, "
          f"{os.cpu_count()} CPUs, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    model = models.load("builtin:gmm-digits", dtype="float64")
    if not args.skip_timing:
        _timing(model.schedule, args.timing_nfes, "unipc", 2, args.variants, args.repeats)
    if not args.skip_errors:
        _errors(model, nfes, args.solvers, args.variants, args.n, args.seed, args.rtol)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
