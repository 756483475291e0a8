"""Labelled sample grids: one row of images per schedule/method, written as a PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor


def _strip(images: Tensor, max_cols: int, pad: int) -> np.ndarray:
    """Tile up to ``max_cols`` images (B, C, H, W) in [-1, 1] into one (H, W', 3) row in [0, 1]."""
    x = images[:max_cols].detach().to("cpu", torch.float64).clamp(-1.0, 1.0)
    x = (x + 1.0) / 2.0
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    elif x.shape[1] != 3:
        x = x[:, :3] if x.shape[1] > 3 else x.mean(1, keepdim=True).repeat(1, 3, 1, 1)
    b, _, h, w = x.shape
    row = np.ones((h, b * (w + pad) - pad, 3))
    for i in range(b):
        row[:, i * (w + pad) : i * (w + pad) + w] = x[i].permute(1, 2, 0).numpy()
    return row


def save_grid(
    rows: dict[str, Tensor], path: str | Path, max_cols: int = 16, title: str | None = None
) -> Path:
    """Save a PNG with one labelled row per entry of ``rows``.

    rows: label -> images (B, C, H, W) in [-1, 1] (C = 1 gray or 3 RGB; the first
    ``max_cols`` are shown). Returns the written path (parent folders are created).
    """
    if not rows:
        raise ValueError("save_grid needs at least one row")
    for label, images in rows.items():
        if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[0] == 0:
            raise ValueError(f"row {label!r} must be a non-empty (B, C, H, W) tensor")
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    strips = {label: _strip(images, max_cols, pad=max(1, images.shape[-1] // 8))
              for label, images in rows.items()}
    width = max(s.shape[1] for s in strips.values())
    aspect = width / max(s.shape[0] for s in strips.values())
    fig_w = min(2.5 + 0.9 * min(max_cols, aspect), 24.0)
    fig_h = 0.2 + (fig_w - 2.5) / aspect * len(strips) * 1.15 + (0.4 if title else 0.0)
    fig, axes = plt.subplots(len(strips), 1, figsize=(fig_w, fig_h), squeeze=False)
    for ax, (label, strip) in zip(axes[:, 0], strips.items(), strict=True):
        ax.imshow(strip, interpolation="nearest", aspect="equal")
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def save_figure(fig: Any, path: str | Path) -> Path:
    """Lay out a matplotlib figure, write it as a PNG to ``path`` (folders made), close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")  # long row labels stay inside
    plt.close(fig)
    return path
