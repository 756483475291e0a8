"""LD3 cost benchmark: wall-time overhead over the bare network passes, and memory vs NFE.

1. Time overhead. ``learn`` runs on pre-generated teacher data while every network call is
   recorded (batch size; whether it ran inside backward, i.e. a rematerialized call that is
   followed by a backward through the network). The *bare cost* is the time of replaying the
   same calls on the bare network in one loop: each forward-only call one forward at its batch
   size, each rematerialized call one forward+backward w.r.t. the network's inputs (x and the
   time input, whose gradient LD3 needs for xi and xi^c). LD3 runs and replays alternate and
   the minimum of each is taken. Ratio = LD3 time / bare cost (goal <= 1.3): everything that
   is not the network (solver arithmetic, optimizers, validation bookkeeping) is overhead.
   A third table times one batch-2 training solve alone, with this project's
   rematerialization, with ``torch.utils.checkpoint`` and without rematerialization.

2. Memory. One LD3 training step (forward + backward through the solver, batch
   ``--mem-batch``) runs in a fresh subprocess at each NFE, with and without
   rematerialization; its peak resident memory above the level just before the step is the
   kernel's peak-RSS mark (``VmHWM``, reset just before the step through
   ``/proc/self/clear_refs``) minus that level (glibc's mmap threshold is pinned so freed
   tensors leave the RSS).
   Ratio = peak(NFE 10) / peak(NFE 4) (goal <= 1.3 with rematerialization).

Usage: ``OMP_NUM_THREADS=1 python bench/ld3_cost.py [--model builtin:unet-digits] [--quick]``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import Counter
from typing import Any

import torch

from ld3_core.models import load
from ld3_core.teacher import TeacherConfig, generate


def _in_backward() -> bool:
    return torch._C._current_graph_task_id() != -1


class Recorder:
    """Wraps a network ``fn`` and counts calls by (batch size, inside-backward)."""

    def __init__(self, fn: Any) -> None:
        self.fn = fn
        self.calls: Counter = Counter()

    def __call__(self, x: torch.Tensor, t: torch.Tensor, **cond: Any) -> torch.Tensor:
        self.calls[(int(x.shape[0]), _in_backward())] += 1
        return self.fn(x, t, **cond)


def bare_replay(model: Any, fn: Any, calls: Counter, fraction: float) -> tuple[float, float]:
    """(wall s, CPU s) of the recorded calls replayed on the bare network, as one timed loop.

    Each forward-only call is one forward at its batch size, each rematerialized call one
    forward+backward w.r.t. both network inputs (x and the time input: LD3 needs both);
    ``fraction`` of every count is run and the times are scaled back up.
    """
    gen = torch.Generator().manual_seed(0)
    work = []
    for (batch, in_bwd), count in sorted(calls.items()):
        shape = (batch, *model.sample_shape)
        x, cot = torch.randn(shape, generator=gen), torch.randn(shape, generator=gen)
        t = torch.full((batch,), 0.5)
        work.append((x, t, cot, in_bwd, max(1, round(count * fraction)), count))

    def run(x: torch.Tensor, t: torch.Tensor, cot: torch.Tensor, in_bwd: bool, n: int) -> None:
        for _ in range(n):
            if in_bwd:
                xi, ti = x.clone().requires_grad_(True), t.clone().requires_grad_(True)
                fn(xi, ti).backward(cot)
            else:
                with torch.no_grad():
                    fn(x, t)

    wall = cpu = 0.0
    for x, t, cot, in_bwd, n, count in work:
        run(x, t, cot, in_bwd, 2)  # warm-up
        t0, c0 = time.perf_counter(), time.process_time()
        run(x, t, cot, in_bwd, n)
        wall += (time.perf_counter() - t0) * count / n
        cpu += (time.process_time() - c0) * count / n
    return wall, cpu


def time_overhead(args: argparse.Namespace, nfe: int) -> dict[str, Any]:
    """Run learn at ``nfe`` and compare its time with a replay of its network passes.

    LD3 runs and replays alternate (``--repeat`` of each) and the minimum of each is kept, so
    both see the same machine state (this shared CPU's speed drifts by 10-20 % over minutes).
    """
    from ld3_core.ld3 import learn

    model = load(args.model)
    n = args.n_train + args.n_val
    teacher = generate(model, n, TeacherConfig(nfe=args.teacher_nfe, discretization="logsnr"),
                       seed=0)
    overrides = {"n_train": args.n_train, "n_val": args.n_val,
                 "epochs_phase1": args.epochs[0], "epochs_phase2": args.epochs[1]}
    # warm-up (lazy initializations of torch, autograd and checkpointing; not timed)
    learn(model, args.solver, args.order, nfe, teacher=teacher, progress=lambda i: None,
          **{**overrides, "n_train": 2, "epochs_phase1": 1, "epochs_phase2": 0})
    bare_fn = model.fn
    recorder = Recorder(bare_fn)
    wall = cpu = bare_wall = bare_cpu = float("inf")
    for _ in range(args.repeat):
        recorder.calls.clear()
        model.fn = recorder
        t0, c0 = time.perf_counter(), time.process_time()
        learn(model, args.solver, args.order, nfe, teacher=teacher, progress=lambda i: None,
              **overrides)
        wall = min(wall, time.perf_counter() - t0)
        cpu = min(cpu, time.process_time() - c0)
        model.fn = bare_fn
        w, c = bare_replay(model, bare_fn, recorder.calls, args.replay_fraction)
        bare_wall, bare_cpu = min(bare_wall, w), min(bare_cpu, c)
    out: dict[str, Any] = {"nfe": nfe, "wall_s": wall, "cpu_s": cpu,
                           "bare_wall_s": bare_wall, "bare_cpu_s": bare_cpu}
    out["ratio_wall"] = wall / bare_wall
    out["ratio_cpu"] = cpu / bare_cpu
    out["calls"] = {f"B={b}{' (in backward)' if k else ''}": c for (b, k), c in
                    sorted(recorder.calls.items())}
    return out


def solve_times(args: argparse.Namespace, nfe: int, reps: int = 20) -> dict[str, float]:
    """Milliseconds of one batch-2 LD3 training solve (forward + backward w.r.t. x_T, times and
    network times) with each rematerialization, and of its bare network passes (minimum of 5
    rounds of ``reps``)."""
    from ld3_core.heuristics import discretize
    from ld3_core.ld3.parameterization import model_times, tau, xi_from_timesteps
    from ld3_core.solvers import solve

    model = load(args.model)
    opaque = model.with_guidance(model.guidance_scale)
    opaque._modules = None  # parameters unknown: solve falls back to torch.utils.checkpoint
    sched = model.schedule
    xi0 = xi_from_timesteps(discretize("logsnr", nfe, sched), sched)
    x = model.sample_prior(2, torch.Generator().manual_seed(0))
    t_half = torch.full((2,), 0.5)

    def training_solve(mdl: Any, ckpt: bool) -> None:
        xi = xi0.clone().requires_grad_(True)
        xi_c = torch.zeros_like(xi0, requires_grad=True)
        z = x.clone().requires_grad_(True)
        t = tau(xi, sched)
        out = solve(mdl, z, t, args.solver, args.order, model_timesteps=model_times(t, xi_c, sched),
                    checkpoint=ckpt)
        out.pow(2).mean().backward()

    def bare() -> None:
        for _ in range(nfe):
            with torch.no_grad():
                model.fn(x, t_half)
            xi, ti = x.clone().requires_grad_(True), t_half.clone().requires_grad_(True)
            model.fn(xi, ti).backward(torch.ones_like(x))

    cases = {
        "remat (own function)": lambda: training_solve(model, True),
        "remat (torch.utils.checkpoint)": lambda: training_solve(opaque, True),
        "no remat": lambda: training_solve(model, False),
        "bare network passes": bare,
    }
    best = dict.fromkeys(cases, float("inf"))
    for _ in range(5):  # rounds interleave the cases
        for name, fn in cases.items():
            fn()
            t0 = time.perf_counter()
            for _ in range(reps):
                fn()
            best[name] = min(best[name], (time.perf_counter() - t0) / reps * 1e3)
    return best


# -- memory (runs in a subprocess) -------------------------------------------------------------
def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak() -> None:
    """Reset the kernel's peak-RSS mark (VmHWM) of this process (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def _peak_bytes() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def memory_child(model_id: str, solver: str, order: int, nfe: int, batch: int,
                 remat: bool) -> dict[str, Any]:
    """One LD3 training step (forward + backward); peak RSS above the pre-step level."""
    from ld3_core.heuristics import discretize
    from ld3_core.ld3.parameterization import model_times, tau, xi_from_timesteps
    from ld3_core.solvers import solve

    torch.set_grad_enabled(True)
    model = load(model_id)
    sched = model.schedule
    xi = xi_from_timesteps(discretize("logsnr", nfe, sched), sched).requires_grad_(True)
    xi_c = torch.zeros_like(xi, requires_grad=True)
    gen = torch.Generator().manual_seed(0)

    def step(b: int, n: int) -> None:
        xi_n = xi_from_timesteps(discretize("logsnr", n, sched), sched).requires_grad_(True)
        x = model.sample_prior(b, gen).requires_grad_(True)
        t = tau(xi_n, sched)
        out = solve(model, x, t, solver, order, model_timesteps=t, checkpoint=remat)
        out.pow(2).mean().backward()

    step(1, 2)  # warm-up: lazy initializations, tiny batch
    x = model.sample_prior(batch, gen).requires_grad_(True)
    base = _rss_bytes()
    _reset_peak()
    t = tau(xi, sched)
    mt = model_times(t, xi_c, sched)
    out = solve(model, x, t, solver, order, model_timesteps=mt, checkpoint=remat)
    out.pow(2).mean().backward()
    peak = _peak_bytes()
    return {"nfe": nfe, "remat": remat, "peak_above_base_mb": (peak - base) / 2**20}


def memory(args: argparse.Namespace, nfe: int, remat: bool) -> dict[str, Any]:
    """Run :func:`memory_child` in a fresh interpreter and return its measurement."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="65536")
    cmd = [sys.executable, __file__, "--child", json.dumps(
        [args.model, args.solver, args.order, nfe, args.mem_batch, remat])]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="builtin:unet-digits")
    p.add_argument("--solver", default="unipc")
    p.add_argument("--order", type=int, default=2)
    p.add_argument("--nfes", default="4,10")
    p.add_argument("--n-train", type=int, default=50)
    p.add_argument("--n-val", type=int, default=50)
    p.add_argument("--epochs", default="2,5", help="phase1,phase2 epochs")
    p.add_argument("--teacher-nfe", type=int, default=20)
    p.add_argument("--repeat", type=int, default=3,
                   help="LD3 runs and network replays per NFE, alternating (minimum taken)")
    p.add_argument("--replay-fraction", type=float, default=0.34,
                   help="fraction of the recorded network calls each replay runs")
    p.add_argument("--mem-batch", type=int, default=256)
    p.add_argument("--quick", action="store_true", help="10/10 pairs, 1+1 epochs")
    p.add_argument("--skip-time", action="store_true")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--skip-solve", action="store_true")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(memory_child(*json.loads(args.child))))
        return 0
    try:
        nfes = [int(v) for v in args.nfes.split(",")]
        args.epochs = [int(v) for v in args.epochs.split(",")]
        if len(args.epochs) != 2:
            raise ValueError("--epochs needs two numbers")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.quick:
        args.n_train, args.n_val, args.epochs = 10, 10, [1, 1]
    print(f"model={args.model} solver={args.solver} order={args.order} "
          f"threads={torch.get_num_threads()} n_train={args.n_train} n_val={args.n_val} "
          f"epochs={args.epochs}")
    if not args.skip_time:
        print("\nTime: LD3 time / bare network cost of the same passes (goal <= 1.3); "
              "wall clock and process CPU time (robust to other load on a shared machine)")
        print(f"{'NFE':>4} {'LD3 wall s':>11} {'bare wall s':>12} {'ratio':>6} "
              f"{'LD3 cpu s':>10} {'bare cpu s':>11} {'ratio':>6}  calls")
        for nfe in nfes:
            r = time_overhead(args, nfe)
            print(f"{nfe:>4} {r['wall_s']:>11.2f} {r['bare_wall_s']:>12.2f} "
                  f"{r['ratio_wall']:>6.3f} {r['cpu_s']:>10.2f} {r['bare_cpu_s']:>11.2f} "
                  f"{r['ratio_cpu']:>6.3f}  {r['calls']}")
    if not args.skip_solve:
        print("\nOne batch-2 training solve (forward + backward), ms (minimum of 5 rounds); "
              "ratio to the bare network passes (a forward, and a forward+backward when "
              "rematerialized, per step)")
        for nfe in nfes:
            r = solve_times(args, nfe)
            base = r["bare network passes"]
            print(f"  NFE {nfe:>2}: " + "; ".join(f"{k} {v:.1f} ({v / base:.2f})"
                                               for k, v in r.items()))
    if not args.skip_memory:
        print(f"\nMemory: peak RSS above the pre-step level of one training step "
              f"(batch {args.mem_batch}); goal NFE {max(nfes)} / NFE {min(nfes)} <= 1.3 "
              "with rematerialization")
        print(f"{'remat':>6} " + " ".join(f"{'NFE ' + str(n) + ' MB':>12}" for n in nfes)
              + f" {'ratio':>7}")
        for remat in (True, False):
            rs = [memory(args, n, remat) for n in nfes]
            mb = [r["peak_above_base_mb"] for r in rs]
            print(f"{str(remat):>6} " + " ".join(f"{v:>12.1f}" for v in mb)
                  + f" {mb[-1] / mb[0]:>7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
