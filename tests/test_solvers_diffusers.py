"""Independent implementation: diffusers' multistep schedulers vs our solvers, same steps/model.

Conventions matched (see docs/solvers.md):

- schedule: ``DiscreteVP(scheduler.alphas_cumprod.double())`` -- the scheduler's own (float32)
  table, so both sides use bit-identical alpha_t at the integer timesteps; diffusers' sigma is
  our ``kd_sigma = sigma_t / alpha_t``.
- model: an analytic Gaussian mixture returning eps at the network time ``N t - 1`` (the
  diffusers integer timestep, fractional in between); ours wraps the very same function
  (``prediction="eps"``, ``time_input = schedule.network_time``).
- steps: after ``set_timesteps(n)`` we overwrite the scheduler's ``timesteps`` (our network
  times of t_0..t_{n-1}) and ``sigmas`` (float64 ``kd_sigma`` of t_0..t_n, n+1 values), and
  call ``set_begin_index(0)``. This feeds diffusers arbitrary (also non-integer) steps; the
  "integer" cases use diffusers' own ``linspace`` timesteps. Our schedules end at t_min > 0:
  ``final_sigmas_type="sigma_min"`` (the last sigma is that of index 0 = our t_min = 1/N).
- orders: ``lower_order_final`` on both sides; diffusers lowers the order of the last two
  steps only below 15 steps for DPM-Solver (our rule), but UniPC lowers
  ``min(order, n - i)`` at ANY n -- so UniPC cases with n >= 15 use lower_order_final=False.
  Warm-up (order min(order, i+1)) is the same on both sides; UniPC's corrector is never
  disabled (``disable_corrector=[]``) and is not applied after the last step on either side.

``DPMSolverMultistepScheduler.step`` casts the sample to float32 before the update, so that
path agrees to ~1e-7 only; the "float64" DPM cases call diffusers' own update functions
(``convert_model_output``, ``dpm_solver_first_order_update``,
``multistep_dpm_solver_second_order_update``, ...) with diffusers' order-selection rule and
no cast, and agree to round-off.

diffusers' third-order DPM-Solver++ (3M) weights its D2 term by ``phi_3`` where the Taylor
expansion needs ``2 phi_3`` (with ``D2 ~ h^2 x0''/2``), which makes it second-order accurate;
ours uses ``2 phi_3`` and is third order. :func:`test_dpmpp3_matches_diffusers_with_d2_weight_2`
shows this is the only difference, and :func:`test_dpmpp3_order_ours_vs_diffusers` measures it.
"""

from __future__ import annotations

import math

import pytest
import torch
from analytic import GaussianMixture, make_model

from ld3_core.heuristics import discretize
from ld3_core.schedules import DiscreteVP
from ld3_core.solvers import solve

diffusers = pytest.importorskip("diffusers")

F64 = torch.float64
SHAPE = (2, 2, 2)  # one sample: (C, H, W), flattened D = 8
BATCH = 6


def _mixture() -> GaussianMixture:
    d = math.prod(SHAPE)
    i = torch.arange(d, dtype=F64)
    means = torch.stack(
        [0.7 * torch.cos(i + 0.3), -0.6 * torch.sin(0.9 * i), 0.3 * torch.cos(2 * i)]
    )
    stds = torch.tensor([0.2, 0.3, 0.15], dtype=F64)
    return GaussianMixture(torch.tensor([0.4, 0.35, 0.25]), means, stds)


GMM = _mixture()
COMMON = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    prediction_type="epsilon",
    final_sigmas_type="sigma_min",
)


def _dpm(order: int, lower_order_final: bool):
    return diffusers.DPMSolverMultistepScheduler(
        **COMMON,
        solver_order=order,
        algorithm_type="dpmsolver++",
        solver_type="midpoint",
        lower_order_final=lower_order_final,
        euler_at_final=False,
    )


def _unipc(order: int, variant: str, lower_order_final: bool):
    return diffusers.UniPCMultistepScheduler(
        **COMMON,
        solver_order=order,
        solver_type=variant,
        predict_x0=True,
        lower_order_final=lower_order_final,
        disable_corrector=[],
    )


def _setup(sched, ts: torch.Tensor, schedule: DiscreteVP) -> torch.Tensor:
    """Feed our (n+1) times to a diffusers scheduler; returns the network times (n+1,)."""
    n = ts.numel() - 1
    sched.set_timesteps(n)
    net = schedule.network_time(ts)
    sched.timesteps = net[:-1].clone()
    sched.sigmas = schedule.kd_sigma(ts).clone()
    sched.set_begin_index(0)
    assert sched.num_inference_steps == n and len(sched.timesteps) == n
    return net


def _eps_fn(schedule: DiscreteVP):
    return make_model(GMM, schedule, prediction="eps", network_time=True).fn


def _run_step(sched, ts, schedule, x_T) -> torch.Tensor:
    """Sample with diffusers' own ``step()`` loop (our model as eps network)."""
    net = _setup(sched, ts, schedule)
    fn = _eps_fn(schedule)
    x = x_T.clone()
    for i in range(ts.numel() - 1):
        eps = fn(x, net[i].expand(x.shape[0]))
        x = sched.step(eps, sched.timesteps[i], x).prev_sample
    return x


def _run_dpm_float64(sched, ts, schedule, x_T) -> torch.Tensor:
    """DPM-Solver++ through diffusers' update functions in float64 (step() minus its cast).

    The order selection is diffusers' rule from ``DPMSolverMultistepScheduler.step``.
    """
    net = _setup(sched, ts, schedule)
    fn = _eps_fn(schedule)
    n = ts.numel() - 1
    order = sched.config.solver_order
    lof = sched.config.lower_order_final
    x = x_T.clone()
    lower_order_nums = 0
    for i in range(n):
        sched._step_index = i
        eps = fn(x, net[i].expand(x.shape[0]))
        x0 = sched.convert_model_output(eps, sample=x)
        for j in range(order - 1):
            sched.model_outputs[j] = sched.model_outputs[j + 1]
        sched.model_outputs[-1] = x0
        last = i == n - 1 and lof and n < 15
        second_last = i == n - 2 and lof and n < 15
        if order == 1 or lower_order_nums < 1 or last:
            x = sched.dpm_solver_first_order_update(x0, sample=x)
        elif order == 2 or lower_order_nums < 2 or second_last:
            x = sched.multistep_dpm_solver_second_order_update(sched.model_outputs, sample=x)
        else:
            x = sched.multistep_dpm_solver_third_order_update(sched.model_outputs, sample=x)
        lower_order_nums = min(lower_order_nums + 1, order)
    return x


def _ours(schedule, ts, x_T, solver, order, variant=None, lower_order_final=True):
    model = make_model(GMM, schedule, prediction="eps", network_time=True)
    return solve(model, x_T, ts, solver, order, variant=variant,
                 lower_order_final=lower_order_final)


def _x_T(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(BATCH, *SHAPE, generator=g, dtype=F64)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def _times(kind: str, n: int, sched, schedule: DiscreteVP) -> torch.Tensor:
    """(n+1,) decreasing times: diffusers' own integer steps + t_min, or our logSNR steps."""
    if kind == "integer":
        sched.set_timesteps(n)
        idx = sched.timesteps.double()
        ts = torch.cat([schedule.time_of_index(idx), torch.tensor([schedule.t_min], dtype=F64)])
        # diffusers' float32 sigmas are our kd_sigma at the same (integer) steps
        torch.testing.assert_close(
            schedule.kd_sigma(ts).float(), sched.sigmas.float(), rtol=1e-6, atol=0
        )
        return ts
    return discretize("logsnr", n, schedule)


@pytest.fixture(scope="module")
def schedule() -> DiscreteVP:
    return DiscreteVP(_dpm(2, True).alphas_cumprod.double())


# ---------------------------------------------------------------------------- DPM-Solver++
@pytest.mark.parametrize("kind", ["integer", "logsnr"])
@pytest.mark.parametrize("n,lower_order_final", [(10, True), (7, True), (20, True), (10, False)])
@pytest.mark.parametrize("order", [1, 2])
def test_dpmpp_matches_diffusers_float64(schedule, kind, n, lower_order_final, order) -> None:
    sched = _dpm(order, lower_order_final)
    ts = _times(kind, n, sched, schedule)
    x_T = _x_T(n)
    theirs = _run_dpm_float64(sched, ts, schedule, x_T)
    ours = _ours(schedule, ts, x_T, "dpm++", order, lower_order_final=lower_order_final)
    assert _rel(ours, theirs) < 1e-10


@pytest.mark.parametrize("kind", ["integer", "logsnr"])
@pytest.mark.parametrize("order", [2])
def test_dpmpp_matches_diffusers_step_loop(schedule, kind, order) -> None:
    """diffusers' public step() loop: limited by its internal float32 cast of the sample."""
    sched = _dpm(order, True)
    ts = _times(kind, 10, sched, schedule)
    x_T = _x_T(1)
    theirs = _run_step(sched, ts, schedule, x_T)
    ours = _ours(schedule, ts, x_T, "dpm++", order)
    assert _rel(ours, theirs) < 1e-6
    # and the float64 replica of step() is the same computation as step() itself
    replica = _run_dpm_float64(_dpm(order, True), ts, schedule, x_T)
    assert _rel(replica, theirs) < 1e-6


class _DPM3MWeight2(diffusers.DPMSolverMultistepScheduler):
    """diffusers' 3M update with the D2 term weighted 2*phi_3 (the third-order weight).

    Same D0, D1, D2 as diffusers (DPM-Solver++ paper, multistep 3rd order); only the weight
    of D2 changes from ``phi_3`` to ``2 phi_3``, ``phi_3 = (e^{-h} - 1 + h)/h^2 - 1/2``.
    """

    def multistep_dpm_solver_third_order_update(self, model_output_list, *args, sample=None,
                                                **kwargs):
        i = self.step_index
        sig = [self._sigma_to_alpha_sigma_t(self.sigmas[j]) for j in (i + 1, i, i - 1, i - 2)]
        lam = [torch.log(a) - torch.log(s) for a, s in sig]
        alpha_t, sigma_t = sig[0]
        sigma_s0 = sig[1][1]
        m0, m1, m2 = model_output_list[-1], model_output_list[-2], model_output_list[-3]
        h, h0, h1 = lam[0] - lam[1], lam[1] - lam[2], lam[2] - lam[3]
        r0, r1 = h0 / h, h1 / h
        d1_0, d1_1 = (m0 - m1) / r0, (m1 - m2) / r1
        d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)
        d2 = (d1_0 - d1_1) / (r0 + r1)
        phi1 = torch.expm1(-h)
        phi2 = phi1 / h + 1.0
        phi3 = (phi1 + h) / h**2 - 0.5
        return (sigma_t / sigma_s0) * sample - alpha_t * phi1 * m0 + alpha_t * phi2 * d1 \
            - 2.0 * alpha_t * phi3 * d2


@pytest.mark.parametrize("kind", ["integer", "logsnr"])
@pytest.mark.parametrize("n,lower_order_final", [(10, True), (20, True), (10, False)])
def test_dpmpp3_matches_diffusers_with_d2_weight_2(schedule, kind, n, lower_order_final) -> None:
    sched = _DPM3MWeight2(**COMMON, solver_order=3, algorithm_type="dpmsolver++",
                          lower_order_final=lower_order_final)
    ts = _times(kind, n, sched, schedule)
    x_T = _x_T(2)
    theirs = _run_dpm_float64(sched, ts, schedule, x_T)
    ours = _ours(schedule, ts, x_T, "dpm++", 3, lower_order_final=lower_order_final)
    assert _rel(ours, theirs) < 1e-10
    # ... while diffusers' own 3M differs (by far more than round-off)
    plain = _run_dpm_float64(_dpm(3, lower_order_final), ts, schedule, x_T)
    assert _rel(ours, plain) > 1e-6


def test_dpmpp3_order_ours_vs_diffusers(schedule) -> None:
    """Observed order (NFE 20 -> 40, logSNR steps, reference: solve_ivp) of both 3M variants."""
    from ld3_core.reference import exact_solution

    model = make_model(GMM, schedule, prediction="eps", network_time=True)
    x_T = _x_T(3)
    ref = exact_solution(model, x_T, rtol=1e-11)
    err_ours, err_theirs = [], []
    for n in (20, 40):
        ts = discretize("logsnr", n, schedule)
        ours = _ours(schedule, ts, x_T, "dpm++", 3)
        theirs = _run_dpm_float64(_dpm(3, True), ts, schedule, x_T)
        err_ours.append(float((ours - ref).flatten(1).norm(dim=1).median()))
        err_theirs.append(float((theirs - ref).flatten(1).norm(dim=1).median()))
    p_ours = math.log2(err_ours[0] / err_ours[1])
    p_theirs = math.log2(err_theirs[0] / err_theirs[1])
    print(f"\n3M observed order NFE 20->40: ours {p_ours:.2f}, diffusers {p_theirs:.2f}")
    assert p_ours > 2.7
    assert p_theirs < p_ours - 0.3


# -------------------------------------------------------------------------------- UniPC
@pytest.mark.parametrize("kind", ["integer", "logsnr"])
@pytest.mark.parametrize("variant", ["bh1", "bh2"])
@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("n,lower_order_final", [(10, True), (5, True), (20, False)])
def test_unipc_matches_diffusers(schedule, kind, variant, order, n, lower_order_final) -> None:
    sched = _unipc(order, variant, lower_order_final)
    ts = _times(kind, n, sched, schedule)
    x_T = _x_T(10 + n)
    theirs = _run_step(sched, ts, schedule, x_T)
    ours = _ours(schedule, ts, x_T, "unipc", order, variant=variant,
                 lower_order_final=lower_order_final)
    assert _rel(ours, theirs) < 1e-10


def test_unipc_lower_order_final_rule_differs_above_15_steps(schedule) -> None:
    """Documented difference: diffusers' UniPC lowers the last orders at any n, ours below 15."""
    n = 16
    sched = _unipc(3, "bh2", True)
    ts = _times("logsnr", n, sched, schedule)
    x_T = _x_T(5)
    theirs = _run_step(sched, ts, schedule, x_T)
    ours = _ours(schedule, ts, x_T, "unipc", 3, variant="bh2", lower_order_final=True)
    assert _rel(ours, theirs) > 1e-9
