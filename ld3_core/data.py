"""scikit-learn's bundled handwritten digits (1797 images, 8x8, gray levels 0..16) as tensors.

Images are scaled to ``[-1, 1]`` (``x / 8 - 1``) and shaped ``(N, 1, 8, 8)`` like any image
batch, so the built-in models, the digits classifier and the evaluation code share one
convention. The data ships with scikit-learn (no download).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

DIGITS_SHAPE = (1, 8, 8)
NUM_CLASSES = 10
MAX_GRAY = 16.0


@lru_cache(maxsize=1)
def _digits_numpy() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = bunch.images.astype(np.float64) / (MAX_GRAY / 2.0) - 1.0
    labels = bunch.target.astype(np.int64)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def to_pixels(gray: np.ndarray | Tensor) -> Tensor:
    """Map gray levels 0..16 (any shape) to the model range ``[-1, 1]``; returns a tensor."""
    return torch.as_tensor(gray, dtype=torch.float64) / (MAX_GRAY / 2.0) - 1.0


def load_digits(dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    """All 1797 digits.

    Returns ``(images, labels)``: images ``(1797, 1, 8, 8)`` of ``dtype`` in ``[-1, 1]``,
    labels ``(1797,)`` int64 in 0..9. Deterministic (always the same order).
    """
    images, labels = _digits_numpy()
    x = torch.tensor(images, dtype=dtype).reshape(-1, *DIGITS_SHAPE)
    return x, torch.tensor(labels, dtype=torch.int64)


def train_holdout_split(
    n: int | None = None, holdout_fraction: float = 0.2, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """Deterministic split of ``range(n)`` (default: all digits) into train / holdout indices.

    A fixed permutation from ``numpy.random.default_rng(seed)``; the holdout part has
    ``round(n * holdout_fraction)`` items. Returns ``(train_idx, holdout_idx)``, sorted int64
    tensors. Raises ``ValueError`` for a fraction outside ``(0, 1)`` or ``n < 2``.
    """
    if n is None:
        n = len(_digits_numpy()[1])
    if n < 2:
        raise ValueError(f"need n >= 2 items to split, got {n}")
    if not 0.0 < holdout_fraction < 1.0:
        raise ValueError(f"holdout_fraction must lie in (0, 1), got {holdout_fraction}")
    n_hold = min(max(int(round(n * holdout_fraction)), 1), n - 1)
    perm = np.random.default_rng(seed).permutation(n)
    hold = np.sort(perm[:n_hold])
    train = np.sort(perm[n_hold:])
    return torch.from_numpy(train), torch.from_numpy(hold)


def digits_split(
    split: str = "all", holdout_fraction: float = 0.2, seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    """Images ``(N, 1, 8, 8)`` in ``[-1, 1]`` and labels ``(N,)`` of ``split``.

    ``split`` is ``"all"``, ``"train"`` or ``"holdout"`` (see :func:`train_holdout_split`).
    """
    x, y = load_digits(dtype)
    if split == "all":
        return x, y
    train, hold = train_holdout_split(len(y), holdout_fraction, seed)
    if split == "train":
        return x[train], y[train]
    if split == "holdout":
        return x[hold], y[hold]
    raise ValueError(f"split must be 'all', 'train' or 'holdout', got {split!r}")
