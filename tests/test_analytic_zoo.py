"""The analytic model zoo of the generalization benchmark (``bench/analytic_zoo.py``).

Per model: it builds with the advertised name / shape / extractor / dtype; its denoiser is the
exact posterior mean (at the smallest sigma it recovers clean data to within the noise level);
and exact probability-flow ODE solutions from the prior end on the data distribution (moments
and mean log-likelihood of 200 solutions match those of 200 exact draws of the noisy marginal
at ``t_min``). Plus: the zoo covers what the benchmark needs (dimensions, mode counts,
separation, anisotropy, schedules).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.analytic_zoo import SPECS, ZOO, build, describe, sample_data  # noqa: E402
from ld3_core.reference import exact_solution  # noqa: E402
from ld3_core.schedules import EDM, VPCosine, VPLinear  # noqa: E402

NAMES = sorted(ZOO)


def _noisy_moments(model, t: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (D,) and covariance (D, D) of x_t = alpha_t x0 + sigma_t eps for the mixture."""
    mix = model.mixture
    w = torch.exp(mix.log_weights)
    mean = w @ mix.means
    second = torch.einsum("k,kij->ij", w, mix.covariances)
    second = second + torch.einsum("k,ki,kj->ij", w, mix.means, mix.means)
    cov = second - torch.outer(mean, mean)
    tt = torch.tensor(t, dtype=torch.float64)
    a, s = float(model.schedule.alpha(tt)), float(model.schedule.sigma(tt))
    return a * mean, a**2 * cov + s**2 * torch.eye(mix.dim, dtype=torch.float64)


def test_zoo_names_shapes_and_attributes() -> None:
    assert len(ZOO) >= 7
    models = {name: ZOO[name]() for name in NAMES}
    assert len({m.name for m in models.values()}) == len(models)
    for name, model in models.items():
        assert model.name == f"zoo:{name}"
        assert model.prediction == "x0"
        assert model.default_extractor == "pixels"
        assert getattr(model, "analytic", False) is True
        assert len(model.sample_shape) == 3  # (C, H, W)
        assert math.prod(model.sample_shape) == model.mixture.dim == SPECS[name].dim
        assert model.network_dtype == torch.float64
        assert model.mixture.means.dtype == torch.float64
        x = model.sample_prior(3, torch.Generator().manual_seed(0), dtype=torch.float32)
        assert x.shape == (3, *model.sample_shape)
        out = model.denoise(x, model.schedule.t_max)
        assert out.shape == x.shape and out.dtype == torch.float32
    with pytest.raises(KeyError):
        build("no-such-model")


def test_zoo_is_deterministic_and_not_digits() -> None:
    a, b = build("edm-d16-k32-anisotropic"), build("edm-d16-k32-anisotropic")
    assert torch.equal(a.mixture.means, b.mixture.means)
    assert torch.equal(a.mixture.covariances, b.mixture.covariances)
    # Different seeds, different mixtures (no two models share parameters).
    assert not torch.equal(
        build("vpl-d64-k48-overlapping").mixture.means[:1],
        build("vpc-d64-k64-separated").mixture.means[:1],
    )


def test_zoo_covers_the_benchmark_axes() -> None:
    info = {name: describe(name) for name in NAMES}
    dims = [d["dim"] for d in info.values()]
    assert min(dims) == 16 and max(dims) == 512
    modes = [d["modes"] for d in info.values()]
    assert any(2 <= k <= 4 for k in modes) and any(32 <= k <= 64 for k in modes)
    seps = [d["sep"] for d in info.values()]
    assert any(s > 3.0 for s in seps) and any(s < 1.0 for s in seps)
    assert any(d["cond"] >= 100.0 for d in info.values())
    kinds = [type(ZOO[name]().schedule) for name in NAMES]
    for kind in (VPLinear, VPCosine, EDM):
        assert kinds.count(kind) >= 2
    for d in info.values():  # image-like scale
        assert -1.0 < d["data_min"] and d["data_max"] < 1.0
        assert 0.05 < d["data_std"] < 0.6


def test_sample_data_matches_the_mixture_moments() -> None:
    model = build("vpc-d256-k2-overlapping")
    x = sample_data("vpc-d256-k2-overlapping", 4000, seed=3)
    mix = model.mixture
    w = torch.exp(mix.log_weights)
    mean = w @ mix.means
    assert torch.linalg.norm(x.mean(0) - mean) < 4 * math.sqrt(
        float(torch.einsum("k,kii->", w, mix.covariances)) / 4000
    )
    assert torch.allclose(x.var(0).sum(), torch.einsum("k,kii->", w, mix.covariances), rtol=0.05)


@pytest.mark.parametrize("name", NAMES)
def test_denoise_recovers_clean_data_at_small_sigma(name: str) -> None:
    model = build(name)
    sched = model.schedule
    t = torch.tensor(sched.t_min, dtype=torch.float64)
    alpha, sigma = float(sched.alpha(t)), float(sched.sigma(t))
    x0 = sample_data(name, 256, seed=1).reshape(256, *model.sample_shape)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    x_t = alpha * x0 + sigma * noise
    x0_hat = model.denoise(x_t, sched.t_min)
    rms = float((x0_hat - x0).pow(2).mean().sqrt())
    naive = float((x_t / alpha - x0).pow(2).mean().sqrt())  # = sigma / alpha
    # The posterior mean is the MMSE estimator: never worse than x_t / alpha (~ identity), and
    # at the smallest sigma the error is under 10 % of the data scale.
    assert rms <= naive
    assert rms < 0.1 * float(x0.std())
    # Close to identity: E[x0 | x_t] differs from x_t / alpha by at most the noise level.
    assert float((x0_hat - x_t / alpha).pow(2).mean().sqrt()) < 1.2 * naive


@pytest.mark.parametrize("name", NAMES)
def test_exact_ode_solutions_land_on_the_data_distribution(name: str) -> None:
    model = build(name)
    sched = model.schedule
    n = 200
    x_T = model.sample_prior(n, torch.Generator().manual_seed(5), dtype=torch.float64)
    ode = exact_solution(model, x_T, rtol=1e-4).reshape(n, -1)  # errors << sampling noise
    # Exact draws of the same marginal (x at t_min), for the sampling-noise yardstick.
    t = torch.tensor(sched.t_min, dtype=torch.float64)
    alpha, sigma = float(sched.alpha(t)), float(sched.sigma(t))
    gen = torch.Generator().manual_seed(6)
    ref = alpha * sample_data(name, n, seed=7) + sigma * torch.randn(
        n, model.mixture.dim, generator=gen, dtype=torch.float64
    )
    mean, cov = _noisy_moments(model, sched.t_min)
    total_var = float(torch.trace(cov))
    # Mean: ||m_hat - m||^2 has expectation tr(cov) / n.
    for x in (ode, ref):
        assert float((x.mean(0) - mean).pow(2).sum()) < 5.0 * total_var / n
    # Total variance and the variance along the top principal directions of the true cov.
    assert float(ode.var(0).sum()) == pytest.approx(total_var, rel=0.15)
    evals, evecs = torch.linalg.eigh(cov)
    top = evecs[:, -3:]
    var_top = ((ode - mean) @ top).pow(2).mean(0)
    assert torch.all((var_top / evals[-3:] > 0.6) & (var_top / evals[-3:] < 1.6)), var_top
    # Mean log-likelihood under the true marginal: within 4 standard errors of the exact draws.
    lp_ode = model.mixture.log_prob_noisy(ode, alpha, sigma)
    lp_ref = model.mixture.log_prob_noisy(ref, alpha, sigma)
    se = math.sqrt((float(lp_ode.var()) + float(lp_ref.var())) / n)
    assert abs(float(lp_ode.mean()) - float(lp_ref.mean())) < 4.0 * se
