"""Benchmark of trust-region time steps: optimization time and error on analytic models.

Prints two tables:

1. seconds per schedule (``ld3_core.trust_region.optimize_detailed``, wall clock, this CPU)
   for NFE 4..20, for each objective variant, with the SciPy iteration count and whether it
   converged (``TrustRegionResult.success``);
2. per model (``--models``: ``builtin:gmm-digits`` by default, or any ``zoo:<name>`` of
   ``bench/analytic_zoo.py``; exact posterior-mean denoisers, float64), the mean L2 error to
   the exact ODE solution (``ld3_core.reference.exact_solution``) of the trust-region steps,
   as a ratio to uniform-lambda (logSNR) steps and to the best heuristic at that NFE.

Variants: ``paper`` (trunc 3 at every NFE, as the authors' step_optim.py), ``stepwise``, and
``paper-trunc0`` (bench only: the paper objective with trunc 0 above NFE 7, the rule of the
step_optim.py comment and of an earlier version of this project).

    python bench/trust_region.py                       # full run (a few minutes on 1 core)
    python bench/trust_region.py --quick               # NFE 5, 6, 8, 10, n = 16
    python bench/trust_region.py --nfes 5 10 --n 32 --solvers unipc --variants paper
    python bench/trust_region.py --skip-timing --models builtin:gmm-digits \
        zoo:vpl-d16-k3-separated zoo:vpc-d256-k2-overlapping zoo:edm-d16-k32-anisotropic
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from ld3_core import heuristics, models
from ld3_core import trust_region as tr
from ld3_core.reference import exact_solution
from ld3_core.solvers import solve

BENCH_VARIANTS = (*tr.VARIANTS, "paper-trunc0")


def _options(variant: str, nfe: int) -> dict[str, Any]:
    """optimize() keywords of a bench variant (``paper-trunc0``: trunc 0 above NFE 7)."""
    if variant == "paper-trunc0":
        return {"variant": "paper", "trunc": 3 if nfe <= 7 else 0}
    return {"variant": variant}


def _load(name: str) -> Any:
    """``builtin:...`` through ld3_core.models (float64), ``zoo:<name>`` from analytic_zoo."""
    if name.startswith("zoo:"):
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from analytic_zoo import build

        return build(name[len("zoo:"):])
    return models.load(name, dtype="float64")


def _timing(schedule, nfes, solver, order, variants, repeats):
    print(f"\n## seconds per schedule ({solver}-{order}, {schedule!r}, p=1, init=logsnr;"
          f" best of {repeats})")
    print(f"{'NFE':>4} " + " ".join(f"{v + ' s':>12} {'iters':>6}" for v in variants))
    for nfe in nfes:
        cells = []
        for variant in variants:
            best, iters, ok = float("inf"), 0, True
            for _ in range(repeats):
                res = tr.optimize_detailed(schedule, nfe, solver, order, 1,
                                           **_options(variant, nfe))
                if res.seconds < best:
                    best, iters, ok = res.seconds, res.iterations, res.success
            cells.append(f"{best:>12.3f} {iters:>6d}{'' if ok else '*'}")
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
                ts = tr.optimize(model.schedule, nfe, solver, 2, p=1, **_options(variant, nfe))
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
    parser.add_argument("--variants", nargs="+", default=list(BENCH_VARIANTS))
    parser.add_argument("--models", nargs="+", default=["builtin:gmm-digits"])
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
    bad = [v for v in args.variants if v not in BENCH_VARIANTS]
    if bad or args.n < 1 or min(nfes + args.timing_nfes) < 1:
        print(f"error: bad variants {bad} / n / NFEs", file=sys.stderr)
        return 2
    load = os.getloadavg()
    print(f"# trust-region bench: torch threads {torch.get_num_threads()}, "
          f"{os.cpu_count()} CPUs, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    loaded = [_load(name) for name in args.models]
    if not args.skip_timing:
        _timing(loaded[0].schedule, args.timing_nfes, "unipc", 2, args.variants, args.repeats)
        print("(* = not converged: maxiter reached, TrustRegionResult.success False)")
    if not args.skip_errors:
        for model in loaded:
            _errors(model, nfes, args.solvers, args.variants, args.n, args.seed, args.rtol)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
