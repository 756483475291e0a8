"""Trust-region time steps (ld3_core.trust_region): weights, objective, gradient, constraints."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ld3_core import heuristics, schedules
from ld3_core import trust_region as tr
from ld3_core.solvers import step_orders

SCHEDULES = {
    "vp_linear": schedules.VPLinear(),
    "vp_cosine": schedules.VPCosine(),
    "edm": schedules.EDM(),
    "discrete_sd": schedules.DiscreteVP.from_betas(0.00085, 0.012, 1000, "scaled_linear"),
}


class ShiftedVP(schedules.NoiseSchedule):
    """A schedule that is neither VP nor constant-alpha (alpha = 2 * alpha_VP, sigma = 2 sigma_VP)
    to exercise the generic (torch autograd) path of the error model."""

    name = "shifted"

    def __init__(self) -> None:
        self.base = schedules.VPLinear()
        self.t_min, self.t_max = self.base.t_min, self.base.t_max

    def log_alpha(self, t):
        return self.base.log_alpha(t) + math.log(2.0) * (1.0 + torch.as_tensor(t) ** 2)

    def log_sigma(self, t):
        return self.base.log_sigma(t) + math.log(2.0) * (1.0 + torch.as_tensor(t) ** 2)

    def t_of_lambda(self, lam):
        return self.base.t_of_lambda(lam)

    def config(self):
        return {"name": self.name}


def _closed_forms(lam: np.ndarray, s: int, k: int) -> list[float]:
    """The paper's closed-form weights, written out, for step s of order k."""
    h = np.diff(lam)
    el = np.exp(lam)

    def h0(x):
        return np.exp(x) - 1

    def h1(x):
        return np.exp(x) * x - h0(x)

    def h2(x):
        return np.exp(x) * x * x - 2 * h1(x)

    if k == 1:
        return [el[s + 1] - el[s]]
    if k == 2:
        n = s - 1
        return [
            -el[n + 1] * h1(h[n + 1]) / h[n],
            el[n + 1] * (h1(h[n + 1]) + h[n] * h0(h[n + 1])) / h[n],
        ]
    n = s - 2
    hn, hn1, hn2 = h[n], h[n + 1], h[n + 2]
    return [
        el[n + 2] * (h2(hn2) + hn1 * h1(hn2)) / (hn * (hn + hn1)),
        -el[n + 2] * (h2(hn2) + (hn + hn1) * h1(hn2)) / (hn * hn1),
        el[n + 2] * (h2(hn2) + (2 * hn1 + hn) * h1(hn2) + hn1 * (hn + hn1) * h0(hn2))
        / (hn1 * (hn + hn1)),
    ]


@pytest.mark.parametrize("k", [1, 2, 3])
def test_weights_match_closed_forms(k):
    lam = np.array([-5.0, -3.1, -1.7, 0.2, 1.1, 3.0, 4.4])
    for s in range(k - 1, lam.size - 1):
        got = tr.lagrange_weights(lam, [s], k)[0]
        np.testing.assert_allclose(got, _closed_forms(lam, s, k), rtol=1e-11)


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_weights_integrate_polynomials_exactly(k):
    """Lagrange weights integrate e^lambda * q(lambda) exactly for deg q < k; small steps too."""
    rng = np.random.default_rng(k)
    for scale in (1.0, 1e-3):
        lam = np.cumsum(np.r_[-2.0, scale * rng.uniform(0.5, 1.5, 6)])
        s = lam.size - 2
        nodes = lam[s - k + 1 : s + 1]
        weights = tr.lagrange_weights(lam, [s], k)[0]
        a, b = lam[s], lam[s + 1]
        for deg in range(k):
            # int_a^b e^x x^deg dx by the antiderivative sum (-1)^i deg!/(deg-i)! x^(deg-i) e^x
            def anti(x, deg=deg):
                return np.exp(x) * sum(
                    (-1) ** i * math.factorial(deg) / math.factorial(deg - i) * x ** (deg - i)
                    for i in range(deg + 1)
                )

            exact = anti(b) - anti(a)
            np.testing.assert_allclose(weights @ nodes**deg, exact, rtol=1e-8, atol=1e-14)


@pytest.mark.parametrize("name", [*SCHEDULES, "shifted"])
@pytest.mark.parametrize(
    ("solver", "order", "nfe", "trunc", "p"),
    [("unipc", 2, 10, 0, 1.0), ("dpm++", 3, 6, 3, 2.0), ("ipndm", 4, 12, 2, 1.0),
     ("euler", 1, 5, 0, 1.5)],
)
def test_gradient_matches_finite_differences(name, solver, order, nfe, trunc, p):
    schedule = SCHEDULES.get(name) or ShiftedVP()
    obj = tr._Objective(schedule, tr.solver_orders(nfe, solver, order), p, trunc)
    rng = np.random.default_rng(0)
    lam = np.sort(rng.uniform(schedule.lambda_min, schedule.lambda_max, nfe + 1))
    lam[0], lam[-1] = schedule.lambda_min, schedule.lambda_max
    for smooth in (0.0, 0.05):
        _, grad = obj(lam, smooth)
        fd = np.zeros(nfe + 1)
        for i in range(1, nfe):
            step = np.zeros(nfe + 1)
            step[i] = 1e-6
            fd[i] = (obj(lam + step, smooth, False)[0] - obj(lam - step, smooth, False)[0]) / 2e-6
        scale = np.max(np.abs(grad[1:-1]))
        np.testing.assert_allclose(grad[1:-1], fd[1:-1], atol=1e-6 * scale)


def test_error_model_kinds_are_detected():
    assert tr._LogAlpha(SCHEDULES["vp_linear"]).kind == "vp"
    assert tr._LogAlpha(SCHEDULES["discrete_sd"]).kind == "vp"
    assert tr._LogAlpha(SCHEDULES["edm"]).kind == "constant"
    assert tr._LogAlpha(ShiftedVP()).kind == "generic"


def test_error_model_uses_the_schedule():
    lam = np.linspace(-4.0, 5.0, 7)
    vp = tr.data_error(lam, SCHEDULES["vp_linear"], 1.0)
    np.testing.assert_allclose(vp, np.exp(-lam), rtol=1e-12)  # sigma/alpha = e^-lambda, any VP
    alpha = 1 / np.sqrt(1 + np.exp(-2 * lam))
    sigma = alpha * np.exp(-lam)
    np.testing.assert_allclose(
        tr.data_error(lam, SCHEDULES["discrete_sd"], 2.0), sigma**2 / alpha, rtol=1e-9
    )
    np.testing.assert_allclose(tr.data_error(lam, SCHEDULES["edm"], 2.0), np.exp(-2 * lam))


def test_orders_follow_the_solver():
    res = tr.optimize_detailed(SCHEDULES["vp_linear"], 9, "dpm++", 3, maxiter=5)
    assert res.orders == step_orders(9, 3, lower_order_final=True) == [1, 2, 3, 3, 3, 3, 3, 2, 1]
    assert tr.solver_orders(20, "unipc", 2) == step_orders(20, 2)
    assert tr.solver_orders(6, "ddim", 1) == [1] * 6  # alias of euler


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_constraints_hold_for_every_schedule(name):
    schedule = SCHEDULES[name]
    cases = [(1, "unipc", 2), (2, "unipc", 2), (3, "dpm++", 3), (5, "euler", 1),
             (8, "ipndm", 4), (12, "unipc", 3)]
    for i, (nfe, solver, order) in enumerate(cases):
        init = tr.INITS[i % len(tr.INITS)]
        res = tr.optimize_detailed(
            schedule, nfe, solver, order, init=init, maxiter=40, restart=False
        )
        t = res.timesteps
        assert t.dtype == torch.float64 and t.shape == (nfe + 1,)
        assert float(t[0]) == schedule.t_max and float(t[-1]) == schedule.t_min
        assert bool(torch.all(t[1:] < t[:-1])), (name, nfe, init, t)
        gaps = np.diff(res.lambdas.numpy())
        assert np.all(gaps >= 0.5 * res.extra["margin"] * (1 - 1e-9))
        np.testing.assert_allclose(schedule.lambda_(t).numpy(), res.lambdas.numpy(),
                                   atol=1e-6, rtol=1e-9)


@pytest.mark.parametrize("name", list(SCHEDULES))
@pytest.mark.parametrize(("nfe", "solver", "order"), [(6, "unipc", 2), (10, "dpm++", 2)])
def test_objective_below_every_heuristic(name, nfe, solver, order):
    schedule = SCHEDULES[name]
    res = tr.optimize_detailed(schedule, nfe, solver, order)
    ours = tr.objective(res.timesteps, schedule, solver, order)
    assert math.isclose(ours, res.objective, rel_tol=1e-6)
    for hname, ts in heuristics.all_heuristics(nfe, schedule).items():
        theirs = tr.objective(ts, schedule, solver, order)
        assert ours < theirs, (hname, ours, theirs)
    assert res.objective < res.init_objective


@pytest.mark.parametrize(("solver", "order", "p", "variant"),
                         [("ipndm", 4, 1, "paper"), ("euler", 1, 2, "paper"),
                          ("unipc", 3, 2, "stepwise")])
def test_other_solvers_orders_and_variants(solver, order, p, variant):
    schedule = SCHEDULES["vp_cosine"]
    nfe = 7
    res = tr.optimize_detailed(schedule, nfe, solver, order, p, variant=variant)
    for ts in heuristics.all_heuristics(nfe, schedule).values():
        assert res.objective < tr.objective(ts, schedule, solver, order, p, variant=variant)


def test_euler_p1_optimum_is_uniform_lambda():
    """For Euler (all steps order 1) and p = 1 on VP, the objective is sum expm1(h_i) up to a
    constant, minimized by equal lambda steps: the optimizer must find logSNR."""
    schedule = SCHEDULES["vp_linear"]
    t = tr.optimize(schedule, 6, "euler", 1, p=1, init="uniform")
    lam = schedule.lambda_(t).numpy()
    np.testing.assert_allclose(np.diff(lam), np.full(6, (lam[-1] - lam[0]) / 6), rtol=2e-3)


def test_optimize_returns_plain_timesteps():
    schedule = SCHEDULES["edm"]
    t = tr.optimize(schedule, 5)
    assert isinstance(t, torch.Tensor) and t.shape == (6,) and t.dtype == torch.float64
    d = tr.optimize_detailed(schedule, 5).to_dict()
    assert d["timesteps"] == t.tolist() and d["orders"] == [1, 2, 2, 2, 1]


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        (("not a schedule", 5), {}),
        ((SCHEDULES["vp_linear"], 0), {}),
        ((SCHEDULES["vp_linear"], 2.5), {}),
        ((SCHEDULES["vp_linear"], True), {}),
        ((SCHEDULES["vp_linear"], 5, "heun"), {}),
        ((SCHEDULES["vp_linear"], 5, "unipc", 4), {}),
        ((SCHEDULES["vp_linear"], 5, "euler", 2), {}),
        ((SCHEDULES["vp_linear"], 5, "ipndm", 5), {}),
        ((SCHEDULES["vp_linear"], 5, "unipc", 0), {}),
        ((SCHEDULES["vp_linear"], 5), {"p": -1}),
        ((SCHEDULES["vp_linear"], 5), {"p": float("nan")}),
        ((SCHEDULES["vp_linear"], 5), {"init": "random"}),
        ((SCHEDULES["vp_linear"], 5), {"variant": "other"}),
        ((SCHEDULES["vp_linear"], 5), {"trunc": -1}),
        ((SCHEDULES["vp_linear"], 5), {"min_step_fraction": 1.5}),
        ((SCHEDULES["vp_linear"], 5), {"smoothing": ()}),
    ],
)
def test_bad_input_raises_value_error(args, kwargs):
    with pytest.raises(ValueError):
        tr.optimize(*args, **kwargs)


def test_objective_rejects_bad_timesteps():
    schedule = SCHEDULES["vp_linear"]
    with pytest.raises(ValueError):
        tr.objective(torch.tensor([0.5, 0.6, 0.001], dtype=torch.float64), schedule)
    with pytest.raises(ValueError):
        tr.objective(torch.tensor([0.5]), schedule)
    with pytest.raises(ValueError):
        tr.lagrange_weights(np.linspace(-1, 1, 5), [0], 2)  # step 0 has one evaluation only


def _step_optim_objective(lam: np.ndarray, p: float, trunc: int = 3) -> float:
    """The objective of the authors' step_optim.py (VP schedules), written out independently:
    orders 1, 2, 3, ..., 3, 2, 1; steps s < trunc of order >= 2 add the L2 norm of their terms,
    later ones accumulate signed terms per node; order-1 steps add |J eps|."""
    n = lam.size - 1
    alpha = 1.0 / np.sqrt(1.0 + np.exp(-2.0 * lam))
    sigma = 1.0 / np.sqrt(1.0 + np.exp(2.0 * lam))
    err = sigma**p / alpha
    total, c = 0.0, np.zeros(n + 1)
    for s in range(n):
        k = 1 if s in (0, n - 1) else 2 if s in (1, n - 2) else 3
        weights = _closed_forms(lam, s, k)
        nodes = range(s - k + 1, s + 1)
        terms = [w * err[i] for w, i in zip(weights, nodes, strict=True)]
        if k == 1:
            total += abs(terms[0])
        elif s < trunc:
            total += math.sqrt(sum(x * x for x in terms))
        else:
            for i, x in zip(nodes, terms, strict=True):
                c[i] += x
    return total + float(np.abs(c).sum())


@pytest.mark.parametrize("nfe", [5, 10, 16])
@pytest.mark.parametrize("p", [1.0, 2.0])
def test_paper_variant_is_the_step_optim_objective(nfe, p):
    """variant="paper" = the official code at every NFE (trunc 3 also above NFE 7, and the
    1-2-3..3-2-1 orders whatever the sampler)."""
    schedule = SCHEDULES["vp_linear"]
    assert tr.default_trunc(nfe) == 3
    assert tr.paper_init(latent=False) == "logsnr" and tr.paper_init(latent=True) == "uniform"
    assert tr.paper_orders(nfe) == [min(3, s + 1, nfe - s) for s in range(nfe)]
    for name in ("logsnr", "uniform", "quadratic"):
        ts = heuristics.discretize(name, nfe, schedule)
        lam = schedule.lambda_(ts).numpy()
        expected = _step_optim_objective(lam, p)
        for solver, order in (("unipc", 2), ("dpm++", 3), ("euler", 1)):
            ours = tr.objective(ts, schedule, solver, order, p, variant="paper")
            assert ours == pytest.approx(expected, rel=1e-9), (name, solver)
    # trunc 0 (the step_optim.py comment's rule above NFE 7) is a different objective
    ts = heuristics.discretize("logsnr", nfe, schedule)
    assert tr.objective(ts, schedule, "unipc", 2, p, variant="paper", trunc=0) != pytest.approx(
        tr.objective(ts, schedule, "unipc", 2, p, variant="paper"), rel=1e-6)
    res = tr.optimize_detailed(schedule, nfe, "unipc", 2, p, variant="paper", maxiter=30)
    assert res.trunc == 3 and res.orders == tr.paper_orders(nfe)


def test_success_means_converged():
    schedule = SCHEDULES["vp_linear"]
    done = tr.optimize_detailed(schedule, 8, "unipc", 2, variant="stepwise")
    assert done.success and done.extra["converged"] and done.extra["improved"]
    assert done.objective < done.init_objective
    cut = tr.optimize_detailed(schedule, 12, "unipc", 2, variant="paper", maxiter=2,
                               restart=False)
    assert not cut.success and not cut.extra["converged"]
    assert "maximum number" in cut.message
    assert cut.to_dict()["success"] is False
    # nothing to optimize (no interior time): trivially converged
    assert tr.optimize_detailed(schedule, 1, "unipc", 2).success
