"""Solver benchmark: per-step overhead and backward memory vs NFE (prints its figures).

(a) overhead: wall time of ``solve`` at NFE 10 divided by the wall time of 10 bare network
    calls (``model.fn(x, t_in)``, the U-Net alone) on the same batch, under ``torch.no_grad``;
    median over ``--repeats`` interleaved repetitions. Target <= 1.05.
(b) memory: peak memory of forward + backward (loss = mean square of x_0, gradients w.r.t.
    the timesteps, the decoupled model times and x_T, as in LD3; network weights frozen) at
    NFE 10 vs NFE 4, with and without ``checkpoint=True``. Target ratio <= 1.3 with it.
    CPU: every configuration runs in its own fresh subprocess (glibc told to mmap every block
    >= 64 KiB, ``MALLOC_MMAP_THRESHOLD_=65536``, so freed tensors leave the RSS), which records
    ``ru_maxrss`` (peak resident set size) right before ``solve`` (model loaded, inputs
    built, one warm-up network call done) and after the backward; the figure is the increase,
    i.e. the peak extra memory of forward + backward. The batch (``--mem-batch``) is large
    enough that activations dominate allocator noise. CUDA: ``torch.cuda.max_memory_allocated``
    increase, in process.

Usage::

    python bench/solvers.py                       # builtin:unet-digits, batch 256
    python bench/solvers.py --threads 2 --repeats 9 --mem-batch 256
    python bench/solvers.py --random-weights       # untrained U-Net if weights are absent
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch

from ld3_core.heuristics import discretize
from ld3_core.models import DiffusionModel, load
from ld3_core.solvers import solve

CONFIGS = [
    ("euler", 1, None),
    ("dpm++", 2, None),
    ("dpm++", 3, None),
    ("unipc", 2, "bh2"),
    ("unipc", 3, "bh1"),
    ("ipndm", 4, "fixed"),
    ("ipndm", 4, "variable"),
]


def _name(solver: str, order: int, variant: str | None) -> str:
    return f"{solver}-{order}" + (f"-{variant}" if variant else "")


def build_model(model_id: str, random_weights: bool, device: str) -> DiffusionModel:
    """The benchmarked model: ``load(model_id)``, or an untrained DigitsUNet (clearly labeled)."""
    if not random_weights:
        return load(model_id, device=device) if device != "cpu" else load(model_id)
    from ld3_core.models.builtin import unet_digits_model
    from ld3_core.models.unet_digits import DigitsUNet

    torch.manual_seed(0)
    net = DigitsUNet().eval().to(device)
    for p in net.parameters():
        p.requires_grad_(False)
    return unet_digits_model(net=net, device=device)


def _prior(model: DiffusionModel, batch: int, device: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return model.sample_prior(batch, generator=g, dtype=torch.float32).to(device)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bench_overhead(model: DiffusionModel, batch: int, repeats: int, device: str) -> None:
    """Prints solve(NFE 10) / (10 bare network calls) per solver."""
    nfe = 10
    x = _prior(model, batch, device)
    ts = discretize("logsnr", nfe, model.schedule)
    t_in = [model.time_input(ts[i].to(x).expand(batch)) for i in range(nfe)]

    def bare() -> None:
        for i in range(nfe):
            model.fn(x, t_in[i])

    def run(cfg) -> None:
        solve(model, x, ts, cfg[0], cfg[1], variant=cfg[2])

    with torch.no_grad():
        bare()  # warm-up
        for cfg in CONFIGS:
            run(cfg)
        times: dict[str, list[float]] = {"bare": []}
        for _ in range(repeats):  # interleave to spread machine noise over all variants
            for key, fn in [("bare", bare)] + [(_name(*c), (lambda c=c: run(c))) for c in CONFIGS]:
                _sync(device)
                t0 = time.perf_counter()
                fn()
                _sync(device)
                times.setdefault(key, []).append(time.perf_counter() - t0)
    base = statistics.median(times["bare"])
    base_min = min(times["bare"])
    print(f"(a) overhead at NFE {nfe}, batch {batch}, {repeats} interleaved repeats "
          f"(10 bare network calls: median {1e3 * base:.1f} ms, min {1e3 * base_min:.1f} ms)")
    print(f"    {'solver':<20} {'median ms':>10} {'ratio':>7} {'min ms':>9} {'ratio':>7}"
          "  target <= 1.05 (median ratio)")
    for cfg in CONFIGS:
        med = statistics.median(times[_name(*cfg)])
        low = min(times[_name(*cfg)])
        ratio = med / base
        flag = "ok" if ratio <= 1.05 else "OVER"
        print(f"    {_name(*cfg):<20} {1e3 * med:10.1f} {ratio:7.3f} {1e3 * low:9.1f} "
              f"{low / base_min:7.3f}  {flag}")

    # The same solve with a zero-cost network isolates the solver's own work (coefficients,
    # validation, updates, x0 conversion); 1 + that / bare is a low-noise overhead estimate.
    free = DiffusionModel(lambda x, t_in, **_: torch.zeros_like(x), model.schedule,
                          model.prediction, sample_shape=model.sample_shape, name="zero-cost")
    print("    solver-only time (zero-cost network, median): estimated ratio = 1 + it / bare")
    with torch.no_grad():
        for cfg in CONFIGS:
            runs = []
            for _ in range(max(repeats, 5)):
                _sync(device)
                t0 = time.perf_counter()
                solve(free, x, ts, cfg[0], cfg[1], variant=cfg[2])
                _sync(device)
                runs.append(time.perf_counter() - t0)
            own = statistics.median(runs)
            est = 1.0 + own / base
            flag = "ok" if est <= 1.05 else "OVER"
            print(f"    {_name(*cfg):<20} {1e3 * own:8.2f} ms  ratio {est:.4f}  {flag}")


def _rss_mib() -> float:
    # ru_maxrss is in KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def memory_child(model_id: str, random_weights: bool, nfe: int, ckpt: bool, batch: int,
                 solver: str, order: int, device: str) -> dict:
    """One forward+backward in this (fresh) process; returns the peak memory increase (MiB)."""
    model = build_model(model_id, random_weights, device)
    x_T = _prior(model, batch, device).requires_grad_(True)
    ts = discretize("logsnr", nfe, model.schedule).requires_grad_(True)
    mts = ts.detach().clone().requires_grad_(True)
    # warm-up on a batch of 1: one-off costs (lazy library loads of torch.utils.checkpoint,
    # ~150 MiB of RSS on first use, and allocator pools) must not count as activations
    x1 = x_T.detach()[:1].clone().requires_grad_(True)
    t1 = ts.detach()[[0, -1]].clone().requires_grad_(True)
    solve(model, x1, t1, solver, 1, checkpoint=ckpt).sum().backward()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.max_memory_allocated() / 2**20
    else:
        before = _rss_mib()
    out = solve(model, x_T, ts, solver, order, model_timesteps=mts, checkpoint=ckpt)
    loss = out.pow(2).mean()
    loss.backward()
    assert ts.grad is not None and mts.grad is not None and x_T.grad is not None
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        after = torch.cuda.max_memory_allocated() / 2**20
    else:
        after = _rss_mib()
    return {"peak_mib": after - before}


def bench_memory(args: argparse.Namespace) -> None:
    """Prints peak forward+backward memory at NFE 4 and 10, with and without checkpointing."""
    method = ("torch.cuda.max_memory_allocated increase" if args.device.startswith("cuda")
              else "ru_maxrss increase in a fresh subprocess per configuration")
    print(f"(b) peak memory of forward+backward, {args.mem_solver}-{args.mem_order}, batch "
          f"{args.mem_batch}, method: {method}")
    # A fixed mmap threshold makes glibc return every freed block >= 64 KiB to the OS at once,
    # so peak RSS follows the live tensors instead of the allocator's retained heap.
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", OMP_NUM_THREADS=str(args.threads))
    results: dict[tuple[int, bool], float] = {}
    for ckpt in (False, True):
        for nfe in (4, 10):
            cmd = [sys.executable, os.path.abspath(__file__), "--_mem-child",
                   json.dumps([nfe, ckpt]), "--mem-batch", str(args.mem_batch),
                   "--model", args.model, "--device", args.device,
                   "--mem-solver", args.mem_solver, "--mem-order", str(args.mem_order),
                   "--threads", str(args.threads)]
            if args.random_weights:
                cmd.append("--random-weights")
            peaks = []
            for _ in range(args.mem_repeats):
                res = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
                if res.returncode != 0:
                    raise SystemExit(f"memory child failed: {res.stderr.strip()[-2000:]}")
                peaks.append(json.loads(res.stdout.strip().splitlines()[-1])["peak_mib"])
            results[(nfe, ckpt)] = statistics.median(peaks)
            print(f"    NFE {nfe:>2}  checkpoint={ckpt!s:<5}  peak +{results[(nfe, ckpt)]:8.1f} MiB"
                  f"  (runs: {', '.join(f'{p:.1f}' for p in peaks)})")
    for ckpt in (False, True):
        ratio = results[(10, ckpt)] / max(results[(4, ckpt)], 1e-9)
        target = "  target <= 1.3: " + ("ok" if ratio <= 1.3 else "OVER") if ckpt else ""
        print(f"    ratio NFE10/NFE4, checkpoint={ckpt!s:<5}: {ratio:.2f}{target}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="builtin:unet-digits")
    p.add_argument("--random-weights", action="store_true",
                   help="use an untrained DigitsUNet (when the shipped weights are absent)")
    p.add_argument("--batch", type=int, default=256, help="batch of the overhead benchmark")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--mem-batch", type=int, default=128, help="batch of the memory benchmark")
    p.add_argument("--mem-repeats", type=int, default=1)
    p.add_argument("--mem-solver", default="unipc")
    p.add_argument("--mem-order", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--device", default="cpu")
    p.add_argument("--skip-overhead", action="store_true")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--_mem-child", dest="mem_child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.mem_child is not None:
        nfe, ckpt = json.loads(args.mem_child)
        res = memory_child(args.model, args.random_weights, nfe, ckpt, args.mem_batch,
                           args.mem_solver, args.mem_order, args.device)
        print(json.dumps(res))
        return
    model = build_model(args.model, args.random_weights, args.device)
    print(f"model {model.name} ({args.model}{', RANDOM weights' if args.random_weights else ''}), "
          f"device {args.device}, torch threads {args.threads}, torch {torch.__version__}")
    if not args.skip_overhead:
        bench_overhead(model, args.batch, args.repeats, args.device)
    if not args.skip_memory:
        bench_memory(args)


if __name__ == "__main__":
    main()
