"""Fit the Gaussian mixture of ``builtin:gmm-digits`` / ``builtin:gmm-digits-cond``.

One scikit-learn ``GaussianMixture`` (full covariances, ``reg_covar`` added to the diagonal,
fixed ``random_state``) per digit class on all 1797 digits scaled to [-1, 1]; the union of the
per-class components, weighted by class frequency, is the unconditional mixture. Writes
``ld3_core/weights/gmm_digits.npz`` (weights, means, covariances, component_class), so the
shipped model does not depend on the installed scikit-learn version.

    python scripts/train_gmm_digits.py [--components 4] [--reg 0.01] [--seed 0] [--out PATH]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import sklearn
import torch
from sklearn.mixture import GaussianMixture

from ld3_core.data import NUM_CLASSES, load_digits
from ld3_core.models.gmm import GMM_FILE
from ld3_core.weights import weights_path


def fit_per_class(
    x: np.ndarray, y: np.ndarray, components: int, reg: float, seed: int
) -> dict[str, np.ndarray]:
    """Per-class GMM fits of x (N, D) with labels y; returns the stacked mixture arrays."""
    weights, means, covs, classes = [], [], [], []
    for c in range(NUM_CLASSES):
        xc = x[y == c]
        gm = GaussianMixture(
            n_components=components, covariance_type="full", reg_covar=reg,
            random_state=seed, n_init=2, max_iter=500,
        ).fit(xc)
        prior = len(xc) / len(x)
        weights.append(gm.weights_ * prior)
        means.append(gm.means_)
        covs.append(gm.covariances_)
        classes.append(np.full(components, c))
    return {
        "weights": np.concatenate(weights),
        "means": np.concatenate(means),
        "covariances": np.concatenate(covs),
        "component_class": np.concatenate(classes).astype(np.int64),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--components", type=int, default=4, help="components per class")
    parser.add_argument("--reg", type=float, default=1e-2, help="reg_covar (data range [-1,1])")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=weights_path(GMM_FILE))
    parser.add_argument("--check-samples", type=int, default=2000, help="0 skips the FD check")
    args = parser.parse_args(argv)
    if args.components < 1 or args.reg <= 0:
        print("error: --components must be >= 1 and --reg > 0", file=sys.stderr)
        return 2
    images, labels = load_digits()
    x = images.reshape(len(images), -1).double().numpy()
    y = labels.numpy()
    start = time.perf_counter()
    params = fit_per_class(x, y, args.components, args.reg, args.seed)
    elapsed = time.perf_counter() - start
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "wb") as fh:
        np.savez_compressed(
            fh, **params, reg_covar=np.float64(args.reg),
            components_per_class=np.int64(args.components), seed=np.int64(args.seed),
            sklearn_version=np.str_(sklearn.__version__),
        )
    k = len(params["weights"])
    print(f"fitted {k} components ({args.components}/class) in {elapsed:.1f}s -> {args.out}")
    if args.check_samples > 0:
        print(f"check: digits FD of {args.check_samples} exact mixture samples vs real digits = "
              f"{check_fd(args.out, images, args.check_samples, args.seed):.3f}")
    return 0


def check_fd(path: Path, real: torch.Tensor, n: int, seed: int) -> float:
    """Digits-feature FD between n exact draws from the saved mixture and the real digits."""
    from ld3_core.evaluation import score_samples
    from ld3_core.models.gmm import load_digits_gmm

    mixture = load_digits_gmm(path)
    x = mixture.sample(n, torch.Generator().manual_seed(seed + 1), dtype=torch.float32)
    return score_samples(x.reshape(n, 1, 8, 8), real, "digits")["fd"]


if __name__ == "__main__":
    raise SystemExit(main())
