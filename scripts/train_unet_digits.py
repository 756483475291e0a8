"""Train ``builtin:unet-digits``: a small eps-prediction U-Net on the 8x8 digits under VPLinear.

Standard denoising loss ``|eps_theta(alpha_t x0 + sigma_t eps, t) - eps|^2`` with t ~ U[1e-3, 1]
(VPLinear, beta 0.1..20), AdamW with warm-up and cosine decay, and an EMA of the weights (the
EMA weights are what ships). At the end it samples ``--eval-samples`` digits with a 50-step
UniPC-2 solver on logSNR steps, prints their digits-feature FD against all real digits, and
saves a sample grid. Writes ``ld3_core/weights/unet_digits.pt``.

    python scripts/train_unet_digits.py [--steps 2500] [--batch-size 128] [--threads 2]
    python scripts/train_unet_digits.py --eval-only   # only the sample check of the weights
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from pathlib import Path

import torch

from ld3_core.data import load_digits
from ld3_core.models.unet_digits import UNET_FILE, DigitsUNet
from ld3_core.schedules import VPLinear
from ld3_core.weights import weights_path


def lr_at(step: int, total: int, base: float, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(total - warmup, 1)
    return base * 0.5 * (1.0 + math.cos(math.pi * progress))


def evaluate(net: DigitsUNet, n: int, seed: int, grid: Path | None) -> float:
    """Digits-feature FD of n samples (UniPC-2, 50 logSNR steps) vs all real digits."""
    from ld3_core.evaluation import sample, save_grid, score_samples
    from ld3_core.heuristics import discretize
    from ld3_core.models.builtin import unet_digits_model

    model = unet_digits_model(net=net)
    steps = discretize("logsnr", 50, model.schedule)
    x = sample(model, steps, "unipc", 2, n, seed=seed, batch_size=500)
    real, _ = load_digits()
    score = score_samples(x, real, "digits")
    if grid is not None:
        save_grid({"unet-digits (UniPC-2, 50 steps)": x[:16], "real digits": real[:16]}, grid)
    return score["fd"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--ema", type=float, default=0.999)
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--eval-samples", type=int, default=2000, help="0 skips the check")
    parser.add_argument("--grid", type=Path, default=Path("artifacts/unet_digits_samples.png"))
    parser.add_argument("--out", type=Path, default=weights_path(UNET_FILE))
    parser.add_argument(
        "--eval-only", action="store_true", help="skip training; check the weights at --out"
    )
    args = parser.parse_args(argv)
    if args.steps < 1 or args.batch_size < 1 or not 0.0 <= args.ema < 1.0:
        print("error: need --steps >= 1, --batch-size >= 1 and 0 <= --ema < 1", file=sys.stderr)
        return 2

    torch.set_num_threads(args.threads)
    if args.eval_only:
        from ld3_core.models.unet_digits import load_unet_digits

        if not args.out.is_file():
            print(f"error: no weights at {args.out}", file=sys.stderr)
            return 1
        n = max(args.eval_samples, 2)
        t0 = time.perf_counter()
        fd = evaluate(load_unet_digits(args.out), n, args.seed + 1, args.grid)
        print(f"check: digits FD of {n} samples (UniPC-2, 50 steps) vs real digits = {fd:.3f} "
              f"({time.perf_counter() - t0:.1f}s); grid -> {args.grid}")
        return 0
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    data, _ = load_digits()
    schedule = VPLinear()
    net = DigitsUNet(channels=args.channels)
    ema = copy.deepcopy(net).requires_grad_(False)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=0.0)
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    running = 0.0
    for step in range(args.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args.steps, args.lr, args.warmup)
        x0 = data[torch.randint(0, len(data), (args.batch_size,), generator=gen)]
        t = schedule.t_min + (schedule.t_max - schedule.t_min) * torch.rand(
            args.batch_size, generator=gen
        )
        eps = torch.randn(x0.shape, generator=gen)
        alpha = schedule.alpha(t).float().view(-1, 1, 1, 1)
        sigma = schedule.sigma(t).float().view(-1, 1, 1, 1)
        loss = (net(alpha * x0 + sigma * eps, t) - eps).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        decay = min(args.ema, (1.0 + step) / (10.0 + step))
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), net.parameters(), strict=True):
                pe.lerp_(p, 1.0 - decay)
        running = 0.98 * running + 0.02 * float(loss.detach()) if step else float(loss.detach())
        if (step + 1) % 250 == 0 or step + 1 == args.steps:
            print(
                f"step {step + 1:5d}/{args.steps}  loss {running:.4f}  "
                f"wall {time.perf_counter() - start_wall:6.1f}s", flush=True
            )
    wall = time.perf_counter() - start_wall
    cpu = time.process_time() - start_cpu
    ema.eval()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().clone() for k, v in ema.state_dict().items()}
    meta = {
        "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "ema": args.ema,
        "seed": args.seed, "final_loss": running, "train_wall_s": wall, "train_cpu_s": cpu,
        "schedule": schedule.config(),
    }
    torch.save({"state_dict": state, "config": ema.config, "meta": meta}, args.out)
    size_mb = args.out.stat().st_size / 2**20
    print(f"trained in {wall:.1f}s wall / {cpu:.1f}s CPU -> {args.out} ({size_mb:.2f} MB)")
    if args.eval_samples > 0:
        t0 = time.perf_counter()
        fd = evaluate(ema, args.eval_samples, args.seed + 1, args.grid)
        print(
            f"check: digits FD of {args.eval_samples} samples (UniPC-2, 50 steps) vs real "
            f"digits = {fd:.3f} ({time.perf_counter() - t0:.1f}s); grid -> {args.grid}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
