"""Bad input to ``solve`` gets a clear ValueError; dtypes and batch shapes are preserved."""

from __future__ import annotations

import math

import pytest
import torch
from analytic import GaussianMixture, make_model, small_mixture

from ld3_core.heuristics import discretize
from ld3_core.schedules import VPLinear
from ld3_core.solvers import SOLVERS, max_order, solve, step_orders

F64 = torch.float64
SCHED = VPLinear()
MODEL = make_model(small_mixture(2), SCHED)
X_T = torch.randn(4, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
TS = discretize("logsnr", 6, SCHED)


def _bad_timesteps() -> dict[str, torch.Tensor]:
    ts = TS.clone()
    nan = ts.clone()
    nan[2] = float("nan")
    inf = ts.clone()
    inf[0] = float("inf")
    flat = ts.clone()
    flat[3] = flat[2]
    return {
        "increasing": ts.flip(0),
        "repeated": flat,
        "not_sorted": ts[[0, 2, 1, 3, 4, 5, 6]],
        "above_t_max": torch.cat([torch.tensor([1.5], dtype=F64), ts[1:]]),
        "below_t_min": torch.cat([ts[:-1], torch.tensor([1e-5], dtype=F64)]),
        "negative": torch.cat([ts[:-1], torch.tensor([-0.1], dtype=F64)]),
        "nan": nan,
        "inf": inf,
        "2d": ts[None],
        "single": ts[:1],
        "empty": ts[:0],
    }


@pytest.mark.parametrize("case", list(_bad_timesteps()))
def test_bad_timesteps_raise(case: str) -> None:
    with pytest.raises(ValueError):
        solve(MODEL, X_T, _bad_timesteps()[case], "dpm++", 2)


def test_subrange_inside_schedule_is_allowed() -> None:
    ts = torch.tensor([0.8, 0.5, 0.2, 0.05], dtype=F64)
    out = solve(MODEL, X_T, ts, "unipc", 2)
    assert out.shape == X_T.shape and torch.isfinite(out).all()


@pytest.mark.parametrize(
    "mts",
    [TS[:-1], torch.cat([TS, TS[-1:]]), TS[None], torch.full_like(TS, float("nan"))],
    ids=["short", "long", "2d", "nan"],
)
def test_bad_model_timesteps_raise(mts: torch.Tensor) -> None:
    with pytest.raises(ValueError):
        solve(MODEL, X_T, TS, "dpm++", 2, model_timesteps=mts)


@pytest.mark.parametrize(
    "x_T",
    [
        torch.tensor(1.0, dtype=F64),  # not batched (0-d)
        torch.zeros(0, 2, dtype=F64),  # empty batch
        torch.full((4, 2), float("nan"), dtype=F64),
        torch.full((4, 2), float("inf"), dtype=F64),
        torch.zeros(4, 2, dtype=torch.int64),
    ],
    ids=["scalar", "empty", "nan", "inf", "int"],
)
def test_bad_x_T_raises(x_T: torch.Tensor) -> None:
    with pytest.raises(ValueError):
        solve(MODEL, x_T, TS, "euler", 1)


def test_x_T_not_a_tensor_raises() -> None:
    with pytest.raises(ValueError):
        solve(MODEL, [[0.0, 0.0]], TS, "euler", 1)


def test_model_not_a_diffusion_model_raises() -> None:
    with pytest.raises(ValueError):
        solve(lambda x, t: x, X_T, TS, "euler", 1)


@pytest.mark.parametrize("solver", ["heun", "", "DPM++3M", "unipc2"])
def test_unknown_solver_raises(solver: str) -> None:
    with pytest.raises(ValueError, match="solver"):
        solve(MODEL, X_T, TS, solver, 1)


@pytest.mark.parametrize(
    "solver,order",
    [("euler", 2), ("dpm++", 4), ("unipc", 4), ("ipndm", 5), ("dpm++", 0), ("euler", -1),
     ("unipc", 1.5), ("dpm++", True)],
)
def test_unsupported_order_raises(solver: str, order) -> None:
    with pytest.raises(ValueError, match="order"):
        solve(MODEL, X_T, TS, solver, order)


@pytest.mark.parametrize("solver,variant", [("unipc", "bh3"), ("ipndm", "adaptive"),
                                            ("unipc", "fixed"), ("ipndm", "bh2")])
def test_unknown_variant_raises(solver: str, variant: str) -> None:
    with pytest.raises(ValueError, match="variant"):
        solve(MODEL, X_T, TS, solver, 2, variant=variant)


def test_solver_registry() -> None:
    assert tuple(SOLVERS) == ("euler", "dpm++", "unipc", "ipndm")
    assert [max_order(s) for s in SOLVERS] == [1, 3, 3, 4]
    with pytest.raises(ValueError):
        max_order("rk45")


@pytest.mark.parametrize("nfe,order,lof,expected", [
    (5, 3, True, [1, 2, 3, 2, 1]),
    (5, 3, False, [1, 2, 3, 3, 3]),
    (3, 4, True, [1, 2, 1]),
    (15, 2, True, [1] + [2] * 14),
    (14, 2, True, [1] + [2] * 12 + [1]),
    (1, 3, True, [1]),
])
def test_step_orders_convention(nfe: int, order: int, lof: bool, expected: list[int]) -> None:
    assert step_orders(nfe, order, lof) == expected


ALL = [("euler", 1, None), ("dpm++", 3, None), ("unipc", 3, "bh1"), ("unipc", 2, "bh2"),
       ("ipndm", 4, "fixed"), ("ipndm", 4, "variable")]


@pytest.mark.parametrize("cfg", ALL, ids=lambda c: f"{c[0]}{c[1]}{c[2] or ''}")
def test_float32_and_float64(cfg) -> None:
    out64 = solve(MODEL, X_T, TS, cfg[0], cfg[1], variant=cfg[2])
    assert out64.dtype == F64
    x32 = X_T.float()
    out32 = solve(MODEL, x32, TS, cfg[0], cfg[1], variant=cfg[2])
    assert out32.dtype == torch.float32 and out32.shape == X_T.shape
    torch.testing.assert_close(out32.double(), out64, rtol=1e-4, atol=1e-5)
    # float32 time vectors work as well (validated with float32 round-off slack)
    out = solve(MODEL, x32, TS.float(), cfg[0], cfg[1], variant=cfg[2])
    torch.testing.assert_close(out.double(), out64, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shape", [(5,), (3, 4), (2, 1, 3, 3), (2, 3, 2, 2, 2)])
@pytest.mark.parametrize("cfg", ALL, ids=lambda c: f"{c[0]}{c[1]}{c[2] or ''}")
def test_any_batch_shape(shape, cfg) -> None:
    """A model on (B, ...) samples: results equal the flattened (B, D) run."""
    d = math.prod(shape[1:]) if len(shape) > 1 else 1
    i = torch.arange(d, dtype=F64)
    gmm = GaussianMixture(torch.tensor([0.6, 0.4]), torch.stack([0.5 * torch.cos(i), -0.4 + 0 * i]),
                          torch.tensor([0.2, 0.3]))
    model = make_model(gmm, SCHED, sample_shape=shape[1:])
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1), dtype=F64)
    out = solve(model, x, TS, cfg[0], cfg[1], variant=cfg[2])
    assert out.shape == x.shape
    flat = solve(model, x.reshape(shape[0], -1), TS, cfg[0], cfg[1], variant=cfg[2])
    torch.testing.assert_close(out.reshape(shape[0], -1), flat, rtol=1e-13, atol=1e-14)
    # samples are independent: solving one alone gives the same result
    one = solve(model, x[:1], TS, cfg[0], cfg[1], variant=cfg[2])
    torch.testing.assert_close(one, out[:1], rtol=1e-12, atol=1e-13)


def test_conditioning_and_guidance_pass_through() -> None:
    """cond reaches the network (CFG model); samples stay independent; checkpoint is exact."""
    from ld3_core.models import load

    model = load("builtin:gmm-digits-cond", guidance_scale=2.0, dtype="float64")
    x = model.sample_prior(3, generator=torch.Generator().manual_seed(0), dtype=F64)
    ts = discretize("logsnr", 6, model.schedule)
    labels = torch.tensor([0, 1, 7])
    out = solve(model, x, ts, "unipc", 3, cond={"class_labels": labels})
    ckpt = solve(model, x, ts, "unipc", 3, cond={"class_labels": labels}, checkpoint=True)
    torch.testing.assert_close(out, ckpt, rtol=0, atol=0)
    alone = solve(model, x[2:], ts, "unipc", 3, cond={"class_labels": labels[2:]})
    torch.testing.assert_close(alone, out[2:], rtol=1e-12, atol=1e-12)
    other = solve(model, x, ts, "unipc", 3, cond={"class_labels": torch.tensor([5, 5, 5])})
    assert float((other - out).abs().max()) > 1e-3


def test_unipc_stepper_rejects_orders_without_enough_history() -> None:
    from ld3_core.solvers.unipc import UniPCStepper

    ts = discretize("logsnr", 4, VPLinear())
    with pytest.raises(ValueError, match="orders"):
        UniPCStepper(VPLinear(), ts, [2, 2, 2, 1])  # step 0 has one model output only
    with pytest.raises(ValueError, match="orders"):
        UniPCStepper(VPLinear(), ts, [1, 2, 4, 1])
