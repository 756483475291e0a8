"""Gradients of ``solve`` (gradcheck in float64), checkpointing, and the model-call count."""

from __future__ import annotations

import pytest
import torch
from analytic import make_model, small_mixture

from ld3_core.heuristics import discretize
from ld3_core.schedules import EDM, VPLinear
from ld3_core.solvers import solve

F64 = torch.float64
FAMILIES = [
    ("euler", 1, None),
    ("dpm++", 2, None),
    ("dpm++", 3, None),
    ("unipc", 3, "bh1"),
    ("unipc", 2, "bh2"),
    ("ipndm", 4, "fixed"),
    ("ipndm", 3, "variable"),
]
NFE = 5


def _cid(cfg) -> str:
    return f"{cfg[0]}{cfg[1]}" + (f"-{cfg[2]}" if cfg[2] else "")


def _setup(schedule=None, counter=None):
    schedule = schedule or VPLinear()
    model = make_model(small_mixture(2), schedule, counter=counter)
    g = torch.Generator().manual_seed(0)
    x_T = torch.randn(3, 2, generator=g, dtype=F64) * schedule.prior_std()
    ts = discretize("logsnr", NFE, schedule)
    return model, x_T, ts


@pytest.mark.parametrize("cfg", FAMILIES, ids=_cid)
@pytest.mark.parametrize("sched_cls", [VPLinear, EDM])
def test_gradcheck_timesteps(cfg, sched_cls) -> None:
    model, x_T, ts = _setup(sched_cls())
    interior = ts[1:-1].clone().requires_grad_(True)

    def f(inner: torch.Tensor) -> torch.Tensor:
        t = torch.cat([ts[:1], inner, ts[-1:]])
        return solve(model, x_T, t, cfg[0], cfg[1], variant=cfg[2])

    # relative perturbations: eps must keep the times ordered (EDM times span 0.002..80)
    assert torch.autograd.gradcheck(f, (interior,), eps=1e-7 * float(interior.detach().min()),
                                    atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("cfg", FAMILIES, ids=_cid)
def test_gradcheck_model_timesteps_and_x_T(cfg) -> None:
    model, x_T, ts = _setup()
    mts = (ts * 0.97 + 0.01).clamp(max=1.0).clone().requires_grad_(True)
    x = x_T.clone().requires_grad_(True)

    def f(m: torch.Tensor, xt: torch.Tensor) -> torch.Tensor:
        return solve(model, xt, ts, cfg[0], cfg[1], model_timesteps=m, variant=cfg[2])

    assert torch.autograd.gradcheck(f, (mts, x), eps=1e-7, atol=1e-6, rtol=1e-4)
    # the decoupled times matter (non-zero gradient) except the last, which no call uses
    out = f(mts, x).sum()
    (g_m,) = torch.autograd.grad(out, mts)
    assert float(g_m[:-1].abs().min()) > 0
    assert float(g_m[-1]) == 0.0


@pytest.mark.parametrize("cfg", FAMILIES, ids=_cid)
def test_checkpoint_same_values_and_gradients(cfg) -> None:
    model, x_T, ts = _setup()
    results = []
    for ckpt in (False, True):
        t = ts.clone().requires_grad_(True)
        m = (ts * 0.98).clone().requires_grad_(True)
        x = x_T.clone().requires_grad_(True)
        out = solve(model, x, t, cfg[0], cfg[1], model_timesteps=m, checkpoint=ckpt,
                    variant=cfg[2])
        loss = (out**2).sum()
        grads = torch.autograd.grad(loss, (t, m, x))
        results.append((out.detach(), grads))
    (o0, g0), (o1, g1) = results
    torch.testing.assert_close(o1, o0, rtol=0, atol=0)
    for a, b in zip(g1, g0, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("cfg", FAMILIES, ids=_cid)
@pytest.mark.parametrize("n", [1, 2, 3, 7, 16])
def test_exactly_n_model_calls(cfg, n) -> None:
    counter = [0]
    model, x_T, _ = _setup(counter=counter)
    ts = discretize("edm", n, model.schedule)
    solve(model, x_T, ts, cfg[0], cfg[1], variant=cfg[2])
    assert counter[0] == n
    # forward with gradients, without checkpointing: still n calls, none in backward
    counter[0] = 0
    x = x_T.clone().requires_grad_(True)
    out = solve(model, x, ts, cfg[0], cfg[1], variant=cfg[2])
    assert counter[0] == n
    out.sum().backward()
    assert counter[0] == n
    # checkpointing recomputes each call once in backward
    counter[0] = 0
    out = solve(model, x, ts, cfg[0], cfg[1], variant=cfg[2], checkpoint=True)
    assert counter[0] == n
    out.sum().backward()
    assert counter[0] == 2 * n


def test_no_grad_inputs_give_no_graph() -> None:
    model, x_T, ts = _setup()
    out = solve(model, x_T, ts, "unipc", 3)
    assert not out.requires_grad
