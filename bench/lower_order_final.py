"""How much k-diffusion's samplers differ from ld3's default solvers at the same steps.

k-diffusion's ``sample_dpmpp_2m`` / ``sample_lms(order=k)`` keep their full order on the last
steps; they equal ld3's ``dpm++`` order 2 / ``ipndm`` ``variant="variable"`` order k run with
``lower_order_final=False`` (tests/test_kdiffusion_samplers.py, float64, < 1e-9). ld3 learns and
scores schedules with its default ``lower_order_final=True`` (below NFE 15 the last steps use a
lower order, as diffusers does). This prints, on ``builtin:gmm-digits`` (float64, 32 fixed
x_T), the relative difference of the final samples of the two settings, ``mean ||a - b|| /
mean ||b||`` (a: k-diffusion-equivalent, b: ld3 default), and each one's mean L2 error to the
exact ODE solution, for logSNR steps and trust-region steps.

    python bench/lower_order_final.py [--nfes 4 6 8 10 14] [--n 32]
"""

from __future__ import annotations

import argparse

import torch

from ld3_core import heuristics, models
from ld3_core import trust_region as tr
from ld3_core.reference import exact_solution
from ld3_core.solvers import solve

PAIRS = (  # (ld3 solver, order, variant, the k-diffusion sampler it equals)
    ("dpm++", 2, None, "sample_dpmpp_2m"),
    ("ipndm", 3, "variable", "sample_lms(order=3)"),
    ("ipndm", 4, "variable", "sample_lms(order=4)"),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nfes", type=int, nargs="+", default=[4, 6, 8, 10, 14])
    parser.add_argument("--n", type=int, default=32)
    args = parser.parse_args(argv)
    model = models.load("builtin:gmm-digits", dtype="float64")
    x_T = model.sample_prior(args.n, torch.Generator().manual_seed(0), dtype=torch.float64)
    exact = exact_solution(model, x_T, rtol=1e-9)

    def norm(x: torch.Tensor) -> float:
        return float(x.flatten(1).norm(dim=1).mean())

    print(f"{'k-diffusion sampler':>20} {'NFE':>4} {'steps':>7} {'rel diff':>9} "
          f"{'err ld3':>8} {'err kd':>8}")
    for solver, order, variant, sampler in PAIRS:
        for nfe in args.nfes:
            steps = {"logsnr": heuristics.discretize("logsnr", nfe, model.schedule),
                     "trust": tr.optimize(model.schedule, nfe, solver, order)}
            for name, ts in steps.items():
                with torch.no_grad():
                    ld3 = solve(model, x_T, ts, solver, order, variant=variant)
                    kd = solve(model, x_T, ts, solver, order, variant=variant,
                               lower_order_final=False)
                print(f"{sampler:>20} {nfe:>4} {name:>7} {norm(kd - ld3) / norm(ld3):>9.4f} "
                      f"{norm(ld3 - exact):>8.4f} {norm(kd - exact):>8.4f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
