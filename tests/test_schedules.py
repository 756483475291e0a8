"""Noise schedules: exact inverses, VP identities, monotonicity, gradients, diffusers parity."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ld3_core import schedules
from ld3_core.schedules import EDM, DiscreteVP, FlowMatch, NoiseSchedule, VPCosine, VPLinear

F64 = torch.float64


def _all_schedules() -> dict[str, NoiseSchedule]:
    return {
        "vp_linear": VPLinear(),
        "vp_cosine": VPCosine(),
        "edm": EDM(),
        "discrete_linear": DiscreteVP.from_betas(0.0001, 0.02, 1000, "linear"),
        "discrete_scaled_linear": DiscreteVP.from_betas(0.00085, 0.012, 1000, "scaled_linear"),
        "flow_match": FlowMatch(shift=3.0),
        "flow_match_dynamic": FlowMatch(use_dynamic_shifting=True, image_seq_len=4096),
    }


SCHEDULES = _all_schedules()
VP_NAMES = ["vp_linear", "vp_cosine", "discrete_linear", "discrete_scaled_linear"]


def _time_grid(s: NoiseSchedule, n: int = 2001) -> torch.Tensor:
    """Times covering [t_min, t_max] densely, both uniformly and geometrically."""
    lin = torch.linspace(s.t_min, s.t_max, n, dtype=F64)
    geo = torch.logspace(math.log10(s.t_min), math.log10(s.t_max), n, dtype=F64)
    t = torch.unique(torch.cat([lin, geo]).clamp(s.t_min, s.t_max))
    keep = torch.ones_like(t, dtype=torch.bool)
    keep[1:] = t[1:] - t[:-1] > 1e-9 * t[1:]  # drop near-duplicates of the two grids
    return t[keep]


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_t_of_lambda_inverts_lambda(name: str) -> None:
    s = SCHEDULES[name]
    t = _time_grid(s)
    back = s.t_of_lambda(s.lambda_(t))
    assert back.dtype == F64
    rel = ((back - t).abs() / t).max().item()
    # VPCosine inverts through t = angle * 2(1+s)/pi - s, which cancels ~10x near t_min = 1e-3
    # (s = 0.008): measured 2.3e-12 relative there (2.5e-15 absolute); all others < 1e-13.
    tol = 5e-12 if isinstance(s, VPCosine) else 1e-12
    assert rel < tol, f"{name}: max relative round-trip error {rel:.2e}"
    # and the other way round, on lambda values spanning the schedule
    lam = torch.linspace(s.lambda_min, s.lambda_max, 1001, dtype=F64)
    lam_back = s.lambda_(s.t_of_lambda(lam))
    assert (lam_back - lam).abs().max().item() < 1e-10


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_endpoints_and_kd_sigma(name: str) -> None:
    s = SCHEDULES[name]
    t_max = torch.tensor(s.t_max, dtype=F64)
    t_min = torch.tensor(s.t_min, dtype=F64)
    assert s.lambda_min == pytest.approx(float(s.lambda_(t_max)), abs=1e-15)
    assert s.lambda_max == pytest.approx(float(s.lambda_(t_min)), abs=1e-15)
    assert s.lambda_min < s.lambda_max
    t = _time_grid(s, 101)
    torch.testing.assert_close(s.kd_sigma(t), s.sigma(t) / s.alpha(t), rtol=1e-13, atol=0)
    tol = 5e-12 if isinstance(s, VPCosine) else 1e-12  # see test_t_of_lambda_inverts_lambda
    torch.testing.assert_close(s.t_of_kd_sigma(s.kd_sigma(t)), t, rtol=tol, atol=0)
    prior = math.sqrt(float(s.alpha(t_max)) ** 2 + float(s.sigma(t_max)) ** 2)
    assert s.prior_std() == pytest.approx(prior, rel=1e-14)


@pytest.mark.parametrize("name", VP_NAMES)
def test_vp_alpha_sigma_sum_to_one(name: str) -> None:
    s = SCHEDULES[name]
    t = _time_grid(s)
    total = s.alpha(t) ** 2 + s.sigma(t) ** 2
    assert (total - 1).abs().max().item() < 1e-13
    assert s.prior_std() == pytest.approx(1.0, abs=1e-13)


def test_vp_linear_closed_form() -> None:
    s = VPLinear(beta_min=0.1, beta_max=20.0)
    t = _time_grid(s, 101).numpy()
    log_alpha = -(20.0 - 0.1) * t**2 / 4 - 0.1 * t / 2
    np.testing.assert_allclose(s.log_alpha(torch.from_numpy(t)).numpy(), log_alpha, rtol=1e-14)
    sigma = np.sqrt(1 - np.exp(2 * log_alpha))
    np.testing.assert_allclose(s.sigma(torch.from_numpy(t)).numpy(), sigma, rtol=1e-10)


def test_vp_cosine_closed_form() -> None:
    s = VPCosine()
    t = _time_grid(s, 101).numpy()
    f = np.cos((t + 0.008) / 1.008 * np.pi / 2) / np.cos(0.008 / 1.008 * np.pi / 2)
    np.testing.assert_allclose(s.alpha(torch.from_numpy(t)).numpy(), f, rtol=1e-12)


def test_edm_is_alpha_one_sigma_t() -> None:
    s = EDM(0.002, 80.0)
    t = _time_grid(s, 101)
    torch.testing.assert_close(s.alpha(t), torch.ones_like(t))
    torch.testing.assert_close(s.sigma(t), t, rtol=1e-15, atol=0)
    torch.testing.assert_close(s.lambda_(t), -torch.log(t), rtol=1e-15, atol=0)
    assert (s.t_min, s.t_max) == (0.002, 80.0)


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_monotonicity(name: str) -> None:
    s = SCHEDULES[name]
    t = _time_grid(s)
    lam = s.lambda_(t)
    assert bool((lam[1:] < lam[:-1]).all()), "lambda must strictly decrease in t"
    sig = s.sigma(t)
    assert bool((sig[1:] > sig[:-1]).all()), "sigma must increase in t"
    alpha = s.alpha(t)
    assert bool((alpha[1:] <= alpha[:-1]).all()), "alpha must not increase in t"
    lam_grid = torch.linspace(s.lambda_max, s.lambda_min, 501, dtype=F64)
    t_back = s.t_of_lambda(lam_grid)
    assert bool((t_back[1:] > t_back[:-1]).all()), "t_of_lambda must be decreasing in lambda"


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_gradients(name: str) -> None:
    s = SCHEDULES[name]
    if isinstance(s, DiscreteVP):
        # keep finite differences inside one linear piece (knots at (i+1)/N)
        n = s.num_steps
        t = torch.tensor([3.5, 100.5, 500.5, 998.5], dtype=F64) / n
    else:
        t = torch.tensor([0.3, 0.5, 0.7, 0.9], dtype=F64) * (s.t_max - s.t_min) + s.t_min
    t.requires_grad_(True)
    assert torch.autograd.gradcheck(s.lambda_, (t,), eps=1e-7, atol=1e-6, rtol=1e-5)
    assert torch.autograd.gradcheck(s.alpha, (t,), eps=1e-7, atol=1e-6, rtol=1e-5)
    assert torch.autograd.gradcheck(s.sigma, (t,), eps=1e-7, atol=1e-6, rtol=1e-5)
    lam = s.lambda_(t).detach().requires_grad_(True)
    assert torch.autograd.gradcheck(s.t_of_lambda, (lam,), eps=1e-7, atol=1e-6, rtol=1e-5)
    # d t / d lambda is the reciprocal of d lambda / d t
    (g_lam,) = torch.autograd.grad(s.lambda_(t).sum(), t)
    (g_t,) = torch.autograd.grad(s.t_of_lambda(lam).sum(), lam)
    torch.testing.assert_close(g_lam * g_t, torch.ones_like(g_t), rtol=1e-6, atol=0)


@pytest.mark.parametrize(
    "beta_start,beta_end,beta_schedule",
    [(0.0001, 0.02, "linear"), (0.00085, 0.012, "scaled_linear")],
)
def test_discrete_vp_matches_diffusers_ddpm(
    beta_start: float, beta_end: float, beta_schedule: str
) -> None:
    diffusers = pytest.importorskip("diffusers")
    ddpm = diffusers.DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=beta_start,
        beta_end=beta_end,
        beta_schedule=beta_schedule,
    )
    s = DiscreteVP.from_betas(beta_start, beta_end, 1000, beta_schedule)
    idx = torch.arange(1000, dtype=F64)
    t = s.time_of_index(idx)
    torch.testing.assert_close(t, (idx + 1) / 1000, rtol=0, atol=1e-15)
    # alpha_t^2 at t = (i+1)/N is diffusers' alphas_cumprod[i] (float32 there)
    ac = ddpm.alphas_cumprod.double()
    torch.testing.assert_close(s.alpha(t) ** 2, ac, rtol=2e-5, atol=0)
    torch.testing.assert_close(s.alphas_cumprod, ac, rtol=2e-5, atol=0)
    # network time convention: the diffusers integer timestep i
    torch.testing.assert_close(s.network_time(t), idx, rtol=0, atol=1e-9)
    # forward process: x_t = alpha x0 + sigma eps equals DDPMScheduler.add_noise at timestep i
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(6, 4, generator=g, dtype=F64)
    eps = torch.randn(6, 4, generator=g, dtype=F64)
    steps = torch.tensor([0, 1, 10, 500, 998, 999])
    ts = s.time_of_index(steps.double())
    ours = s.alpha(ts)[:, None] * x0 + s.sigma(ts)[:, None] * eps
    theirs = ddpm.add_noise(x0, eps, steps)
    torch.testing.assert_close(ours, theirs.double(), rtol=1e-4, atol=1e-5)
    # exact with the scheduler's own (float32) table
    s32 = DiscreteVP(ac)
    ours32 = s32.alpha(ts)[:, None] * x0 + s32.sigma(ts)[:, None] * eps
    torch.testing.assert_close(ours32, theirs.double(), rtol=1e-12, atol=1e-12)


def test_discrete_vp_interpolates_log_alpha_linearly() -> None:
    s = DiscreteVP.from_betas()
    i = 41
    t0, t1 = (i + 1) / 1000, (i + 2) / 1000
    la0 = 0.5 * math.log(float(s.alphas_cumprod[i]))
    la1 = 0.5 * math.log(float(s.alphas_cumprod[i + 1]))
    tm = torch.tensor(0.3 * t0 + 0.7 * t1, dtype=F64)
    assert float(s.log_alpha(tm)) == pytest.approx(0.3 * la0 + 0.7 * la1, rel=1e-13)
    assert s.t_min == pytest.approx(1e-3) and s.t_max == 1.0


@pytest.mark.parametrize(
    "name,kw,cls",
    [
        ("vp_linear", {}, VPLinear),
        ("VP-Linear", {"beta_max": 10.0}, VPLinear),
        ("vp", {}, VPLinear),
        ("vp_cosine", {}, VPCosine),
        ("cosine", {"s": 0.01}, VPCosine),
        ("edm", {"sigma_min": 0.01, "sigma_max": 10.0}, EDM),
        ("discrete_vp", {"beta_schedule": "scaled_linear", "beta_start": 0.00085,
                         "beta_end": 0.012}, DiscreteVP),
        ("discrete_vp", {"alphas_cumprod": [0.9, 0.5, 0.1]}, DiscreteVP),
    ],
)
def test_get_by_name_and_config_round_trip(name: str, kw: dict, cls: type) -> None:
    s = schedules.get(name, **kw)
    assert isinstance(s, cls)
    again = schedules.from_config(s.config())
    assert type(again) is type(s)
    t = torch.linspace(s.t_min, s.t_max, 17, dtype=F64)
    torch.testing.assert_close(again.lambda_(t), s.lambda_(t), rtol=0, atol=0)
    if "beta_max" in kw:
        assert s.beta_max == kw["beta_max"]


@pytest.mark.parametrize(
    "call",
    [
        lambda: schedules.get("no_such_schedule"),
        lambda: schedules.get("vp_linear", bogus=1.0),
        lambda: schedules.get("discrete_vp", beta_schedule="nope"),
        lambda: VPLinear(beta_min=5.0, beta_max=1.0),
        lambda: VPLinear(t_min=0.0),
        lambda: VPLinear(t_min=0.5, t_max=0.4),
        lambda: VPCosine(t_max=1.0),
        lambda: EDM(sigma_min=0.0),
        lambda: EDM(sigma_min=10.0, sigma_max=1.0),
        lambda: DiscreteVP([0.5]),
        lambda: DiscreteVP([0.5, 0.7]),
        lambda: DiscreteVP([1.0, 0.5]),
        lambda: DiscreteVP([[0.9, 0.5]]),
        lambda: DiscreteVP([0.9, 0.5, 0.1], t_min=0.0),
    ],
)
def test_bad_parameters_raise_value_error(call) -> None:
    with pytest.raises(ValueError):
        call()


def test_names_lists_every_schedule() -> None:
    assert set(schedules.names()) == {"vp_linear", "vp_cosine", "edm", "discrete_vp",
                                      "flow_match"}


def test_float32_inputs_keep_dtype() -> None:
    for s in SCHEDULES.values():
        t = torch.linspace(s.t_min, s.t_max, 5, dtype=torch.float32)
        assert s.lambda_(t).dtype == torch.float32
        assert s.sigma(t).dtype == torch.float32
