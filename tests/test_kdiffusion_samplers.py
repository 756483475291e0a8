"""k-diffusion samplers fed the exported sigma list agree with ld3's solver of the same order.

Conventions matched here: k-diffusion integrates ``x / alpha_t`` over ``sigma = sigma_t /
alpha_t``; its samplers use no lower-order final step (so ld3 runs with
``lower_order_final=False``); the exported list is the n+1 learned sigmas, used verbatim it
costs exactly n model calls (counted); ``sigmas_with_final_denoise`` appends k-diffusion's 0.0,
one more call that returns the data prediction at t_n. Pairs: ``sample_euler`` = ``euler``,
``sample_dpmpp_2m`` = ``dpm++`` order 2, ``sample_lms(order=k)`` = ``ipndm`` variable-step
order k (both integrate the Lagrange interpolant of eps over the actual sigma nodes).
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("diffusers")
k_sampling = pytest.importorskip("k_diffusion.sampling")
k_external = pytest.importorskip("k_diffusion.external")

import real_models_helpers as H  # noqa: E402

from ld3_core.export import kdiffusion_denoiser, parse_comfyui_sigmas, to_format  # noqa: E402
from ld3_core.models import load  # noqa: E402
from ld3_core.solvers import solve  # noqa: E402

NFE = 6
PAIRS = [
    ("sample_euler", {}, "euler", 1, None),
    ("sample_dpmpp_2m", {}, "dpm++", 2, None),
    ("sample_lms", {"order": 3}, "ipndm", 3, "variable"),
    ("sample_lms", {"order": 4}, "ipndm", 4, "variable"),
]


@pytest.fixture(scope="module")
def pixel(diffusers_folders):
    folder = diffusers_folders["pixel"]
    return folder, load(str(folder), dtype="float64"), load(str(folder))


def _start(model, t, seed=0):
    x_T = torch.randn((2, 3, 8, 8), generator=torch.Generator().manual_seed(seed),
                      dtype=torch.float64)
    return x_T, x_T / model.schedule.alpha(t[0])  # ld3's VP state, k-diffusion's x / alpha


@pytest.mark.parametrize(("sampler", "kw", "solver", "order", "variant"), PAIRS)
@pytest.mark.parametrize("decoupled", [False, True])
def test_kdiffusion_sampler_equals_ld3_solver(pixel, sampler, kw, solver, order, variant,
                                              decoupled):
    _, model, _ = pixel
    t, mt = H.learned_schedule(model.schedule, NFE)
    mt = mt if decoupled else None
    sigmas = torch.tensor(to_format("k-diffusion", t, model.schedule)["sigmas"],
                          dtype=torch.float64)
    x_T, x_kd = _start(model, t)
    inner = kdiffusion_denoiser(model, t, mt) if decoupled else kdiffusion_denoiser(model)
    calls = []

    def denoiser(x, sigma, **kw):
        calls.append(1)
        return inner(x, sigma, **kw)

    with torch.no_grad():  # the exported list verbatim: exactly NFE model calls
        got = getattr(k_sampling, sampler)(denoiser, x_kd, sigmas, disable=True, **kw)
    assert len(calls) == NFE
    with torch.no_grad():
        ours = solve(model, x_T, t, solver, order, model_timesteps=mt, variant=variant,
                     lower_order_final=False)
    assert H.rel_err(got * model.schedule.alpha(t[-1]), ours) < 1e-9  # float64
    if decoupled:  # the decoupled network times really reach the network
        with torch.no_grad():
            coupled = solve(model, x_T, t, solver, order, variant=variant,
                            lower_order_final=False)
        assert H.rel_err(coupled, ours) > 1e-4


def test_trailing_zero_is_one_extra_denoising_call(pixel):
    _, model, _ = pixel
    t, _ = H.learned_schedule(model.schedule, NFE)
    sigmas = torch.tensor(to_format("k-diffusion", t, model.schedule)
                          ["sigmas_with_final_denoise"], dtype=torch.float64)
    x_T, x_kd = _start(model, t)
    calls = []
    base = kdiffusion_denoiser(model)

    def counting(x, sigma, **kw):
        calls.append(float(sigma[0]))
        return base(x, sigma, **kw)

    with torch.no_grad():
        got = k_sampling.sample_dpmpp_2m(counting, x_kd, sigmas, disable=True)
        x_n = solve(model, x_T, t, "dpm++", 2, lower_order_final=False)
        ours = model.denoise(x_n, t[-1])
    assert len(calls) == NFE + 1
    assert H.rel_err(got, ours) < 1e-9


def test_kdiffusion_external_discrete_wrapper_on_the_raw_unet(pixel):
    """The usual k-diffusion route: DiscreteEpsDDPMDenoiser around the diffusers UNet."""
    from diffusers import DDPMScheduler, UNet2DModel

    folder, _, model = pixel
    unet = UNet2DModel.from_pretrained(folder, subfolder="unet").eval()
    table = DDPMScheduler.from_pretrained(folder, subfolder="scheduler").alphas_cumprod
    denoiser = k_external.DiscreteEpsDDPMDenoiser(
        lambda x, t: unet(x, t).sample, table, quantize=False)
    t, _ = H.learned_schedule(model.schedule, NFE)
    sigmas = torch.tensor(to_format("k-diffusion", t, model.schedule)["sigmas"],
                          dtype=torch.float32)
    x_T = torch.randn((2, 3, 8, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got = k_sampling.sample_dpmpp_2m(denoiser, x_T * (1 + sigmas[0] ** 2) ** 0.5,
                                         sigmas, disable=True)
        got = got * model.schedule.alpha(t[-1]).float()
        # k-diffusion maps sigma to the index by log-sigma interpolation; fed as ld3's
        # decoupled network times, ld3 reproduces it to float32 round-off ...
        kd_index = denoiser.sigma_to_t(sigmas).double()
        mt = model.schedule.time_of_index(kd_index)
        exact = solve(model, x_T, t, "dpm++", 2, model_timesteps=mt, lower_order_final=False)
        # ... and without it, ld3's own N t - 1 time input differs slightly between indices
        plain = solve(model, x_T, t, "dpm++", 2, lower_order_final=False)
    assert H.rel_err(got, exact) < 5e-6
    assert H.rel_err(got, plain) < 1e-3


def test_comfyui_sigma_string_runs_the_same_schedule(pixel):
    """The ManualSigmas text, parsed to a float32 SIGMAS tensor as ComfyUI does, drives the
    (vendored) k-diffusion samplers of ComfyUI to ld3's result."""
    _, _, model = pixel  # float32 model, as ComfyUI runs it
    t, _ = H.learned_schedule(model.schedule, NFE)
    out = to_format("comfyui", t, model.schedule)
    sigmas = torch.tensor(parse_comfyui_sigmas(out["sigmas"]), dtype=torch.float32)
    assert float(sigmas[-1]) > 0.0 and sigmas.numel() == NFE + 1
    x_T = torch.randn((2, 3, 8, 8), generator=torch.Generator().manual_seed(3))
    calls = []
    base = kdiffusion_denoiser(model)

    def counting(x, sigma, **kw):
        calls.append(1)
        return base(x, sigma, **kw)

    with torch.no_grad():  # pasted verbatim: exactly NFE calls, ld3's steps
        got = k_sampling.sample_euler(counting, x_T / model.schedule.alpha(t[0]).float(),
                                      sigmas, disable=True)
        ours = solve(model, x_T, t, "euler", 1)
    assert len(calls) == NFE
    assert H.rel_err(got * model.schedule.alpha(t[-1]).float(), ours) < 1e-5
    # the text ending in ComfyUI's usual 0.0: one more call, the final denoise
    final = torch.tensor(parse_comfyui_sigmas(out["sigmas_with_final_denoise"]),
                         dtype=torch.float32)
    assert float(final[-1]) == 0.0 and final.numel() == NFE + 2
    with torch.no_grad():
        got = k_sampling.sample_euler(kdiffusion_denoiser(model),
                                      x_T / model.schedule.alpha(t[0]).float(),
                                      final, disable=True)
    assert H.rel_err(got, model.denoise(ours, t[-1])) < 1e-5
