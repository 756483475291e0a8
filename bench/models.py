"""Wall time of teacher generation and of LD3 per iteration on real-model code paths.

Models: the tiny random-weight Stable-Diffusion-style pipeline the tests build
(``tests/real_models_helpers.build_sd``: CLIP text encoder, UNet2DConditionModel with cross
attention, AutoencoderKL; latent 4x8x8, CFG 7.5 as one batched call) loaded through
``ld3_core.models.load(folder, prompts=..., guidance_scale=7.5)``, and
``builtin:unet-digits``. ``--sd FOLDER`` benchmarks a real Stable Diffusion folder instead
of the tiny one (needs its weights locally).

Figures (medians where repeated):

- teacher: ``teacher.generate(model, n, TeacherConfig(nfe=teacher_nfe, discretization=
  "logsnr"))`` wall time, and per sample;
- LD3 per iteration: median time between ``ld3.learn``'s progress events of consecutive
  training iterations (n_train pairs, batch 2, validation of n_val pairs after every
  iteration, as the paper does); the fixed cost before the first iteration (evaluation of
  the heuristics for the initialization, setup); and one bare training step (student solve
  with rematerialization + L2 loss + backward to the times, batch 2).

- network dtype (``--dtypes``): median time of one guided network call
  (``model.network``, batch ``--dtype-batch``, float32 state; the wrapper casts at the
  network boundary) with the network loaded as float32, float16 and bfloat16, and the
  speed-up over float32. Meaningful on a GPU (``--device cuda``); on a CPU half precision is
  emulated and the figures say nothing about serving. (No GPU was available when this was
  written: the code path exists, the numbers are to be measured.)

Usage: ``python bench/models.py [--device cuda] [--quick] [--sd FOLDER] [--dtypes]``
(timings: leave OMP_NUM_THREADS unset, the machine otherwise idle).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from ld3_core import ld3, teacher
from ld3_core.heuristics import discretize
from ld3_core.models import load
from ld3_core.solvers import solve

ROOT = Path(__file__).resolve().parents[1]


def _tiny_sd(folder: Path) -> Path:
    sys.path.insert(0, str(ROOT / "tests"))
    import real_models_helpers  # the same tiny model the tests use

    return real_models_helpers.build_sd(folder)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_teacher(model: Any, n: int, nfe: int, device: str) -> float:
    """Seconds for ``teacher.generate`` of n pairs with a teacher of ``nfe`` steps."""
    cfg = teacher.TeacherConfig(nfe=nfe, discretization="logsnr", batch_size=n, device=device)
    teacher.generate(model, min(n, 2), cfg, seed=1)  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    teacher.generate(model, n, cfg, seed=0)
    _sync(device)
    return time.perf_counter() - t0


def time_ld3(model: Any, nfe: int, n_train: int, n_val: int, epochs: int, device: str,
             teacher_nfe: int) -> tuple[float, float]:
    """(median seconds per training iteration, seconds before the first iteration) of
    ``ld3.learn`` on ready teacher data, from the times of its progress events (an
    iteration = one batch-2 training step + the validation that follows it)."""
    data = teacher.generate(
        model, n_train + n_val,
        teacher.TeacherConfig(nfe=teacher_nfe, discretization="logsnr", device=device), seed=0)
    stamps: list[float] = []
    init_done: list[float] = []

    def progress(info: dict[str, Any]) -> None:
        _sync(device)
        if info["stage"] == "init":  # the last one comes right before training
            init_done[:] = [time.perf_counter()]
        elif info["stage"] == "train":
            stamps.append(time.perf_counter())

    _sync(device)
    t0 = time.perf_counter()
    p1 = max(epochs // 3, 1)
    ld3.learn(model, "unipc", 2, nfe, teacher=data, seed=0, progress=progress,
              n_train=n_train, n_val=n_val, epochs_phase1=p1, epochs_phase2=epochs - p1,
              val_batch_size=n_val, device=device)
    times = [init_done[0], *stamps]
    per_iter = statistics.median(b - a for a, b in zip(times, times[1:], strict=False))
    return per_iter, init_done[0] - t0


def time_train_step(model: Any, nfe: int, device: str, reps: int) -> float:
    """Median seconds of one LD3-style step: rematerialized student solve (batch 2),
    L2 loss, backward to the time vector."""
    gen = torch.Generator().manual_seed(0)
    x = model.sample_prior(2, gen).to(device)
    cond = model.sample_cond(2, gen)
    target = torch.zeros_like(x)
    base = discretize("logsnr", nfe, model.schedule)

    def step() -> None:
        t = base.clone().requires_grad_(True)
        out = solve(model, x, t, "unipc", 2, checkpoint=True, cond=cond)
        ((out - target) ** 2).mean().backward()
        _sync(device)

    step()
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        step()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


NET_DTYPES = ("float32", "float16", "bfloat16")


def time_network_dtypes(folder: str, prompts: list[str], device: str, batch: int,
                        reps: int) -> dict[str, float]:
    """Median seconds of one guided network call per network dtype (float32 state x)."""
    out: dict[str, float] = {}
    for dtype in NET_DTYPES:
        model = load(folder, prompts=prompts, guidance_scale=7.5, device=device, dtype=dtype)
        gen = torch.Generator().manual_seed(0)
        x = model.sample_prior(batch, gen).to(device)
        cond = model.sample_cond(batch, gen)
        t = torch.tensor(0.5, dtype=torch.float32)
        samples = []
        with torch.no_grad():
            model.network(x, t, cond)  # warm-up
            _sync(device)
            for _ in range(reps):
                t0 = time.perf_counter()
                model.network(x, t, cond)
                _sync(device)
                samples.append(time.perf_counter() - t0)
        out[dtype] = statistics.median(samples)
        del model
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sd", default=None, help="a real StableDiffusionPipeline folder")
    ap.add_argument("--quick", action="store_true", help="smaller n (smoke run)")
    ap.add_argument("--dtypes", action="store_true",
                    help="time the network in float32 / float16 / bfloat16")
    ap.add_argument("--dtype-batch", type=int, default=8)
    args = ap.parse_args(argv)
    quick = args.quick
    n_teacher, teacher_nfe, nfe = (4, 5, 4) if quick else (16, 10, 6)
    n_train, n_val, epochs, reps = (2, 2, 1, 2) if quick else (4, 4, 3, 5)

    with tempfile.TemporaryDirectory() as tmp:
        sd_folder = args.sd or str(_tiny_sd(Path(tmp) / "tiny-sd"))
        sd_name = "sd: " + (args.sd or "tiny random SD (latent 4x8x8, CFG 7.5)")
        loaders = {
            sd_name: lambda: load(sd_folder, prompts=["a red cat", "a blue dog"],
                                  guidance_scale=7.5, device=args.device),
            "builtin:unet-digits": lambda: load("builtin:unet-digits", device=args.device),
        }
        print(f"device={args.device}  torch threads={torch.get_num_threads()}  "
              f"teacher: n={n_teacher}, NFE={teacher_nfe}; LD3: unipc-2, NFE={nfe}, "
              f"batch 2, n_train={n_train}, n_val={n_val}, epochs={epochs}")
        header = (f"{'model':<48} {'teacher s':>10} {'ms/sample':>10} "
                  f"{'LD3 s/iter':>11} {'LD3 init s':>11} {'step ms':>9}")
        print(header)
        print("-" * len(header))
        for name, loader in loaders.items():
            try:
                model = loader()
            except (ValueError, OSError) as exc:  # e.g. weights not trained/shipped yet
                print(f"{name:<48} unavailable: {exc}")
                continue
            t_teacher = time_teacher(model, n_teacher, teacher_nfe, args.device)
            per_iter, fixed = time_ld3(model, nfe, n_train, n_val, epochs, args.device,
                                       teacher_nfe)
            step = time_train_step(model, nfe, args.device, reps)
            print(f"{name:<48} {t_teacher:>10.3f} {1e3 * t_teacher / n_teacher:>10.1f} "
                  f"{per_iter:>11.3f} {fixed:>11.2f} {1e3 * step:>9.1f}")
        if args.dtypes:
            if not args.device.startswith("cuda"):
                print("note: network dtype timings on a CPU are not representative of a GPU "
                      "(half precision is emulated); run with --device cuda")
            times = time_network_dtypes(sd_folder, ["a red cat", "a blue dog"], args.device,
                                        args.dtype_batch, reps)
            print(f"\nnetwork call, {sd_name}, batch {args.dtype_batch} (CFG: 2x), float32 "
                  "state:")
            for dtype, sec in times.items():
                print(f"  {dtype:<9} {1e3 * sec:>9.2f} ms   x{times['float32'] / sec:.2f} "
                      "vs float32")
    return 0


if __name__ == "__main__":
    sys.exit(main())
