"""Export a learned schedule to what other samplers take: diffusers, k-diffusion, ComfyUI.

A schedule for NFE n is ``n + 1`` decreasing solver times ``t_0 = t_max > ... > t_n`` in the
model's continuous time (plus optional decoupled network times ``model_timesteps``, LD3's
``t^c``). The other tools speak in the k-diffusion / EDM noise level
``sigma = sigma_t / alpha_t = exp(-lambda_t)`` (``NoiseSchedule.kd_sigma``) or, in diffusers'
discrete schedulers, in integer train-step indices (``N t - 1`` for
:class:`~ld3_core.schedules.DiscreteVP`).

:func:`to_format` returns a JSON-serializable dict per format (see its docstring);
:func:`kdiffusion_denoiser` wraps a :class:`DiffusionModel` as a k-diffusion denoiser that
keeps ld3's time convention (and decoupled network times), so k-diffusion samplers fed the
exported sigmas reproduce ld3's solvers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ld3_core.models.wrapper import DiffusionModel
from ld3_core.schedules import DiscreteVP, FlowMatch, NoiseSchedule
from ld3_core.solvers.validation import check_model_timesteps, check_timesteps
from ld3_core.spec import EXPORT_FORMATS, SOLVERS

_DPM_CONFIG = {"algorithm_type": "dpmsolver++", "solver_type": "midpoint",
               "final_sigmas_type": "sigma_min", "lower_order_final": True}


def _as_vector(values: Any, name: str) -> Tensor:
    if isinstance(values, Tensor):
        return values.detach().to(torch.float64).cpu()
    try:
        out = torch.as_tensor(np.asarray(values, dtype=np.float64))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a 1-D sequence of numbers") from exc
    return out


def _floats(t: Tensor) -> list[float]:
    return [float(v) for v in t.tolist()]


def _decimal(value: float) -> str:
    """Plain decimal text (no exponent): ComfyUI's ManualSigmas parser reads no 'e' notation."""
    if value == 0.0:
        return "0.0"
    return np.format_float_positional(value, unique=True, trim="0")


def _native(t: Tensor, mt: Tensor | None, schedule: NoiseSchedule) -> dict[str, Any]:
    return {
        "format": "native",
        "nfe": t.numel() - 1,
        "timesteps": _floats(t),
        "model_timesteps": None if mt is None else _floats(mt),
        "sigmas": _floats(schedule.kd_sigma(t)),
    }


def _integer_timesteps(t: Tensor, schedule: DiscreteVP) -> tuple[list[int] | None, dict]:
    """diffusers' integer timesteps for t_0..t_{n-1} (rounded N t - 1) and a report."""
    exact = schedule.network_time(t)
    rounded = torch.round(exact[:-1]).clamp(0, schedule.num_steps - 1).to(torch.int64)
    ints = [int(v) for v in rounded.tolist()]
    err = float((exact[:-1] - rounded.double()).abs().max())
    final_ok = abs(float(exact[-1])) < 1e-6  # DPMSolver ends at index 0 (t = 1/N)
    report = {"timesteps_rounded": True, "timesteps_max_rounding": err,
              "final_time_matches_sigma_min": final_ok}
    if any(b >= a for a, b in zip(ints, ints[1:], strict=False)) or ints[-1] <= 0:
        report["timesteps_unusable"] = (
            "two learned times round to the same integer step (or to step 0); "
            "use LD3Scheduler or sigmas="
        )
        return None, report
    return ints, report


def _diffusers(t: Tensor, mt: Tensor | None, schedule: NoiseSchedule) -> dict[str, Any]:
    sigmas = _floats(schedule.kd_sigma(t))
    out: dict[str, Any] = {
        "format": "diffusers",
        "nfe": t.numel() - 1,
        "sigmas": sigmas,
        "timesteps": None,
        "ld3_scheduler": {"timesteps": _floats(t),
                          "model_timesteps": None if mt is None else _floats(mt)},
    }
    notes = [
        "LD3Scheduler(set_timesteps(timesteps=ld3_scheduler.timesteps, model_timesteps=...)) "
        "takes the exact solver times t and the decoupled network times; every ld3 solver.",
        "EulerDiscreteScheduler.set_timesteps(sigmas=sigmas): exact sigmas (the network time "
        "is diffusers' log-sigma interpolation of the index, equal to ld3's N t - 1 at "
        "integer steps); keep timestep_spacing='leading' so init_noise_sigma = "
        "sqrt(sigma_max^2 + 1).",
        "UniPCMultistepScheduler takes no custom timesteps or (non-flow) sigmas; DDIM, DEIS, "
        "LMS and PNDM take none either: use LD3Scheduler.",
    ]
    schedulers: dict[str, Any] = {
        "LD3Scheduler": {"argument": "timesteps", "exact": True, "decoupled_times": True,
                         "solvers": list(SOLVERS)},
        "EulerDiscreteScheduler": {"argument": "sigmas", "exact": True, "solvers": ["euler"],
                                   "config": {"timestep_spacing": "leading"}},
        "UniPCMultistepScheduler": {"argument": None},
    }
    if isinstance(schedule, DiscreteVP):
        ints, report = _integer_timesteps(t, schedule)
        out["timesteps"] = ints
        out.update(report)
        schedulers["DPMSolverMultistepScheduler"] = {
            "argument": "timesteps", "exact": False, "solvers": ["dpm++", "euler"],
            "config": dict(_DPM_CONFIG),
        }
        notes.append(
            "DPMSolverMultistepScheduler.set_timesteps(timesteps=timesteps) takes integers "
            "only: the learned times are ROUNDED to the nearest train step (max error "
            f"{report['timesteps_max_rounding']:.3g} steps); with final_sigmas_type="
            "'sigma_min' it ends at t = 1/N. Use LD3Scheduler for the exact times. Its "
            "order-3 update is ld3's dpm++ variant='diffusers' (ld3's default 'taylor' "
            "differs at order 3 only)."
        )
        if not report["final_time_matches_sigma_min"]:
            notes.append("the schedule does not end at t = 1/N, but DPMSolverMultistepScheduler"
                         " always ends there (final_sigmas_type='sigma_min').")
    else:
        # integer train steps exist only for a model trained on N discrete steps
        out["timesteps_unusable"] = (
            f"{type(schedule).__name__} is a continuous-time schedule: there are no integer "
            "train steps for DPMSolverMultistepScheduler(timesteps=); use LD3Scheduler "
            "(ld3_scheduler.timesteps) or sigmas="
        )
    if isinstance(schedule, FlowMatch):
        _flow_diffusers(t, schedule, out, schedulers, notes)
    if mt is not None:
        notes.append("model_timesteps (decoupled network times) are only kept by LD3Scheduler.")
    out["schedulers"] = schedulers
    out["notes"] = notes
    return out


def _flow_diffusers(t: Tensor, schedule: FlowMatch, out: dict[str, Any],
                    schedulers: dict[str, Any], notes: list[str]) -> None:
    """The flow-matching entries of the diffusers export (SD3 / FLUX pipelines)."""
    out["flow_sigmas"] = _floats(t[:-1])
    out["pipeline_sigmas"] = _floats(schedule.unshift_time(t[:-1]))
    schedulers["FlowMatchEulerDiscreteScheduler"] = {
        "argument": "sigmas", "values": "pipeline_sigmas", "exact": False,
        "solvers": ["euler"]}
    schedulers["EulerDiscreteScheduler"] = {"argument": None}
    notes[1] = ("flow models: pipe(..., sigmas=pipeline_sigmas) (StableDiffusion3Pipeline, "
                "FluxPipeline) or FlowMatchEulerDiscreteScheduler.set_timesteps(sigmas="
                "pipeline_sigmas[, mu=...]): those are the n flow sigmas t_0..t_{n-1} "
                "(flow_sigmas) with the scheduler's own shift undone, because the scheduler "
                "shifts what it is given (static shift, or exp(mu) with dynamic shifting at "
                "the same image size). It appends sigma 0, so its last step goes to t = 0 "
                "instead of t_n = t_min: the same n model calls, the last one's data "
                "prediction is the output. LD3Scheduler follows t_n exactly.")


def _kdiffusion(t: Tensor, mt: Tensor | None, schedule: NoiseSchedule) -> dict[str, Any]:
    sig = _floats(schedule.kd_sigma(t))
    return {
        "format": "k-diffusion",
        "nfe": t.numel() - 1,
        "sigmas": sig,
        "sigmas_with_final_denoise": sig + [0.0],
        "decoupled_times_dropped": mt is not None,
        "note": (
            "sigmas are the n+1 learned noise levels and end at sigma_min (no trailing 0.0): "
            "sample_*(model, x, sigmas) makes exactly n model calls and matches ld3's solver "
            "step for step (k-diffusion's samplers use no lower-order final step). "
            "sigmas_with_final_denoise appends k-diffusion's 0.0: one more model call that "
            "returns the data prediction at sigma_min. Start from x = randn * "
            "sqrt(1 + sigmas[0]**2) for a VP model (ld3's prior)."
        ),
    }


def _comfyui(t: Tensor, mt: Tensor | None, schedule: NoiseSchedule) -> dict[str, Any]:
    values = _floats(schedule.kd_sigma(t))
    return {
        "format": "comfyui",
        "nfe": t.numel() - 1,
        "sigmas": ", ".join(_decimal(v) for v in values),
        "sigmas_list": values,
        "sigmas_with_final_denoise": ", ".join(_decimal(v) for v in values + [0.0]),
        "node": "ManualSigmas",
        "decoupled_times_dropped": mt is not None,
        "note": (
            "Paste `sigmas` into a ManualSigmas node (comfy_extras/nodes_custom_sampler.py; "
            "plain decimals, no exponent) and feed its SIGMAS output to SamplerCustom / "
            "SamplerCustomAdvanced: exactly n model calls, ending at the learned sigma_min. "
            "Values are k-diffusion sigmas (sigma_t/alpha_t). `sigmas_with_final_denoise` "
            "ends in ComfyUI's usual 0.0 (one more model call, the final denoise)."
        ),
    }


# What a k-diffusion / ComfyUI sampler fed these sigmas reproduces (measured by
# bench/lower_order_final.py; tests/test_kdiffusion_samplers.py for the equalities).
SOLVER_MATCH = {
    "equals": "ld3 solvers run with lower_order_final=False: sample_euler = euler, "
              "sample_dpmpp_2m = dpm++ order 2, sample_lms(order=k) = ipndm "
              "variant='variable' order k",
    "differs_from_ld3_default": "ld3 learns and scores schedules with lower_order_final=True: "
                                "below NFE 15 its last steps use a lower order (dpm++ order 2: "
                                "the last step is first order; ipndm order k: the last k-1 "
                                "steps). k-diffusion keeps the full order there, so its samples "
                                "differ from the scored ones (0.07-25 % relative difference of the "
                                "final samples on builtin:gmm-digits, NFE 4-14, largest at low "
                                "NFE; sometimes better, sometimes worse). Euler is unaffected; "
                                "so is NFE >= 15.",
}

_EXPORTERS = {"native": _native, "diffusers": _diffusers, "k-diffusion": _kdiffusion,
              "comfyui": _comfyui}


def to_format(
    fmt: str,
    timesteps: Any,
    schedule: NoiseSchedule,
    model_timesteps: Any = None,
) -> dict[str, Any]:
    """Convert a schedule to the input of another tool; returns a JSON-serializable dict.

    Args:
        fmt: one of :data:`EXPORT_FORMATS`.
        timesteps: (n+1,) strictly decreasing solver times t in [t_min, t_max] of ``schedule``
            (tensor, array or list).
        schedule: the model's :class:`NoiseSchedule`.
        model_timesteps: optional (n+1,) decoupled network times (t units).

    Returns (every dict has ``format`` and ``nfe`` = n):
        - ``native``: ``timesteps``, ``model_timesteps`` (or None), ``sigmas`` (kd sigma
          ``sigma_t/alpha_t`` of each t, n+1 values).
        - ``diffusers``: ``sigmas`` (n+1 kd sigmas for ``EulerDiscreteScheduler
          .set_timesteps(sigmas=)``), ``timesteps`` (DiscreteVP only: n integer train steps,
          ``round(N t_i - 1)`` for i < n, for ``DPMSolverMultistepScheduler
          .set_timesteps(timesteps=)``; ROUNDED; None when rounding collapses two steps or
          the schedule is continuous, with the reason in ``timesteps_unusable``),
          ``ld3_scheduler`` (exact t and model times for :class:`LD3Scheduler`),
          ``schedulers`` (which class takes which argument, with the config to use), ``notes``.
        - ``k-diffusion``: ``sigmas`` = the n+1 kd sigmas (no trailing 0: a sampler fed them
          makes exactly n model calls), ``sigmas_with_final_denoise`` (+ ``0.0``, n+1 calls).
        - ``comfyui``: ``sigmas`` as the comma-separated text a ``ManualSigmas`` node takes
          (plain decimals, n+1 values, n model calls), ``sigmas_list``,
          ``sigmas_with_final_denoise`` (text ending in 0.0), ``node``.
        - ``k-diffusion`` and ``comfyui`` also carry ``solver_match`` (:data:`SOLVER_MATCH`):
          which ld3 solver setting their samplers equal (``lower_order_final=False``) and how
          they differ from ld3's default ``lower_order_final=True``.

    Raises:
        ValueError: unknown format, non-decreasing / out-of-range / non-finite timesteps, or
            model_timesteps of another length.
    """
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; known: {', '.join(EXPORT_FORMATS)}")
    if not isinstance(schedule, NoiseSchedule):
        raise ValueError(f"schedule must be a NoiseSchedule, got {type(schedule).__name__}")
    t = check_timesteps(_as_vector(timesteps, "timesteps"), schedule).double()
    mt = check_model_timesteps(
        None if model_timesteps is None else _as_vector(model_timesteps, "model_timesteps"), t)
    if mt is not None:
        mt = mt.double()
    result = _EXPORTERS[fmt](t, mt, schedule)
    if fmt in ("k-diffusion", "comfyui"):
        result["solver_match"] = dict(SOLVER_MATCH)
    _check_json_floats(result)
    return result


def _check_json_floats(obj: Any) -> None:
    if isinstance(obj, float) and not math.isfinite(obj):
        raise ValueError("schedule produced a non-finite value (check the time range)")
    if isinstance(obj, dict):
        for v in obj.values():
            _check_json_floats(v)
    elif isinstance(obj, list):
        for v in obj:
            _check_json_floats(v)


def parse_comfyui_sigmas(text: str) -> list[float]:
    """Read a ComfyUI sigma string (comma/space separated plain decimals) back to floats."""
    parts = [p for p in text.replace(",", " ").split() if p]
    try:
        return [float(p) for p in parts]
    except ValueError as exc:
        raise ValueError(f"not a list of numbers: {text!r}") from exc


# -- k-diffusion interop ------------------------------------------------------------------------
def kdiffusion_denoiser(
    model: DiffusionModel,
    timesteps: Any = None,
    model_timesteps: Any = None,
) -> Callable[..., Tensor]:
    """Wrap ``model`` as a k-diffusion denoiser ``D(x, sigma, **cond) -> x0``.

    k-diffusion samplers work on ``x / alpha_t`` at noise level ``sigma = sigma_t / alpha_t``;
    the wrapper maps sigma back to ld3's time ``t = schedule.t_of_kd_sigma(sigma)`` (so the
    network sees ld3's own time input, e.g. ``N t - 1``) and calls ``model.denoise`` on
    ``x * alpha_t``. With ``timesteps`` and ``model_timesteps`` given, a sigma equal (rel.
    1e-6) to ``kd_sigma(timesteps[i])`` feeds the network ``model_timesteps[i]`` instead
    (LD3's decoupled times). Extra keyword arguments (``extra_args``) are the condition.
    """
    schedule = model.schedule
    table: tuple[Tensor, Tensor] | None = None
    if model_timesteps is not None:
        if timesteps is None:
            raise ValueError("model_timesteps need the matching timesteps")
        t = check_timesteps(_as_vector(timesteps, "timesteps"), schedule).double()
        mt = check_model_timesteps(_as_vector(model_timesteps, "model_timesteps"), t).double()
        table = (torch.log(schedule.kd_sigma(t)), mt)

    def denoise(x: Tensor, sigma: Tensor, **cond: Any) -> Tensor:
        sig = torch.as_tensor(sigma, dtype=torch.float64, device="cpu").reshape(-1)
        sig = sig.expand(x.shape[0]) if sig.numel() == 1 else sig
        t = schedule.t_of_kd_sigma(sig)
        model_t = t
        if table is not None:
            diff = (torch.log(sig)[:, None] - table[0][None, :]).abs()
            best, idx = diff.min(dim=1)
            model_t = torch.where(best < 1e-6, table[1][idx], t)
        alpha = schedule.alpha(t).to(dtype=x.dtype, device=x.device)
        x_vp = x * alpha.reshape(-1, *([1] * (x.ndim - 1)))
        return model.denoise(x_vp, t.to(x.device), model_t=model_t.to(x.device),
                             cond=cond or None)

    return denoise
