"""ld3_core.export.to_format: native, diffusers, k-diffusion and ComfyUI schedule formats."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch

from ld3_core.export import EXPORT_FORMATS, parse_comfyui_sigmas, to_format
from ld3_core.heuristics import discretize
from ld3_core.schedules import EDM, DiscreteVP, VPLinear

SD = DiscreteVP.from_betas(0.00085, 0.012, 1000, "scaled_linear")


def _learned(nfe: int = 6) -> torch.Tensor:
    """A non-integer-aligned schedule like LD3 produces (logSNR steps, interior nudged)."""
    t = discretize("logsnr", nfe, SD)
    t[1:-1] = t[1:-1] * (1.0 + 0.013 * torch.arange(1, nfe, dtype=torch.float64) / nfe)
    return t


@pytest.mark.parametrize("fmt", EXPORT_FORMATS)
def test_every_format_is_json_and_names_itself(fmt):
    t = _learned()
    out = to_format(fmt, t, SD, model_timesteps=t + 1e-3)
    assert out["format"] == fmt and out["nfe"] == 6
    assert json.loads(json.dumps(out)) == out


def test_native_sigmas_are_kd_sigmas_and_round_trip():
    t = _learned()
    mt = t.clone()
    mt[:-1] += 2e-3
    out = to_format("native", t.tolist(), SD, model_timesteps=mt)
    sig = torch.tensor(out["sigmas"], dtype=torch.float64)
    torch.testing.assert_close(sig, SD.sigma(t) / SD.alpha(t), rtol=1e-12, atol=0)
    torch.testing.assert_close(SD.t_of_kd_sigma(sig), t, rtol=1e-10, atol=1e-12)
    assert out["timesteps"] == t.tolist() and out["model_timesteps"] == mt.tolist()
    assert to_format("native", t, SD)["model_timesteps"] is None


def test_diffusers_integer_timesteps_are_rounded_indices():
    t = _learned()
    out = to_format("diffusers", t, SD)
    idx = (1000 * t - 1)[:-1]
    assert out["timesteps"] == [int(round(float(v))) for v in idx]
    assert out["timesteps_rounded"] is True
    assert out["timesteps_max_rounding"] == pytest.approx(
        float((idx - idx.round()).abs().max()), abs=1e-9)
    assert 0 < out["timesteps_max_rounding"] <= 0.5
    assert out["final_time_matches_sigma_min"] is True
    assert len(out["sigmas"]) == 7 and out["ld3_scheduler"]["timesteps"] == t.tolist()
    assert out["schedulers"]["DPMSolverMultistepScheduler"]["argument"] == "timesteps"
    assert out["schedulers"]["EulerDiscreteScheduler"]["argument"] == "sigmas"
    assert out["schedulers"]["UniPCMultistepScheduler"]["argument"] is None
    assert any("ROUNDED" in note for note in out["notes"])


def test_diffusers_timesteps_that_collapse_are_refused():
    t = torch.tensor([1.0, 0.5, 0.4999, 0.001], dtype=torch.float64)  # 499 and 499 (rounded)
    out = to_format("diffusers", t, SD)
    assert out["timesteps"] is None and "timesteps_unusable" in out


def test_continuous_schedules_export_sigmas_only():
    for sched in (EDM(), VPLinear()):
        t = discretize("edm", 5, sched)
        out = to_format("diffusers", t, sched)
        assert out["timesteps"] is None and "DPMSolverMultistepScheduler" not in out["schedulers"]
        assert "continuous-time" in out["timesteps_unusable"]
        assert type(sched).__name__ in out["timesteps_unusable"]
        torch.testing.assert_close(torch.tensor(out["sigmas"], dtype=torch.float64),
                                   sched.kd_sigma(t))
    edm = to_format("k-diffusion", discretize("edm", 5, EDM()), EDM())
    assert edm["sigmas"][0] == pytest.approx(80.0) and edm["sigmas"][-1] == pytest.approx(0.002)


def test_kdiffusion_list_is_the_n_plus_1_learned_sigmas():
    """Pasted verbatim, the list costs exactly n model calls (no trailing 0.0)."""
    t = _learned()
    out = to_format("k-diffusion", t, SD, model_timesteps=t)
    assert len(out["sigmas"]) == out["nfe"] + 1 == t.numel() and out["sigmas"][-1] > 0.0
    assert out["sigmas"] == to_format("native", t, SD)["sigmas"]
    assert out["sigmas_with_final_denoise"] == out["sigmas"] + [0.0]
    assert out["decoupled_times_dropped"] is True
    assert all(a > b for a, b in zip(out["sigmas"], out["sigmas"][1:], strict=False))


def test_comfyui_string_is_plain_decimals_that_parse_back():
    t = _learned()
    out = to_format("comfyui", t, SD)
    text = out["sigmas"]
    assert "e" not in text.lower() and out["node"] == "ManualSigmas"
    assert parse_comfyui_sigmas(text)[-1] > 0.0  # n+1 values: n model calls
    assert parse_comfyui_sigmas(out["sigmas_with_final_denoise"]) == out["sigmas_list"] + [0.0]
    # ComfyUI's ManualSigmas node extracts signed plain decimals with a regex (no exponent)
    numbers = [float(m) for m in re.findall(r"[-+]?\d*\.?\d+", text)]
    back = parse_comfyui_sigmas(text)
    assert numbers == back
    assert len(back) == t.numel()
    for got, want in zip(back, out["sigmas_list"], strict=True):
        assert got == want or math.isclose(got, want, rel_tol=1e-15)
    # tiny sigmas are written without exponent too
    tiny = to_format("comfyui", discretize("logsnr", 3, EDM(sigma_min=1e-5)), EDM(sigma_min=1e-5))
    assert "e" not in tiny["sigmas"]
    assert parse_comfyui_sigmas(tiny["sigmas"])[-1] == pytest.approx(1e-5, rel=1e-12)


@pytest.mark.parametrize(
    ("fmt", "timesteps", "model_timesteps", "match"),
    [
        ("onnx", [1.0, 0.5, 0.001], None, "unknown export format"),
        ("native", [0.5, 1.0, 0.001], None, "decreasing"),
        ("native", [1.5, 0.5, 0.001], None, r"\[t_min, t_max\]"),
        ("native", [1.0, float("nan"), 0.001], None, "NaN"),
        ("native", [1.0], None, "n\\+1"),
        ("diffusers", [1.0, 0.5, 0.001], [1.0, 0.5], "shape"),
        ("comfyui", "abc", None, "sequence of numbers"),
    ],
)
def test_bad_input_raises_value_error(fmt, timesteps, model_timesteps, match):
    with pytest.raises(ValueError, match=match):
        to_format(fmt, timesteps, SD, model_timesteps=model_timesteps)


def test_schedule_must_be_a_noise_schedule():
    with pytest.raises(ValueError, match="NoiseSchedule"):
        to_format("native", [1.0, 0.5], "discrete_vp")


def test_kdiffusion_and_comfyui_exports_say_which_solver_setting_they_match():
    """k-diffusion samplers keep the full order on the last steps: they equal ld3 with
    lower_order_final=False (tests/test_kdiffusion_samplers.py), which differs from the
    default the schedules are scored with. The export says so, and the difference is real."""
    from ld3_core import models
    from ld3_core.solvers import solve

    model = models.load("builtin:gmm-digits", dtype="float64")
    ts = discretize("logsnr", 6, model.schedule)
    for fmt in ("k-diffusion", "comfyui"):
        match = to_format(fmt, ts, model.schedule)["solver_match"]
        assert "lower_order_final=False" in match["equals"]
        assert "lower_order_final=True" in match["differs_from_ld3_default"]
    assert "solver_match" not in to_format("native", ts, model.schedule)
    x_T = model.sample_prior(4, torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        for solver, order, differs in (("dpm++", 2, True), ("euler", 1, False)):
            a = solve(model, x_T, ts, solver, order)
            b = solve(model, x_T, ts, solver, order, lower_order_final=False)
            rel = float((a - b).norm() / a.norm())
            assert (rel > 1e-3) if differs else (rel < 1e-12), (solver, rel)
