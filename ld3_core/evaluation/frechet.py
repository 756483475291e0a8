"""Frechet distance between Gaussians fitted to features, and pytorch-fid ``.npz`` statistics.

``FD = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2))``. The trace of the matrix square
root is computed without ``scipy.linalg.sqrtm``: ``S1 S2`` is similar to the symmetric PSD
matrix ``M = S1^(1/2) S2 S1^(1/2)``, so ``tr((S1 S2)^(1/2)) = sum_i sqrt(eig_i(M))``, with both
eigen-decompositions symmetric (``eigh``) and round-off negatives clipped to 0. This is exact
for singular covariances (fewer samples than dimensions, constant features) where ``sqrtm`` of
the non-symmetric product is ill-conditioned.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import Tensor

ArrayLike = np.ndarray | Tensor


def _np64(a: ArrayLike) -> np.ndarray:
    if isinstance(a, Tensor):
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=np.float64)


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    """Symmetric square root of a (numerically) PSD matrix."""
    w, v = np.linalg.eigh((s + s.T) / 2.0)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def trace_sqrt_product(sigma1: ArrayLike, sigma2: ArrayLike) -> float:
    """``tr((sigma1 sigma2)^(1/2))`` for symmetric PSD (D, D) matrices, via ``eigh`` only."""
    s1, s2 = _np64(sigma1), _np64(sigma2)
    root1 = _psd_sqrt(s1)
    m = root1 @ ((s2 + s2.T) / 2.0) @ root1
    eig = np.linalg.eigvalsh((m + m.T) / 2.0)
    return float(np.sqrt(np.clip(eig, 0.0, None)).sum())


def frechet_distance(
    mu1: ArrayLike, sigma1: ArrayLike, mu2: ArrayLike, sigma2: ArrayLike
) -> float:
    """Frechet distance between ``N(mu1, sigma1)`` and ``N(mu2, sigma2)``.

    mu: (D,) means; sigma: (D, D) symmetric PSD covariances (numpy or torch; computed in
    float64). Returns a float >= 0 (clipped at 0 against round-off) in squared feature units.
    Raises ``ValueError`` on mismatched shapes or non-finite input.
    """
    m1, m2 = np.atleast_1d(_np64(mu1)), np.atleast_1d(_np64(mu2))
    s1, s2 = np.atleast_2d(_np64(sigma1)), np.atleast_2d(_np64(sigma2))
    d = m1.shape[0]
    if m1.shape != (d,) or m2.shape != (d,):
        raise ValueError(f"means must be 1-D of equal length, got {m1.shape} and {m2.shape}")
    if s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(
            f"covariances must be ({d}, {d}) to match the means, got {s1.shape} and {s2.shape}"
        )
    for name, arr in (("mu1", m1), ("mu2", m2), ("sigma1", s1), ("sigma2", s2)):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} contains NaN or inf")
    diff = m1 - m2
    fd = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * trace_sqrt_product(s1, s2))
    return max(fd, 0.0)


def feature_stats(features: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of features (N, D), float64 numpy.

    Same estimator as pytorch-fid (``np.cov(rowvar=False)``, ddof 1). Needs N >= 2.
    """
    f = _np64(features)
    if f.ndim != 2:
        raise ValueError(f"features must be (N, D), got shape {f.shape}")
    if f.shape[0] < 2:
        raise ValueError(f"need at least 2 feature vectors for a covariance, got {f.shape[0]}")
    if not np.all(np.isfinite(f)):
        raise ValueError("features contain NaN or inf")
    return f.mean(axis=0), np.atleast_2d(np.cov(f, rowvar=False))


def save_stats(path: str | Path, mu: ArrayLike, sigma: ArrayLike) -> Path:
    """Write ``mu`` (D,) and ``sigma`` (D, D) to an .npz in pytorch-fid's format; returns path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:  # a file handle keeps numpy from appending ".npz"
        np.savez(fh, mu=_np64(mu), sigma=_np64(sigma))
    return path


def load_stats(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read ``(mu, sigma)`` float64 from a pytorch-fid style .npz (keys ``mu``, ``sigma``).

    Raises ``ValueError`` when the file is missing or lacks the keys.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"statistics file not found: {path}")
    try:
        with np.load(path) as data:
            if "mu" not in data or "sigma" not in data:
                raise ValueError(
                    f"{path} is not a pytorch-fid statistics file (needs keys 'mu' and 'sigma', "
                    f"has {sorted(data.files)})"
                )
            mu, sigma = np.asarray(data["mu"], np.float64), np.asarray(data["sigma"], np.float64)
    except (OSError, EOFError) as exc:
        raise ValueError(f"cannot read statistics file {path}: {exc}") from exc
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ValueError(f"{path}: bad shapes mu {mu.shape}, sigma {sigma.shape}")
    return mu, sigma
