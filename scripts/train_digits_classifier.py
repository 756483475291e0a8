"""Train the digits classifier whose penultimate layer is the "digits" FD feature space.

Trains on the deterministic train split of scikit-learn's digits (random 1-pixel shifts as
augmentation), reports the holdout accuracy and writes ``ld3_core/weights/digits_classifier.pt``.

    python scripts/train_digits_classifier.py [--epochs 60] [--out PATH] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ld3_core.data import digits_split
from ld3_core.evaluation.digits_classifier import (
    CLASSIFIER_FILE,
    FEATURE_DIM,
    DigitsClassifier,
)
from ld3_core.weights import weights_path


def random_shift(x: torch.Tensor, generator: torch.Generator, max_shift: int = 1) -> torch.Tensor:
    """Shift each image by up to ``max_shift`` pixels (background -1 fills the border)."""
    b, _, h, w = x.shape
    pad = F.pad(x, (max_shift,) * 4, value=-1.0)
    dx = torch.randint(0, 2 * max_shift + 1, (b,), generator=generator)
    dy = torch.randint(0, 2 * max_shift + 1, (b,), generator=generator)
    rows = dy[:, None] + torch.arange(h)[None, :]
    cols = dx[:, None] + torch.arange(w)[None, :]
    idx_b = torch.arange(b)[:, None, None]
    return pad[idx_b, 0, rows[:, :, None], cols[:, None, :]].unsqueeze(1)


def accuracy(model: DigitsClassifier, x: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of correctly classified images."""
    model.eval()
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=weights_path(CLASSIFIER_FILE))
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.batch_size < 1:
        print("error: --epochs and --batch-size must be positive", file=sys.stderr)
        return 2

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    x_train, y_train = digits_split("train")
    x_hold, y_hold = digits_split("holdout")
    model = DigitsClassifier(FEATURE_DIM)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs)
    start = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(len(y_train), generator=gen)
        total = 0.0
        for i in range(0, len(perm), args.batch_size):
            idx = perm[i : i + args.batch_size]
            xb = random_shift(x_train[idx], gen)
            loss = F.cross_entropy(model(xb), y_train[idx], label_smoothing=0.05)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        sched.step()
        if (epoch + 1) % 10 == 0 or epoch == args.epochs - 1:
            print(
                f"epoch {epoch + 1:3d}  loss {total / len(y_train):.4f}  "
                f"holdout acc {accuracy(model, x_hold, y_hold):.4f}"
            )
    elapsed = time.perf_counter() - start
    train_acc = accuracy(model, x_train, y_train)
    hold_acc = accuracy(model, x_hold, y_hold)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "state_dict": model.state_dict(),
            "feature_dim": FEATURE_DIM,
            "holdout_accuracy": hold_acc,
            "train_accuracy": train_acc,
            "epochs": args.epochs,
            "seed": args.seed,
        },
        args.out,
    )
    print(
        f"train acc {train_acc:.4f}  holdout acc {hold_acc:.4f} "
        f"({len(y_hold)} images)  time {elapsed:.1f}s  -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
