"""Analytic Gaussian-mixture models for the generalization benchmark.

Every model is a :class:`~ld3_core.models.gmm.GaussianMixture` wrapped by
:func:`~ld3_core.models.gmm.gmm_model`: x0 prediction with the exact posterior mean
``E[x0 | x_t]`` computed in float64, so the probability-flow ODE solved by
:func:`ld3_core.reference.exact_solution` is the exact ODE solution up to the integrator's
tolerance. None of them uses the digits data: weights, means and covariances are drawn from
fixed numpy seeds (``numpy.random.default_rng(seed)``), so every build is bit-identical.

Data live on an image-like scale: component means in about [-0.6, 0.6] per coordinate and
component standard deviations of at most 0.3, so almost all the mass is within [-1, 1]
(like images in [-1, 1]) and the schedules' sigma ranges (VPLinear / VPCosine sigma from ~0.01
to ~1; EDM sigma 0.002 .. 80) cover "clean" to "pure noise". Each ``sample_shape`` is
(C, H, W) so the ``"pixels"`` extractor applies; ``default_extractor = "pixels"``.

========================  ===  =========  ==  =====  =====  ========  ========================
name                      D    shape      K   sep    cond   schedule  character
========================  ===  =========  ==  =====  =====  ========  ========================
vpl-d16-k3-separated      16   (1,4,4)    3   16.5   1      VPLinear  few modes, far apart
vpl-d64-k48-overlapping   64   (1,8,8)    48  0.51   100    VPLinear  many modes, overlapping
vpl-d512-k4-anisotropic   512  (2,16,16)  4   46.3   1000   VPLinear  few modes, anisotropic
vpc-d64-k64-separated     64   (1,8,8)    64  18.9   4      VPCosine  many modes, far apart
vpc-d256-k2-overlapping   256  (1,16,16)  2   0.71   300    VPCosine  few modes, overlapping
edm-d16-k32-anisotropic   16   (1,4,4)    32  1.38   100    EDM       many modes, anisotropic
edm-d192-k3-lowrank       192  (3,8,8)    3   37.0   1e4    EDM       few modes, near low-rank
edm-d256-k4-overlapping   256  (1,16,16)  4   0.69   30     EDM       few modes, overlapping
========================  ===  =========  ==  =====  =====  ========  ========================

Columns: D = data dimension; K = number of mixture components; ``sep`` = the smallest over
component pairs (j, k) of ``||mu_j - mu_k|| / (s_j + s_k)`` with ``s_j`` the standard
deviation of component j along the unit direction ``mu_j - mu_k`` (a 1-D separation: above
~3 the modes are apart, below ~1 they overlap); ``cond`` = the largest covariance condition
number ``lambda_max / lambda_min`` over the components. Both are computed by
:func:`describe` (``python bench/analytic_zoo.py`` prints them, with the 0.5 % / 99.5 %
quantiles of the data coordinates: within [-0.76, 0.76] for every model; overall data
standard deviation 0.13 .. 0.51). Many-mode models are kept at D <= 64 so that an exact ODE
solve of a few hundred samples takes seconds on one CPU core.

Schedules: VPLinear(beta 0.1 .. 20, t in [1e-3, 1]), VPCosine(s = 0.008, t in [1e-3,
0.9946]) and EDM(sigma 0.002 .. 80), the constructors' defaults.

Usage::

    from bench.analytic_zoo import ZOO, build
    model = build("vpl-d16-k3-separated")   # DiffusionModel named "zoo:vpl-d16-k3-separated"
    model.mixture                           # the GaussianMixture (exact moments, sampling)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ld3_core.models.gmm import GaussianMixture, gmm_model
from ld3_core.models.wrapper import DiffusionModel
from ld3_core.schedules import EDM, NoiseSchedule, VPCosine, VPLinear

__all__ = ["ZOO", "SPECS", "Spec", "build", "describe", "mixture_of", "sample_data"]

_SHAPES: dict[int, tuple[int, int, int]] = {
    16: (1, 4, 4),
    64: (1, 8, 8),
    192: (3, 8, 8),
    256: (1, 16, 16),
    512: (2, 16, 16),
}


@dataclass(frozen=True)
class Spec:
    """How one zoo mixture is drawn.

    Attributes:
        dim: data dimension D (a key of the (C, H, W) shape table).
        modes: number of components K.
        means: ``"corners"`` (means at random hypercube corners ``+-spread``, far apart) or
            ``"cloud"`` (means ``N(0, spread^2 I)``, close together).
        spread: scale of the means (per coordinate).
        std: largest per-direction standard deviation of a component.
        cond: covariance condition number (eigenvalues log-spaced from ``std^2`` down to
            ``std^2 / cond``, in a random orthonormal basis per component); 1 = isotropic.
        schedule: ``"vp_linear"``, ``"vp_cosine"`` or ``"edm"``.
        seed: numpy seed of every random draw.
    """

    dim: int
    modes: int
    means: str
    spread: float
    std: float
    cond: float
    schedule: str
    seed: int


SPECS: dict[str, Spec] = {
    "vpl-d16-k3-separated": Spec(16, 3, "corners", 0.5, 0.08, 1.0, "vp_linear", 101),
    "vpl-d64-k48-overlapping": Spec(64, 48, "cloud", 0.02, 0.3, 100.0, "vp_linear", 102),
    "vpl-d512-k4-anisotropic": Spec(512, 4, "corners", 0.3, 0.25, 1000.0, "vp_linear", 103),
    "vpc-d64-k64-separated": Spec(64, 64, "corners", 0.5, 0.15, 4.0, "vp_cosine", 104),
    "vpc-d256-k2-overlapping": Spec(256, 2, "cloud", 0.007, 0.3, 300.0, "vp_cosine", 105),
    "edm-d16-k32-anisotropic": Spec(16, 32, "cloud", 0.15, 0.3, 100.0, "edm", 106),
    "edm-d192-k3-lowrank": Spec(192, 3, "corners", 0.4, 0.3, 1e4, "edm", 107),
    "edm-d256-k4-overlapping": Spec(256, 4, "cloud", 0.01, 0.3, 30.0, "edm", 108),
}


def _schedule(name: str) -> NoiseSchedule:
    if name == "vp_linear":
        return VPLinear()
    if name == "vp_cosine":
        return VPCosine()
    if name == "edm":
        return EDM()
    raise ValueError(f"unknown zoo schedule {name!r}")


def _orthonormal(rng: np.random.Generator, d: int) -> np.ndarray:
    """A random (Haar) orthonormal (d, d) matrix: QR of a Gaussian with the sign fix."""
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))[None, :]


@functools.cache
def _parameters(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(weights (K,), means (K, D), covariances (K, D, D)) of zoo model ``name``, float64."""
    spec = SPECS[name]
    rng = np.random.default_rng(spec.seed)
    k, d = spec.modes, spec.dim
    weights = rng.uniform(0.5, 1.5, size=k)
    if spec.means == "corners":
        means = spec.spread * rng.choice([-1.0, 1.0], size=(k, d))
    elif spec.means == "cloud":
        means = spec.spread * rng.standard_normal((k, d))
    else:
        raise ValueError(f"unknown means layout {spec.means!r}")
    # Per-direction std from `std` down to std / sqrt(cond), log-spaced.
    stds = spec.std * np.logspace(0.0, -0.5 * math.log10(spec.cond), d)
    covs = np.empty((k, d, d))
    for j in range(k):
        if spec.cond == 1.0:
            covs[j] = np.eye(d) * spec.std**2
            continue
        u = _orthonormal(rng, d)
        covs[j] = (u * stds**2) @ u.T
    return weights, means, covs


def mixture_of(name: str) -> GaussianMixture:
    """The :class:`GaussianMixture` (float64) of zoo model ``name``."""
    if name not in SPECS:
        raise KeyError(f"unknown zoo model {name!r}; known: {', '.join(SPECS)}")
    return GaussianMixture(*(a.copy() for a in _parameters(name)))  # no sharing with the cache


def build(name: str) -> DiffusionModel:
    """Zoo model ``name`` as an x0-prediction :class:`DiffusionModel` (float64 mixture).

    The model is named ``"zoo:<name>"``, has ``sample_shape`` (C, H, W),
    ``default_extractor = "pixels"``, ``analytic = True`` and its ``mixture``.
    Raises ``KeyError`` for an unknown name.
    """
    spec = SPECS.get(name)
    if spec is None:
        raise KeyError(f"unknown zoo model {name!r}; known: {', '.join(SPECS)}")
    model = gmm_model(
        mixture_of(name),
        _schedule(spec.schedule),
        sample_shape=_SHAPES[spec.dim],
        name=f"zoo:{name}",
        dtype=torch.float64,
    )
    model.default_extractor = "pixels"  # type: ignore[attr-defined]
    return model


ZOO: dict[str, Callable[[], DiffusionModel]] = {
    name: functools.partial(build, name) for name in SPECS
}


def sample_data(name: str, n: int, seed: int = 0) -> torch.Tensor:
    """n exact draws x0 (n, D) float64 of zoo model ``name`` (a numpy generator of ``seed``).

    Memory O(n D + D^2) (component by component), unlike ``GaussianMixture.sample`` which
    gathers an (n, D, D) factor.
    """
    weights, means, covs = _parameters(name)
    rng = np.random.default_rng(seed)
    comp = rng.choice(len(weights), size=n, p=weights / weights.sum())
    out = np.empty((n, means.shape[1]))
    for k in np.unique(comp):
        idx = np.flatnonzero(comp == k)
        evals, evecs = np.linalg.eigh(covs[k])
        z = rng.standard_normal((len(idx), means.shape[1])) * np.sqrt(np.clip(evals, 0, None))
        out[idx] = means[k] + z @ evecs.T
    return torch.from_numpy(out)


def describe(name: str) -> dict[str, float | int | str]:
    """Measured properties of zoo model ``name`` (the columns of the module table).

    Returns ``dim``, ``modes``, ``shape``, ``schedule``, ``sep`` (smallest pairwise 1-D
    separation ``||mu_j - mu_k|| / (s_j + s_k)``; ``inf`` for one mode), ``cond`` (largest
    covariance condition number), ``data_min`` / ``data_max`` (0.5 % / 99.5 % quantiles of all
    coordinates of 4000 exact draws) and ``data_std`` (their overall standard deviation).
    """
    weights, means, covs = _parameters(name)
    spec = SPECS[name]
    sep = math.inf
    for j in range(len(weights)):
        for k in range(j + 1, len(weights)):
            diff = means[j] - means[k]
            dist = float(np.linalg.norm(diff))
            u = diff / dist
            s = math.sqrt(u @ covs[j] @ u) + math.sqrt(u @ covs[k] @ u)
            sep = min(sep, dist / s)
    evals = np.linalg.eigvalsh(covs)
    cond = float((evals[:, -1] / evals[:, 0]).max())
    x = sample_data(name, 4000, seed=0).numpy()
    return {
        "dim": spec.dim,
        "modes": spec.modes,
        "shape": str(_SHAPES[spec.dim]),
        "schedule": spec.schedule,
        "sep": sep,
        "cond": cond,
        "data_min": float(np.quantile(x, 0.005)),
        "data_max": float(np.quantile(x, 0.995)),
        "data_std": float(x.std()),
    }


def main() -> None:
    """Print :func:`describe` for every zoo model."""
    head = f"{'name':26s} {'D':>4s} {'K':>3s} {'sep':>7s} {'cond':>8s} {'q0.5%':>7s} "
    print(head + f"{'q99.5%':>7s} {'std':>6s}  schedule")
    for name in SPECS:
        d = describe(name)
        print(
            f"{name:26s} {d['dim']:4d} {d['modes']:3d} {d['sep']:7.2f} {d['cond']:8.0f} "
            f"{d['data_min']:7.2f} {d['data_max']:7.2f} {d['data_std']:6.3f}  {d['schedule']}"
        )


if __name__ == "__main__":
    main()
