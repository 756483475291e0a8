"""The learned schedule, exported, inside real diffusers pipelines gives ld3's image.

For each model kind (pixel DDPMPipeline, latent LDMPipeline with an AutoencoderKL, text-to-
image StableDiffusionPipeline with CFG 7.5) the pipeline is run with

- diffusers' own scheduler fed the export (``DPMSolverMultistepScheduler(timesteps=)``:
  rounded integers; ``EulerDiscreteScheduler(sigmas=)``: exact sigmas), and
- :class:`LD3Scheduler` with the exact learned times, decoupled network times included,

and compared with ``ld3_core.solvers.solve`` on the same model, start noise and schedule.
Stated tolerance: relative error (max |diff| / max |ld3|) of the final state below 5e-6
(float32 round-off; measured 1e-7 .. 9e-7), and the decoded uint8-scale images within 1e-4.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("diffusers")

import real_models_helpers as H  # noqa: E402
from diffusers import (  # noqa: E402
    DDPMPipeline,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
)

from ld3_core.diffusers_scheduler import LD3Scheduler, with_fixed_schedule  # noqa: E402
from ld3_core.export import to_format  # noqa: E402
from ld3_core.models import load  # noqa: E402
from ld3_core.solvers import solve  # noqa: E402

NFE = 6
TOL = 5e-6  # measured 1e-7 .. 9e-7 on this CPU


def _noise(shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _ldm_pipeline(folder, scheduler):
    from diffusers import AutoencoderKL, LDMPipeline, UNet2DModel

    unet = UNet2DModel.from_pretrained(folder, subfolder="unet")
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae")
    return LDMPipeline(vqvae=vae, unet=unet, scheduler=scheduler)


# -- pixel: DDPMPipeline ----------------------------------------------------------------------
@pytest.mark.parametrize("order", [2, 3])
def test_pixel_dpmsolver_with_exported_integer_timesteps(diffusers_folders, order):
    model = load(str(diffusers_folders["pixel"]))
    pipe = DDPMPipeline.from_pretrained(diffusers_folders["pixel"])
    t, _ = H.learned_schedule(model.schedule, NFE)
    export = to_format("diffusers", t, model.schedule)
    cfg = export["schedulers"]["DPMSolverMultistepScheduler"]["config"]
    sched = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config, **cfg,
                                                    solver_order=order)
    pipe.scheduler = with_fixed_schedule(sched, timesteps=export["timesteps"])
    rec = H.capture_last_sample(pipe.scheduler)
    images = pipe(batch_size=2, generator=torch.Generator().manual_seed(0),
                  num_inference_steps=NFE, output_type="np").images
    # the same schedule ld3-side: the rounded integer steps, ending at t = 1/N
    index = torch.tensor(export["timesteps"] + [0], dtype=torch.float64)
    t_rounded = model.schedule.time_of_index(index)
    with torch.no_grad():
        ours = solve(model, _noise((2, 3, 8, 8)), t_rounded, "dpm++", order,
                     variant="diffusers")
    assert rec["calls"] == NFE
    assert H.rel_err(rec["x"], ours) < TOL
    ours_img = (ours / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    assert abs(images - ours_img).max() < 1e-4
    # and the rounding is what separates it from the exact learned schedule
    with torch.no_grad():
        exact = solve(model, _noise((2, 3, 8, 8)), t, "dpm++", order, variant="diffusers")
    assert H.rel_err(exact, ours) > 10 * TOL


@pytest.mark.parametrize(
    ("solver", "order", "variant"),
    [("unipc", 2, None), ("unipc", 3, "bh1"), ("dpm++", 3, None), ("ipndm", 4, "variable"),
     ("euler", 1, None)],
)
def test_pixel_ld3_scheduler_in_ddpm_pipeline_equals_solve(diffusers_folders, solver, order,
                                                            variant):
    model = load(str(diffusers_folders["pixel"]))
    pipe = DDPMPipeline.from_pretrained(diffusers_folders["pixel"])
    t, mt = H.learned_schedule(model.schedule, NFE)
    pipe.scheduler = LD3Scheduler.from_learned(
        t, mt, solver=solver, order=order, variant=variant, base_config=pipe.scheduler.config)
    rec = H.capture_last_sample(pipe.scheduler)
    pipe(batch_size=2, generator=torch.Generator().manual_seed(0), num_inference_steps=NFE,
         output_type="np")
    with torch.no_grad():
        ours = solve(model, _noise((2, 3, 8, 8)), t, solver, order, model_timesteps=mt,
                     variant=variant)
        coupled = solve(model, _noise((2, 3, 8, 8)), t, solver, order, variant=variant)
    assert H.rel_err(rec["x"], ours) < TOL
    assert H.rel_err(coupled, ours) > 10 * TOL  # the decoupled times really were used


# -- latent: LDMPipeline with an AutoencoderKL ------------------------------------------------
def test_latent_euler_with_exported_sigmas(diffusers_folders):
    model = load(str(diffusers_folders["latent"]))
    t, _ = H.learned_schedule(model.schedule, NFE)
    export = to_format("diffusers", t, model.schedule)
    base = DPMSolverMultistepScheduler.from_pretrained(diffusers_folders["latent"],
                                                       subfolder="scheduler")
    sched = EulerDiscreteScheduler.from_config(base.config, timestep_spacing="leading")
    sched = with_fixed_schedule(sched, sigmas=export["sigmas"])
    pipe = _ldm_pipeline(diffusers_folders["latent"], sched)
    rec = H.capture_last_sample(pipe.scheduler)
    images = pipe(batch_size=2, generator=torch.Generator().manual_seed(0),
                  num_inference_steps=NFE, output_type="np").images
    x_T = _noise((2, 4, 8, 8))
    # diffusers feeds the network its log-sigma interpolation of the index; ld3 feeds N t - 1.
    # Handing ld3 diffusers' network times as model_timesteps reproduces it exactly:
    diffusers_net_t = model.schedule.time_of_index(pipe.scheduler.timesteps.double())
    mt = torch.cat([diffusers_net_t, t[-1:]])
    alpha_end = model.schedule.alpha(t[-1]).float()  # Euler's state is x / alpha
    with torch.no_grad():
        ours = solve(model, x_T, t, "euler", 1, model_timesteps=mt)
        plain = solve(model, x_T, t, "euler", 1)
    assert H.rel_err(rec["x"] * alpha_end, ours) < TOL
    # without it only the network-time interpolation differs (measured 1.4e-5 here)
    assert H.rel_err(rec["x"] * alpha_end, plain) < 1e-3
    with torch.no_grad():  # the pipeline decodes its final latents like model.decode
        img = (model.decode(rec["x"]) / 2 + 0.5).clamp(0, 1)
    assert abs(images - img.permute(0, 2, 3, 1).numpy()).max() < 1e-5


def test_latent_ld3_scheduler_in_ldm_pipeline(diffusers_folders):
    model = load(str(diffusers_folders["latent"]))
    t, mt = H.learned_schedule(model.schedule, NFE)
    base = DPMSolverMultistepScheduler.from_pretrained(diffusers_folders["latent"],
                                                       subfolder="scheduler")
    sched = LD3Scheduler.from_learned(t, mt, solver="unipc", order=2, base_config=base.config)
    assert sched.config.prediction_type == "v_prediction"
    pipe = _ldm_pipeline(diffusers_folders["latent"], sched)
    rec = H.capture_last_sample(pipe.scheduler)
    images = pipe(batch_size=2, generator=torch.Generator().manual_seed(0),
                  num_inference_steps=NFE, output_type="np").images
    with torch.no_grad():
        ours = solve(model, _noise((2, 4, 8, 8)), t, "unipc", 2, model_timesteps=mt)
        img = (model.decode(ours) / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    assert H.rel_err(rec["x"], ours) < TOL
    assert abs(images - img).max() < 1e-4


# -- text-to-image: StableDiffusionPipeline with CFG ------------------------------------------
PROMPTS2 = ["a red cat", "a tree"]


@pytest.fixture(scope="module")
def sd(diffusers_folders):
    model = load(str(diffusers_folders["sd"]), prompts=H.PROMPTS, guidance_scale=7.5)
    pipe = StableDiffusionPipeline.from_pretrained(diffusers_folders["sd"], safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    cond = {"encoder_hidden_states": model.prompt_encoder(PROMPTS2)}
    return model, pipe, cond


def _sd_run(pipe, **kw):
    rec = H.capture_last_sample(pipe.scheduler)
    out = pipe(prompt=PROMPTS2, guidance_scale=7.5, latents=_noise((2, 4, 8, 8)), **kw).images
    return rec["x"], out


def test_sd_dpmsolver_timesteps_and_euler_sigmas(sd):
    model, pipe, cond = sd
    original = pipe.scheduler
    t, _ = H.learned_schedule(model.schedule, NFE)
    export = to_format("diffusers", t, model.schedule)
    # DPMSolverMultistepScheduler, timesteps= (rounded), order 2
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(
        original.config, **export["schedulers"]["DPMSolverMultistepScheduler"]["config"])
    x_dpm, _ = _sd_run(pipe, timesteps=export["timesteps"], output_type="latent")
    t_rounded = model.schedule.time_of_index(
        torch.tensor(export["timesteps"] + [0], dtype=torch.float64))
    # EulerDiscreteScheduler, sigmas= (exact)
    pipe.scheduler = EulerDiscreteScheduler.from_config(original.config)
    x_euler, _ = _sd_run(pipe, sigmas=export["sigmas"], output_type="latent")
    net_t = model.schedule.time_of_index(pipe.scheduler.timesteps.double())
    pipe.scheduler = original
    z = _noise((2, 4, 8, 8))
    alpha_end = model.schedule.alpha(t[-1]).float()
    with torch.no_grad():
        ours_dpm = solve(model, z, t_rounded, "dpm++", 2, cond=cond)
        ours_euler = solve(model, z * model.schedule.prior_std(), t, "euler", 1, cond=cond,
                           model_timesteps=torch.cat([net_t, t[-1:]]))
    assert H.rel_err(x_dpm, ours_dpm) < TOL
    assert H.rel_err(x_euler * alpha_end, ours_euler) < TOL


def test_sd_ld3_scheduler_decoupled_and_timesteps_argument(sd):
    model, pipe, cond = sd
    original = pipe.scheduler
    t, mt = H.learned_schedule(model.schedule, NFE)
    pipe.scheduler = LD3Scheduler.from_learned(t, mt, solver="unipc", order=2,
                                               base_config=original.config)
    x_dec, images = _sd_run(pipe, num_inference_steps=NFE, output_type="np")
    # the pipeline's own `timesteps=` argument takes ld3's times t (no decoupling there)
    x_plain, _ = _sd_run(pipe, timesteps=t.tolist(), output_type="latent")
    pipe.scheduler = original
    z = _noise((2, 4, 8, 8))
    with torch.no_grad():
        ours_dec = solve(model, z, t, "unipc", 2, model_timesteps=mt, cond=cond)
        ours_plain = solve(model, z, t, "unipc", 2, cond=cond)
        img = (model.decode(ours_dec) / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    assert H.rel_err(x_dec, ours_dec) < TOL
    assert H.rel_err(x_plain, ours_plain) < TOL
    assert abs(images - img).max() < 1e-4
