"""LD3 parameterization: tau_xi, its inverse, decoupled times, the x'_T ball."""

from __future__ import annotations

import pytest
import torch

from ld3_core import schedules
from ld3_core.heuristics import HEURISTICS, discretize
from ld3_core.ld3 import ball_radius, model_times, project_to_ball, tau, xi_from_timesteps

SCHEDULES = [schedules.get("vp_linear"), schedules.get("edm"), schedules.get("vp_cosine")]


@pytest.mark.parametrize("sched", SCHEDULES, ids=lambda s: s.name)
@pytest.mark.parametrize("space", ["time", "lambda"])
def test_tau_monotone_and_exact_ends(sched, space):
    gen = torch.Generator().manual_seed(0)
    for n in (1, 2, 4, 7, 10):
        for scale in (0.1, 1.0, 3.0):
            xi = torch.randn(n + 1, generator=gen, dtype=torch.float64) * scale
            t = tau(xi, sched, space)
            assert t.shape == (n + 1,)
            assert t[0].item() == sched.t_max  # bit-exact
            assert t[-1].item() == sched.t_min
            assert bool((t[1:] < t[:-1]).all()), t


@pytest.mark.parametrize("sched", SCHEDULES, ids=lambda s: s.name)
@pytest.mark.parametrize("space", ["time", "lambda"])
@pytest.mark.parametrize("name", HEURISTICS)
def test_inverse_round_trips_heuristics(sched, space, name):
    for n in (3, 6, 10):
        t0 = discretize(name, n, sched)
        t = tau(xi_from_timesteps(t0, sched, space), sched, space)
        assert torch.allclose(t, t0, rtol=1e-12, atol=1e-12 * sched.t_min)


def test_step_sizes_follow_softmax():
    sched = schedules.get("vp_linear")
    xi = torch.tensor([0.0, 1.0, -0.5, 2.0, 0.3], dtype=torch.float64)
    t = tau(xi, sched)
    steps = t[:-1] - t[1:]
    p = torch.softmax(xi[:-1], 0)
    assert torch.allclose(steps / steps.sum(), p, rtol=1e-12)
    # invariant to a constant shift (softmax), and xi_N cancels
    assert torch.allclose(tau(xi + 3.0, sched), t, rtol=1e-13)
    xi2 = xi.clone()
    xi2[-1] = 42.0
    assert torch.equal(tau(xi2, sched), t)


def test_tau_gradient():
    sched = schedules.get("vp_linear")
    xi = torch.zeros(6, dtype=torch.float64, requires_grad=True)
    w = torch.arange(6, dtype=torch.float64)
    (tau(xi, sched) * w).sum().backward()
    assert torch.isfinite(xi.grad).all()
    assert xi.grad[:-1].abs().sum() > 0
    assert xi.grad[-1] == 0


@pytest.mark.parametrize("space", ["time", "lambda"])
def test_model_times_zero_shift_and_clamp(space):
    sched = schedules.get("vp_linear")
    t = discretize("logsnr", 5, sched)
    assert torch.allclose(model_times(t, torch.zeros(6, dtype=torch.float64), sched, space), t,
                          rtol=1e-12)
    big = torch.full((6,), 50.0, dtype=torch.float64)
    mt = model_times(t, big, sched, space)
    assert bool((mt <= sched.t_max).all()) and bool((mt >= sched.t_min).all())
    mt = model_times(t, -big, sched, space)
    assert bool((mt >= sched.t_min).all())
    shift = torch.tensor([0.0, 0.01, -0.01, 0.0, 0.0, 0.0], dtype=torch.float64)
    mt = model_times(t, shift, sched, space)
    assert mt[1] != t[1] and mt[2] != t[2] and mt[3] == pytest.approx(float(t[3]), rel=1e-12)
    with pytest.raises(ValueError):
        model_times(t, torch.zeros(3, dtype=torch.float64), sched, space)


def test_xi_from_timesteps_rejects_bad_vectors():
    sched = schedules.get("vp_linear")
    t = discretize("uniform", 4, sched)
    with pytest.raises(ValueError):
        xi_from_timesteps(t.flip(0), sched)
    with pytest.raises(ValueError):
        xi_from_timesteps(t[:-1], sched)  # does not end at t_min
    bad = t.clone()
    bad[2] = bad[1]
    with pytest.raises(ValueError):
        xi_from_timesteps(bad, sched)
    with pytest.raises(ValueError):
        tau(torch.zeros(4), sched, space="sigma")


def test_projection_keeps_points_in_ball():
    gen = torch.Generator().manual_seed(1)
    center = torch.randn(64, 1, 8, 8, generator=gen)
    x = center + torch.randn(64, 1, 8, 8, generator=gen) * torch.rand(64, 1, 1, 1, generator=gen)
    radius = 2.0
    out = project_to_ball(x, center, radius)
    dist_in = (x - center).flatten(1).norm(dim=1)
    dist_out = (out - center).flatten(1).norm(dim=1)
    assert bool((dist_out <= radius * (1 + 1e-6)).all())
    inside = dist_in <= radius
    assert inside.any() and (~inside).any()
    assert torch.equal(out[inside], x[inside])  # untouched
    assert torch.allclose(dist_out[~inside], torch.full_like(dist_out[~inside], radius),
                          rtol=1e-5)
    # projected points stay on the ray from the center
    d_in, d_out = (x - center)[~inside].flatten(1), (out - center)[~inside].flatten(1)
    cos = (d_in * d_out).sum(1) / (d_in.norm(dim=1) * d_out.norm(dim=1))
    assert torch.allclose(cos, torch.ones_like(cos), atol=1e-5)
    assert torch.equal(project_to_ball(x, center, 0.0), center)
    with pytest.raises(ValueError):
        project_to_ball(x, center, -1.0)


def test_ball_radius_formula():
    assert ball_radius(0.001, 3 * 32 * 32, 4) == pytest.approx(0.192)  # paper: ~0.19 CIFAR10
    assert ball_radius(0.001, 64, 8) == pytest.approx(0.001)
