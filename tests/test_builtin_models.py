"""Built-in models: the GMM's exact posterior mean, CFG of the conditional GMM, the digits U-Net."""

from __future__ import annotations

import math

import pytest
import torch

from ld3_core.data import digits_split, load_digits, train_holdout_split
from ld3_core.models import DiffusionModel, builtin_ids, load
from ld3_core.models.builtin import BUILTIN_MODELS, load_builtin, weights_file
from ld3_core.models.gmm import GaussianMixture, gmm_model
from ld3_core.schedules import EDM, VPLinear

F64 = torch.float64


def _random_spd(d: int, gen: torch.Generator, scale: float = 1.0) -> torch.Tensor:
    a = torch.randn(d, d, generator=gen, dtype=F64)
    return scale * (a @ a.T / d + 0.05 * torch.eye(d, dtype=F64))


def _brute_posterior_mean(g: GaussianMixture, x: torch.Tensor, a: float, s: float) -> torch.Tensor:
    """Per-component linear solves and slogdet: an independent implementation of E[x0|x_t]."""
    d = g.dim
    logs, means = [], []
    for k in range(g.num_components):
        cov, mu = g.covariances[k], g.means[k]
        c = a * a * cov + s * s * torch.eye(d, dtype=F64)
        r = x - a * mu
        sol = torch.linalg.solve(c, r.T).T
        logdet = torch.linalg.slogdet(c)[1]
        logs.append(g.log_weights[k] - 0.5 * (r * sol).sum(1) - 0.5 * logdet)
        means.append(mu + a * (cov @ sol.T).T)
    w = torch.softmax(torch.stack(logs, 1), 1)
    return (w.unsqueeze(-1) * torch.stack(means, 1)).sum(1)


# -- data -----------------------------------------------------------------------------------------
def test_digits_data_range_shape_and_split():
    x, y = load_digits()
    assert x.shape == (1797, 1, 8, 8) and x.dtype == torch.float32
    assert float(x.min()) == -1.0 and float(x.max()) == 1.0
    assert y.shape == (1797,) and set(y.tolist()) == set(range(10))
    tr, ho = train_holdout_split()
    assert len(tr) + len(ho) == 1797 and len(set(tr.tolist()) & set(ho.tolist())) == 0
    tr2, ho2 = train_holdout_split()
    assert torch.equal(tr, tr2) and torch.equal(ho, ho2)
    assert digits_split("holdout")[0].shape[0] == len(ho)
    with pytest.raises(ValueError):
        train_holdout_split(holdout_fraction=1.5)
    with pytest.raises(ValueError):
        digits_split("validation")


# -- GMM posterior mean ---------------------------------------------------------------------------
def test_single_gaussian_matches_closed_form():
    gen = torch.Generator().manual_seed(0)
    d = 6
    cov, mu = _random_spd(d, gen), torch.randn(d, generator=gen, dtype=F64)
    g = GaussianMixture(torch.ones(1), mu[None], cov[None])
    x = torch.randn(5, d, generator=gen, dtype=F64)
    for a, s in [(0.9, 0.3), (1.0, 5.0), (0.2, 0.98), (1.0, 1e-3)]:
        exact = mu + a * (cov @ torch.linalg.solve(a * a * cov + s * s * torch.eye(d, dtype=F64),
                                                   (x - a * mu).T)).T
        got = g.posterior_mean(x, torch.tensor(a, dtype=F64), torch.tensor(s, dtype=F64))
        torch.testing.assert_close(got, exact, rtol=1e-10, atol=1e-10)


def test_mixture_posterior_mean_matches_importance_weighted_monte_carlo():
    gen = torch.Generator().manual_seed(1)
    d, k = 2, 3
    covs = torch.stack([_random_spd(d, gen, 0.3) for _ in range(k)])
    means = torch.tensor([[-2.0, 0.0], [2.0, 1.0], [0.0, -2.0]], dtype=F64)
    g = GaussianMixture(torch.tensor([0.5, 0.3, 0.2]), means, covs)
    a, s = 0.8, 0.6
    x_t = torch.tensor([[0.3, -0.4], [1.5, 0.9], [-1.0, -1.2]], dtype=F64)
    # E[x0|x_t] = E_p[x0 N(x_t; a x0, s^2)] / E_p[N(x_t; a x0, s^2)] with exact draws x0 ~ p.
    x0 = g.sample(400_000, torch.Generator().manual_seed(2))
    logw = -((x_t[:, None, :] - a * x0[None]) ** 2).sum(-1) / (2 * s * s)  # (3, M)
    w = torch.softmax(logw, dim=1)
    mc = w @ x0
    ess = 1.0 / (w**2).sum(1)
    assert bool((ess > 1000).all())
    got = g.posterior_mean(x_t, torch.tensor(a, dtype=F64), torch.tensor(s, dtype=F64))
    torch.testing.assert_close(got, mc, rtol=0, atol=0.02)
    torch.testing.assert_close(got, _brute_posterior_mean(g, x_t, a, s), rtol=0, atol=1e-12)


@pytest.mark.parametrize("schedule", [VPLinear(), EDM()], ids=["vp_linear", "edm"])
def test_digits_gmm_denoiser_is_exact_on_schedule(schedule):
    model = load("builtin:gmm-digits", schedule=schedule)
    assert model.prediction == "x0" and model.analytic is True
    assert model.schedule is schedule
    g = model.mixture
    x0, _ = load_digits(F64)
    gen = torch.Generator().manual_seed(3)
    for frac in (0.0, 0.3, 1.0):
        t = torch.tensor(schedule.t_min + frac * (schedule.t_max - schedule.t_min), dtype=F64)
        a, s = float(schedule.alpha(t)), float(schedule.sigma(t))
        x_t = a * x0[:8].reshape(8, -1) + s * torch.randn(8, 64, generator=gen, dtype=F64)
        got = model.denoise(x_t.reshape(8, 1, 8, 8), t).reshape(8, -1)
        exact = _brute_posterior_mean(g, x_t, a, s)
        torch.testing.assert_close(got, exact, rtol=0, atol=1e-10)
        got32 = model.denoise(x_t.float().reshape(8, 1, 8, 8), t.float()).reshape(8, -1)
        torch.testing.assert_close(got32.double(), exact, rtol=0, atol=1e-4)
    # Very noisy: the posterior mean is close to the data mean.
    t_big = torch.tensor(schedule.t_max, dtype=F64)
    far = model.denoise(torch.zeros(1, 1, 8, 8, dtype=F64), t_big).reshape(-1)
    data_mean = (g.log_weights.exp()[:, None] * g.means).sum(0)
    assert float((far - data_mean).abs().max()) < 0.05


def test_schedule_option_by_name_and_dtype():
    assert isinstance(load("builtin:gmm-digits", schedule="edm").schedule, EDM)
    assert isinstance(load("builtin:gmm-digits").schedule, VPLinear)
    m = load("builtin:gmm-digits", dtype="float64")
    out = m.denoise(torch.zeros(2, 1, 8, 8), 0.5)
    assert out.dtype == torch.float32 and m.network_dtype == F64


def test_gmm_gradients_flow_in_x_and_t():
    model = load("builtin:gmm-digits")
    x = torch.randn(3, 1, 8, 8, dtype=F64, requires_grad=True)
    t = torch.tensor([0.05, 0.4, 0.9], dtype=F64, requires_grad=True)
    out = model.denoise(x, t)
    out.pow(2).sum().backward()
    assert torch.isfinite(x.grad).all() and float(x.grad.abs().sum()) > 0
    assert torch.isfinite(t.grad).all() and bool((t.grad != 0).all())


def test_gmm_gradcheck_small_mixture():
    gen = torch.Generator().manual_seed(4)
    covs = torch.stack([_random_spd(3, gen, 0.5) for _ in range(2)])
    g = GaussianMixture(torch.tensor([0.6, 0.4]), torch.randn(2, 3, generator=gen, dtype=F64), covs)
    model = gmm_model(g, EDM(), sample_shape=(3,))
    x = torch.randn(2, 3, generator=gen, dtype=F64, requires_grad=True)
    t = torch.tensor([0.7, 1.9], dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda xx, tt: model.denoise(xx, tt), (x, t))


def test_gmm_sample_matches_mixture_moments():
    gen = torch.Generator().manual_seed(5)
    covs = torch.stack([_random_spd(2, gen, 0.2) for _ in range(2)])
    means = torch.tensor([[-1.0, 0.0], [1.0, 2.0]], dtype=F64)
    g = GaussianMixture(torch.tensor([0.25, 0.75]), means, covs)
    x = g.sample(200_000, torch.Generator().manual_seed(6))
    torch.testing.assert_close(x.mean(0), 0.25 * means[0] + 0.75 * means[1], rtol=0, atol=0.01)


def test_bad_mixture_parameters_raise():
    with pytest.raises(ValueError):
        GaussianMixture(torch.ones(2), torch.zeros(2, 3), torch.eye(3).expand(3, 3, 3))
    with pytest.raises(ValueError):
        GaussianMixture(torch.ones(1), torch.zeros(1, 2), -torch.eye(2)[None])


# -- class-conditional GMM and CFG -----------------------------------------------------------
def _counting(model: DiffusionModel) -> list[int]:
    calls: list[int] = []
    inner = model.fn

    def fn(x, t, **cond):
        calls.append(x.shape[0])
        return inner(x, t, **cond)

    model.fn = fn
    return calls


def test_cond_gmm_guidance_one_equals_conditional_posterior():
    model = load("builtin:gmm-digits-cond")
    assert model.guidance_scale == 1.0 and model.uncond is not None
    g = model.mixture
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(4, 1, 8, 8, generator=gen, dtype=F64)
    t = torch.tensor(0.5, dtype=F64)
    labels = torch.tensor([0, 3, 7, 9])
    out = model.denoise(x, t, cond={"class_labels": labels})
    a, s = model.schedule.alpha(t), model.schedule.sigma(t)
    expected = g.posterior_mean(x, a, s, labels)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    # Labels change the output; label 10 is the unconditional (full) mixture = gmm-digits.
    other = model.denoise(x, t, cond={"class_labels": torch.tensor([1, 1, 1, 1])})
    assert float((other - out).abs().max()) > 0.1
    uncond = model.denoise(x, t, cond={"class_labels": torch.full((4,), 10)})
    plain = load("builtin:gmm-digits").denoise(x, t)
    torch.testing.assert_close(uncond, plain, rtol=0, atol=1e-12)


def test_cond_gmm_cfg_is_one_batched_call():
    w = 3.0
    guided = load("builtin:gmm-digits-cond", guidance_scale=w)
    calls = _counting(guided)
    x = torch.randn(5, 1, 8, 8, dtype=F64)
    labels = torch.tensor([2, 2, 5, 8, 0])
    t = torch.tensor(0.3, dtype=F64)
    out = guided.denoise(x, t, cond={"class_labels": labels})
    assert calls == [10]  # [cond; uncond] in one call
    plain = load("builtin:gmm-digits-cond")
    c = plain.denoise(x, t, cond={"class_labels": labels})
    u = plain.denoise(x, t, cond={"class_labels": torch.full((5,), 10)})
    torch.testing.assert_close(out, u + w * (c - u), rtol=0, atol=1e-12)


def test_cond_sampler_and_bad_labels():
    model = load("builtin:gmm-digits-cond")
    cond = model.sample_cond(64, torch.Generator().manual_seed(0))
    labels = cond["class_labels"]
    assert labels.shape == (64,) and labels.dtype == torch.int64
    assert 0 <= int(labels.min()) and int(labels.max()) <= 9 and len(set(labels.tolist())) > 3
    with pytest.raises(ValueError, match="class labels"):
        model.denoise(torch.zeros(2, 1, 8, 8), 0.5, cond={"class_labels": torch.tensor([3, 11])})
    with pytest.raises(ValueError, match="guidance_scale"):
        load("builtin:gmm-digits", guidance_scale=2.0)


# -- digits U-Net ---------------------------------------------------------------------------
def test_unet_digits_loads_runs_and_is_trained():
    path = weights_file("unet-digits")
    assert path.is_file() and path.stat().st_size < 5 * 2**20
    model = load("builtin:unet-digits")
    assert model.prediction == "eps" and isinstance(model.schedule, VPLinear)
    x0, _ = load_digits()
    x0 = x0[:256]
    gen = torch.Generator().manual_seed(8)
    eps = torch.randn(x0.shape, generator=gen)
    t = torch.full((256,), 0.5)
    a = model.schedule.alpha(t).float().view(-1, 1, 1, 1)
    s = model.schedule.sigma(t).float().view(-1, 1, 1, 1)
    with torch.no_grad():
        pred = model.eps(a * x0 + s * eps, t)
    assert pred.shape == x0.shape and torch.isfinite(pred).all()
    # A trained denoiser beats the trivial eps_hat = 0 (mse 1) by far at moderate noise.
    assert float((pred - eps).pow(2).mean()) < 0.3


def test_unet_gradients_reach_input_and_time():
    model = load("builtin:unet-digits", dtype="float64")
    x = torch.randn(2, 1, 8, 8, dtype=F64, requires_grad=True)
    t = torch.tensor([0.2, 0.7], dtype=F64, requires_grad=True)
    model.denoise(x, t).sum().backward()
    assert float(x.grad.abs().sum()) > 0 and bool((t.grad != 0).all())


# -- registry -----------------------------------------------------------------------------------
def test_builtin_registry_and_errors():
    assert set(BUILTIN_MODELS) == {"gmm-digits", "gmm-digits-cond", "unet-digits"}
    assert set(builtin_ids()) >= {"builtin:gmm-digits", "builtin:unet-digits"}
    with pytest.raises(ValueError, match="builtin:gmm-digits"):
        load_builtin("no-such-model")
    with pytest.raises(ValueError, match="unknown option"):
        load("builtin:gmm-digits", colour="red")
    with pytest.raises(ValueError, match="trained on"):
        load("builtin:unet-digits", schedule="edm")
    with pytest.raises(ValueError, match="dtype"):
        load("builtin:gmm-digits", dtype="int64")
    assert math.isclose(load("builtin:gmm-digits-cond", guidance_scale=2.5).guidance_scale, 2.5)


@pytest.mark.parametrize("model_id", ["builtin:gmm-digits", "builtin:unet-digits"])
def test_denoise_and_eps_check_the_shape_of_t(model_id):
    """x0- and eps-prediction models alike: t must be a scalar or (B,), also when the network
    gets other (decoupled) times; a scalar t gives the same result as t repeated per sample."""
    model = load(model_id)
    x = model.sample_prior(3, torch.Generator().manual_seed(0))
    for fn in (model.denoise, model.eps):
        for bad in (torch.full((2,), 0.5), [0.5, 0.5], torch.full((3, 1), 0.5)):
            with pytest.raises(ValueError, match="scalar or of shape"):
                fn(x, bad, model_t=torch.tensor(0.5))
        torch.testing.assert_close(fn(x, 0.5), fn(x, torch.full((3,), 0.5)))
