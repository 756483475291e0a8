"""FlowMatch schedule + flow (velocity) prediction, checked against diffusers' flow schedulers.

Independent references:

- the shift maps: diffusers' ``FlowMatchEulerDiscreteScheduler.set_timesteps`` (static
  ``shift`` and FLUX's ``use_dynamic_shifting`` with ``mu`` from ``calculate_shift`` of the
  FLUX pipeline) -- our ``shifted_uniform`` heuristic must give its sigmas;
- Euler: ``FlowMatchEulerDiscreteScheduler.step`` (``x + (sigma_next - sigma) v``) fed the same
  sigmas; its ``step`` casts the sample to float32, so agreement is to float32 round-off;
- DPM-Solver++ / UniPC: ``DPMSolverMultistepScheduler`` / ``UniPCMultistepScheduler`` with
  ``use_flow_sigmas=True, prediction_type="flow_prediction"``: their sigmas and timesteps are
  overwritten with ours (n+1 sigmas ending at t_min, as in tests/test_solvers_diffusers.py).
  DPM runs through diffusers' update functions without the float32 cast of ``step``.

The model is an analytic Gaussian mixture returning the flow velocity ``eps - x0`` at the
network time ``1000 t`` (diffusers' flow timestep).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from analytic import GaussianMixture, make_model, single_gaussian

from ld3_core.heuristics import HEURISTICS, discretize
from ld3_core.models import DiffusionModel
from ld3_core.schedules import FlowMatch, from_config, get
from ld3_core.solvers import solve

diffusers = pytest.importorskip("diffusers")

F64 = torch.float64
SHAPE = (2, 2, 2)
BATCH = 5


def _mixture() -> GaussianMixture:
    d = math.prod(SHAPE)
    i = torch.arange(d, dtype=F64)
    means = torch.stack([0.7 * torch.cos(i + 0.3), -0.6 * torch.sin(0.9 * i)])
    return GaussianMixture(torch.tensor([0.6, 0.4]), means, torch.tensor([0.2, 0.3]))


GMM = _mixture()


def _flow_model(schedule: FlowMatch) -> DiffusionModel:
    """Velocity network at diffusers' time input 1000 t (maps it back to t itself)."""
    inner = make_model(GMM, schedule, prediction="flow")

    def fn(x: torch.Tensor, t_in: torch.Tensor) -> torch.Tensor:
        return inner.fn(x, t_in / schedule.num_train_timesteps)

    return DiffusionModel(fn, schedule, "flow", sample_shape=SHAPE, name="flow-gmm")


def _x_T(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(BATCH, *SHAPE, generator=g, dtype=F64)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


# ------------------------------------------------------------------------------ schedule
def test_flow_schedule_definition_and_inverse() -> None:
    s = FlowMatch(shift=3.0)
    t = torch.linspace(s.t_min, s.t_max, 50, dtype=F64)
    torch.testing.assert_close(s.alpha(t), 1 - t, rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(s.sigma(t), t, rtol=1e-14, atol=0)
    torch.testing.assert_close(s.lambda_(t), torch.log((1 - t) / t), rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(s.t_of_lambda(s.lambda_(t)), t, rtol=1e-13, atol=0)
    torch.testing.assert_close(s.kd_sigma(t), t / (1 - t), rtol=1e-12, atol=0)
    torch.testing.assert_close(s.network_time(t), 1000 * t, rtol=1e-15, atol=0)
    assert s.prior_std() < 1.0
    u = torch.linspace(0.01, 0.99, 30, dtype=F64)
    torch.testing.assert_close(s.unshift_time(s.shift_time(u)), u, rtol=1e-13, atol=0)


def test_flow_schedule_registry_and_config_round_trip() -> None:
    s = get("flow_match", shift=3.0)
    assert isinstance(s, FlowMatch) and s.shift == 3.0
    for alias in ("flow", "flow-match", "FlowMatch", "rectified_flow"):
        assert isinstance(get(alias), FlowMatch)
    d = FlowMatch(use_dynamic_shifting=True, image_seq_len=1024, max_shift=1.16)
    back = from_config(d.config())
    assert back.config() == d.config() and back.effective_shift == d.effective_shift
    with pytest.raises(ValueError, match="image_seq_len"):
        FlowMatch(use_dynamic_shifting=True)
    with pytest.raises(ValueError):
        FlowMatch(t_max=1.0)  # lambda(1) = -inf
    with pytest.raises(ValueError):
        FlowMatch(shift=0.0)


def test_default_ends_match_diffusers_flow_dpm_solver() -> None:
    """t_max / t_min are the first sigma of diffusers' flow DPM-Solver and sigma_min of the
    flow-match Euler scheduler (both shifted)."""
    s = FlowMatch(shift=3.0)
    dpm = diffusers.DPMSolverMultistepScheduler(use_flow_sigmas=True, flow_shift=3.0,
                                                prediction_type="flow_prediction")
    dpm.set_timesteps(10)
    assert abs(float(dpm.sigmas[0]) - s.t_max) < 1e-6
    fm = diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0)
    assert abs(fm.sigma_min - s.t_min) < 1e-6


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_shifted_uniform_is_the_flow_match_euler_grid(shift: float) -> None:
    s = FlowMatch(shift=shift)
    n = 8
    ts = discretize("shifted_uniform", n, s)
    assert ts[0] == s.t_max and ts[-1] == s.t_min and bool((ts[1:] < ts[:-1]).all())
    u = np.linspace(float(s.unshift_time(s.t_max)), float(s.unshift_time(s.t_min)), n + 1)
    fm = diffusers.FlowMatchEulerDiscreteScheduler(shift=shift)
    fm.set_timesteps(sigmas=u.tolist())  # the scheduler applies its shift to given sigmas
    torch.testing.assert_close(fm.sigmas[:-1].double(), ts, rtol=2e-6, atol=1e-7)
    if shift == 1.0:
        torch.testing.assert_close(ts, discretize("uniform", n, s), rtol=1e-12, atol=1e-14)
    for name in HEURISTICS:  # every heuristic works on the flow schedule
        t = discretize(name, n, s)
        assert bool(torch.isfinite(t).all()) and bool((t[1:] < t[:-1]).all())
    with pytest.raises(ValueError, match="flow-matching"):
        discretize("shifted_uniform", n, get("vp_linear"))


@pytest.mark.parametrize("seq_len", [256, 1024, 4096])
def test_dynamic_shift_matches_flux(seq_len: int) -> None:
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    s = FlowMatch(use_dynamic_shifting=True, image_seq_len=seq_len)
    mu = calculate_shift(seq_len, 256, 4096, 0.5, 1.15)
    assert abs(s.mu - mu) < 1e-12
    fm = diffusers.FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True)
    u = np.linspace(1.0, 1 / 10, 10)  # the FLUX pipeline's sigmas
    fm.set_timesteps(sigmas=u.tolist(), mu=mu)
    torch.testing.assert_close(fm.sigmas[:-1].double(), s.shift_time(torch.from_numpy(u)),
                               rtol=2e-6, atol=1e-7)


def test_flow_prediction_conversions() -> None:
    """denoise / eps of a velocity network equal those of the same model as x0 / eps net."""
    for sched in (FlowMatch(shift=2.0), get("vp_linear")):
        flow = make_model(GMM, sched, prediction="flow", sample_shape=SHAPE)
        ref = make_model(GMM, sched, prediction="x0", sample_shape=SHAPE)
        x = _x_T(3)
        for t in (sched.t_max, 0.5 * (sched.t_min + sched.t_max), sched.t_min * 2):
            torch.testing.assert_close(flow.denoise(x, t), ref.denoise(x, t), rtol=1e-10,
                                       atol=1e-11)
            torch.testing.assert_close(flow.eps(x, t), ref.eps(x, t), rtol=1e-9, atol=1e-10)


def test_euler_on_flow_is_the_straight_line_closed_form() -> None:
    """Euler on a single Gaussian: one step from t to s is x + (s - t) v (rectified flow)."""
    s = FlowMatch(shift=3.0)
    gauss = single_gaussian(3)
    model = make_model(gauss, s, prediction="flow")
    x = torch.randn(4, 3, dtype=F64, generator=torch.Generator().manual_seed(0))
    ts = torch.tensor([s.t_max, 0.4], dtype=F64)
    v = model.network(x, ts[0])
    torch.testing.assert_close(solve(model, x, ts, "euler", 1), x + (ts[1] - ts[0]) * v,
                               rtol=1e-12, atol=1e-13)


# ------------------------------------------------------------------- diffusers agreement
def _our_times(kind: str, n: int, s: FlowMatch) -> torch.Tensor:
    return discretize(kind, n, s)


@pytest.mark.parametrize("kind", ["shifted_uniform", "logsnr", "edm"])
@pytest.mark.parametrize("n", [5, 12])
def test_euler_matches_flow_match_euler_scheduler(kind: str, n: int) -> None:
    s = FlowMatch(shift=3.0)
    model = _flow_model(s)
    ts = _our_times(kind, n, s)
    x_T = _x_T(n)
    fm = diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0)
    # (a) the pipeline's own path: sigmas= (it shifts them), final step to sigma 0
    fm.set_timesteps(sigmas=s.unshift_time(ts[:-1]).tolist())
    torch.testing.assert_close(fm.sigmas[:-1].double(), ts[:-1], rtol=2e-6, atol=1e-7)
    x = x_T.float()
    for i in range(n):
        v = model.network(x.double(), fm.timesteps[i].double() / 1000).float()
        x = fm.step(v, fm.timesteps[i], x).prev_sample
    ours = solve(model, x_T, ts[:-1], "euler", 1)  # n-1 steps, then Euler to 0 = x0_hat
    ours = model.denoise(ours, ts[-2])
    assert _rel(ours, x.double()) < 2e-5
    # (b) the exact sigmas, ending at t_min like our solvers
    fm.set_timesteps(sigmas=s.unshift_time(ts[:-1]).tolist())
    fm.sigmas = ts.clone()
    fm.timesteps = (ts[:-1] * 1000).clone()
    x = x_T.float()
    for i in range(n):
        v = model.network(x.double(), ts[i]).float()
        x = fm.step(v, fm.timesteps[i], x).prev_sample
    assert _rel(solve(model, x_T, ts, "euler", 1), x.double()) < 2e-5


def _setup_multistep(sched, ts: torch.Tensor) -> None:
    n = ts.numel() - 1
    sched.set_timesteps(n)
    sched.timesteps = (ts[:-1] * 1000).clone()
    sched.sigmas = ts.clone()
    sched.set_begin_index(0)


def _dpm_flow(order: int):
    return diffusers.DPMSolverMultistepScheduler(
        use_flow_sigmas=True, flow_shift=3.0, prediction_type="flow_prediction",
        solver_order=order, algorithm_type="dpmsolver++", solver_type="midpoint",
        lower_order_final=True, euler_at_final=False, final_sigmas_type="zero")


def _run_dpm_flow_float64(order: int, ts: torch.Tensor, model: DiffusionModel,
                          x_T: torch.Tensor) -> torch.Tensor:
    """diffusers' DPM-Solver++ update functions in float64 with its order-selection rule."""
    sched = _dpm_flow(order)
    _setup_multistep(sched, ts)
    n = ts.numel() - 1
    x = x_T.clone()
    lower = 0
    for i in range(n):
        sched._step_index = i
        v = model.network(x, ts[i])
        x0 = sched.convert_model_output(v, sample=x)
        for j in range(order - 1):
            sched.model_outputs[j] = sched.model_outputs[j + 1]
        sched.model_outputs[-1] = x0
        last = i == n - 1 and n < 15
        second_last = i == n - 2 and n < 15
        if order == 1 or lower < 1 or last:
            x = sched.dpm_solver_first_order_update(x0, sample=x)
        elif order == 2 or lower < 2 or second_last:
            x = sched.multistep_dpm_solver_second_order_update(sched.model_outputs, sample=x)
        else:
            x = sched.multistep_dpm_solver_third_order_update(sched.model_outputs, sample=x)
        lower = min(lower + 1, order)
    return x


@pytest.mark.parametrize("kind", ["shifted_uniform", "logsnr"])
@pytest.mark.parametrize("order,n", [(1, 6), (2, 6), (2, 20), (3, 10)])
def test_dpmpp_matches_diffusers_flow_dpm_solver(kind: str, order: int, n: int) -> None:
    s = FlowMatch(shift=3.0)
    model = _flow_model(s)
    ts = _our_times(kind, n, s)
    x_T = _x_T(order + n)
    theirs = _run_dpm_flow_float64(order, ts, model, x_T)
    variant = "diffusers" if order == 3 else None
    ours = solve(model, x_T, ts, "dpm++", order, variant=variant)
    assert _rel(ours, theirs) < 1e-10


@pytest.mark.parametrize("variant", ["bh1", "bh2"])
@pytest.mark.parametrize("order,n", [(1, 6), (2, 8), (3, 10)])
def test_unipc_matches_diffusers_flow_unipc(variant: str, order: int, n: int) -> None:
    s = FlowMatch(shift=3.0)
    model = _flow_model(s)
    ts = _our_times("shifted_uniform", n, s)
    x_T = _x_T(10 * order + n)
    sched = diffusers.UniPCMultistepScheduler(
        use_flow_sigmas=True, flow_shift=3.0, prediction_type="flow_prediction",
        solver_order=order, solver_type=variant, predict_x0=True, lower_order_final=True,
        disable_corrector=[], final_sigmas_type="zero")
    _setup_multistep(sched, ts)
    x = x_T.clone()
    for i in range(n):
        v = model.network(x, ts[i])
        x = sched.step(v, sched.timesteps[i], x).prev_sample
    ours = solve(model, x_T, ts, "unipc", order, variant=variant)
    assert _rel(ours, x) < 1e-10


# --------------------------------------------------- teacher, LD3 and trust region on flow
def test_teacher_ld3_and_trust_region_on_the_flow_schedule() -> None:
    """builtin:gmm-digits under FlowMatch(shift=3) with a velocity network: the teacher pairs
    match the exact ODE solution, a short LD3 run beats every heuristic (the four generic ones
    and shifted_uniform) on held-out pairs, and the trust-region schedule is valid."""
    from ld3_core import trust_region
    from ld3_core.ld3 import learn
    from ld3_core.models import load
    from ld3_core.reference import exact_solution
    from ld3_core.teacher import TeacherConfig, generate

    gmm = load("builtin:gmm-digits", schedule=FlowMatch(shift=3.0))
    model = DiffusionModel(  # the same network, re-expressed as a flow velocity
        lambda x, t_in: gmm.eps(x, t_in) - gmm.denoise(x, t_in), gmm.schedule, "flow",
        time_input=lambda t: t, sample_shape=gmm.sample_shape, name="gmm-flow")
    teacher = TeacherConfig(solver="unipc", order=3, nfe=20, discretization="logsnr")
    data = generate(model, 4, teacher, seed=1)
    ref = exact_solution(model, data.x_T.double())
    # measured RMS 8.3e-3 (UniPC-3, 20 logSNR steps on narrow mixture components)
    assert float((data.x_0.double() - ref).pow(2).mean().sqrt()) < 2e-2
    res = learn(model, "dpm++", 2, 4, teacher=teacher, n_train=10, n_val=10,
                epochs_phase1=1, epochs_phase2=2, seed=0)
    held = generate(model, 100, teacher, seed=4242)

    def err(t, mt=None):
        with torch.no_grad():
            out = solve(model, held.x_T, t, "dpm++", 2, model_timesteps=mt)
        return float((out - held.x_0).pow(2).flatten(1).mean(1).mean())

    heuristic = {h: err(discretize(h, 4, model.schedule))
                 for h in (*HEURISTICS, "shifted_uniform")}
    learned = err(res.timesteps, res.model_timesteps)
    assert learned < 0.9 * min(heuristic.values()), (learned, heuristic)
    t_tr = trust_region.optimize(model.schedule, 4, solver="dpm++", order=2, p=1)
    assert float(t_tr[0]) == pytest.approx(model.schedule.t_max)
    assert float(t_tr[-1]) == pytest.approx(model.schedule.t_min)
    assert bool((t_tr[1:] < t_tr[:-1]).all()) and math.isfinite(err(t_tr))
