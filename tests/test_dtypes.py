"""Network dtype vs state dtype: the wrapper casts at the network boundary.

On a tiny diffusers UNet (pixel) and a tiny Stable Diffusion folder (prompt embeddings + CFG):
for every network dtype (fp32 / fp16 / bf16, the ``dtype`` load option) and every state dtype
(float32 / float64 ``x_T``) the solve returns x_T's dtype, the network sees its own dtype (the
time input float32 for 16-bit networks), and the result is close to the fp32-network /
float64-state reference (tolerances: fp32 network 1e-5, fp16 2e-2, bf16 1e-1 relative; measured
about 1e-7, 1e-3 and 1e-2). Regression: a float32 folder loaded without ``dtype`` and solved
with a float64 x_T used to fail with "Input type (double) and bias type (float) should be the
same".
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("diffusers")

import real_models_helpers as H  # noqa: E402

from ld3_core.heuristics import discretize  # noqa: E402
from ld3_core.models import load  # noqa: E402
from ld3_core.solvers import solve  # noqa: E402

NET_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
STATE_DTYPES = [torch.float32, torch.float64]
TOL = {"float32": 1e-5, "float16": 2e-2, "bfloat16": 1e-1}


def _load(diffusers_folders, kind: str, dtype: str | None):
    opts = {"prompts": H.PROMPTS, "guidance_scale": 3.0} if kind == "sd" else {}
    if dtype is not None:
        opts["dtype"] = dtype
    return load(str(diffusers_folders[kind]), **opts)


def _spy(model) -> list:
    """Record (x dtype, t dtype, cond dtypes) of every network call."""
    seen: list = []
    inner = model.fn

    def fn(x, t, **cond):
        seen.append((x.dtype, t.dtype, {k: v.dtype for k, v in cond.items()
                                        if isinstance(v, torch.Tensor)}))
        return inner(x, t, **cond)

    model.fn = fn
    return seen


def _run(model, state_dtype: torch.dtype):
    x_T = model.sample_prior(2, generator=torch.Generator().manual_seed(0), dtype=state_dtype)
    cond = model.sample_cond(2, torch.Generator().manual_seed(1))
    ts = discretize("logsnr", 3, model.schedule)
    with torch.no_grad():
        return solve(model, x_T, ts, "dpm++", 2, cond=cond)


@pytest.fixture(scope="module")
def references(diffusers_folders):
    return {kind: _run(_load(diffusers_folders, kind, None), torch.float64)
            for kind in ("pixel", "sd")}


@pytest.mark.parametrize("kind", ["pixel", "sd"])
@pytest.mark.parametrize("state_dtype", STATE_DTYPES, ids=str)
@pytest.mark.parametrize("net", list(NET_DTYPES))
def test_network_and_state_dtypes(diffusers_folders, references, kind, net, state_dtype) -> None:
    model = _load(diffusers_folders, kind, None if net == "float32" else net)
    assert model.network_dtype == NET_DTYPES[net]
    seen = _spy(model)
    out = _run(model, state_dtype)
    assert out.dtype == state_dtype and bool(torch.isfinite(out).all())
    for x_dt, t_dt, cond_dt in seen:
        assert x_dt == NET_DTYPES[net] and t_dt == torch.float32
        assert all(d == NET_DTYPES[net] for d in cond_dt.values())
    assert H.rel_err(out, references[kind]) < TOL[net]


def test_float64_state_keeps_float64_solver_arithmetic(diffusers_folders) -> None:
    """The fp32 network's output comes back as float64: the float64 and float32 states differ
    only by the network's fp32 round-off, and the float64 path is not rounded to fp32."""
    model = _load(diffusers_folders, "pixel", None)
    a = _run(model, torch.float64)
    b = _run(model, torch.float32)
    assert a.dtype == torch.float64 and H.rel_err(b, a) < 1e-5
    assert float((a - a.float().double()).abs().max()) > 0  # genuinely float64 values
