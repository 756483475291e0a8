"""SD3, FLUX, SDXL and DiT folders: loading, and the round trip into each family's pipeline.

Tiny random-weight pipelines (tests/family_helpers.py). For every family:

- the loader's schedule, prediction, conditions and guidance;
- ``LD3Scheduler`` as ``pipe.scheduler`` (decoupled times included) reproduces
  ``ld3_core.solvers.solve`` on the same x_T and prompt / class: the pipeline's last latents
  equal ours to float32 round-off (tolerance 1e-4 relative);
- the exported schedule in the pipeline's own scheduler (``sigmas=``): SD3 / FLUX with
  ``FlowMatchEulerDiscreteScheduler`` (``pipeline_sigmas``: the scheduler re-applies its
  shift; it appends sigma 0, so its last step lands on the data prediction at t_{n-1}: ours is
  ``solve`` on t_0..t_{n-1} then ``denoise``), SDXL with ``EulerDiscreteScheduler`` (the n+1
  kd sigmas; its network time is diffusers' log-sigma interpolation, handed to ld3 as
  ``model_timesteps``). ``DiTPipeline`` takes no custom steps: LD3Scheduler only.
"""

from __future__ import annotations

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

import family_helpers as F  # noqa: E402
import real_models_helpers as H  # noqa: E402

from ld3_core.diffusers_scheduler import LD3Scheduler  # noqa: E402
from ld3_core.export import to_format  # noqa: E402
from ld3_core.heuristics import discretize  # noqa: E402
from ld3_core.models import load  # noqa: E402
from ld3_core.models.families import pack_latents, unpack_latents  # noqa: E402
from ld3_core.schedules import DiscreteVP, FlowMatch  # noqa: E402
from ld3_core.solvers import solve  # noqa: E402

NFE = 5
TOL = 1e-4
PROMPTS2 = ["a red cat", "a tree"]
RES = 16
OPTIONS = {
    "sd3": {"prompts": F.PROMPTS, "guidance_scale": 4.0},
    "flux": {"prompts": F.PROMPTS, "guidance_scale": 3.5, "resolution": RES},
    "flux_cfg": {"prompts": F.PROMPTS, "guidance_scale": 3.0, "resolution": RES},
    "sdxl": {"prompts": F.PROMPTS, "guidance_scale": 5.0},
    "dit": {"guidance_scale": 4.0, "class_labels": [3, 7]},
}


@pytest.fixture(scope="module")
def models(family_folders):
    return {k: load(str(family_folders[k]), **OPTIONS[k]) for k in OPTIONS}


def _pipe(family_folders, kind: str):
    pipe = diffusers.DiffusionPipeline.from_pretrained(family_folders[kind])
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _noise(shape, seed: int = 0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------- loaders
def test_loaded_schedules_predictions_and_conditions(models) -> None:
    sd3, flux, flux_cfg, sdxl, dit = (models[k] for k in ("sd3", "flux", "flux_cfg", "sdxl",
                                                          "dit"))
    assert isinstance(sd3.schedule, FlowMatch) and sd3.prediction == "flow"
    assert sd3.schedule.shift == 3.0 and not sd3.schedule.use_dynamic_shifting
    assert sd3.guidance_scale == 4.0 and sd3.sample_shape == (4, 8, 8)
    # FLUX: dynamic shift from the 4x4 token grid of a 16 px image (8x8 latents, 2x2 packed)
    assert isinstance(flux.schedule, FlowMatch) and flux.schedule.image_seq_len == 16
    assert flux.schedule.mu == pytest.approx(0.5 + (1.15 - 0.5) / (4096 - 256) * (16 - 256))
    # guidance-distilled: no CFG batch, the scale is an input of the network
    assert flux.guidance_scale == 1.0 and flux.sample_shape == (4, 8, 8)
    c = flux.sample_cond(3, torch.Generator().manual_seed(0))
    assert torch.equal(c["guidance"], torch.full((3,), 3.5))
    assert flux_cfg.guidance_scale == 3.0 and "guidance" not in flux_cfg.uncond
    assert isinstance(sdxl.schedule, DiscreteVP) and sdxl.prediction == "eps"
    c = sdxl.sample_cond(2, torch.Generator().manual_seed(0))
    assert set(c) == {"encoder_hidden_states", "text_embeds", "time_ids"}
    assert c["time_ids"].tolist() == [[RES, RES, 0, 0, RES, RES]] * 2
    assert float(sdxl.uncond["encoder_hidden_states"].abs().max()) == 0.0  # force_zeros
    assert isinstance(dit.schedule, DiscreteVP) and dit.guidance_scale == 4.0
    labels = dit.sample_cond(50, torch.Generator().manual_seed(0))["class_labels"]
    assert set(labels.tolist()) == {3, 7} and dit.uncond["class_labels"].tolist() == [1000]
    for m in models.values():
        assert m.latent and m.decode is not None and m.teacher_defaults["nfe"] == 10


def test_pack_unpack_match_the_flux_pipeline() -> None:
    x = _noise((2, 4, 8, 6))
    packed = diffusers.FluxPipeline._pack_latents(x, 2, 4, 8, 6)
    assert torch.equal(pack_latents(x), packed)
    assert torch.equal(unpack_latents(packed, 8, 6), x)


def test_unsupported_folder_names_the_supported_families(tmp_path) -> None:
    (tmp_path / "model_index.json").write_text('{"_class_name": "KandinskyV22Pipeline"}')
    with pytest.raises(ValueError, match="FluxPipeline") as err:
        load(str(tmp_path))
    assert "StableDiffusion3Pipeline" in str(err.value) and "DiTPipeline" in str(err.value)


def test_dit_rejects_prompts_and_bad_labels(family_folders) -> None:
    with pytest.raises(ValueError, match="class"):
        load(str(family_folders["dit"]), prompts=["a cat"])
    with pytest.raises(ValueError, match="class_labels"):
        load(str(family_folders["dit"]), class_labels=[1000])


# ------------------------------------------------------------------------------- round trip
def _learned(model):
    """A non-heuristic (t, t^c) pair like LD3 learns: logSNR steps with the interior nudged in
    lambda, and decoupled network times shifted in lambda (any schedule, flow included)."""
    s = model.schedule
    t = discretize("logsnr", NFE, s)
    lam = s.lambda_(t)
    k = torch.arange(NFE + 1, dtype=torch.float64)
    lam[1:-1] = lam[1:-1] + 0.15 * torch.sin(k[1:-1])
    t = s.t_of_lambda(lam)
    t[0], t[-1] = s.t_max, s.t_min
    mt = t.clone()
    mt[1:-1] = s.t_of_lambda(lam[1:-1] - 0.08 * torch.cos(k[1:-1]))
    return t, mt


def _ld3_scheduler(pipe, model, t, mt, solver="unipc", order=2):
    return LD3Scheduler.from_learned(t, mt, solver=solver, order=order,
                                     base_config=pipe.scheduler.config,
                                     schedule_config=model.schedule.config())


def _run_text_pipeline(pipe, kind: str, x_T: torch.Tensor, **kw):
    """Run the pipeline on our x_T; returns its last latents (unpacked for FLUX)."""
    rec = H.capture_last_sample(pipe.scheduler)
    args = dict(prompt=PROMPTS2, output_type="latent", height=RES, width=RES, **kw)
    if kind == "sd3":
        pipe(latents=x_T, guidance_scale=4.0, **args)
    elif kind == "flux":
        pipe(latents=pack_latents(x_T), guidance_scale=3.5, **args)
    elif kind == "flux_cfg":
        pipe(latents=pack_latents(x_T), negative_prompt="", true_cfg_scale=3.0, **args)
    else:
        pipe(latents=x_T, guidance_scale=5.0, **args)
    x = rec["x"]
    return unpack_latents(x, 8, 8) if kind.startswith("flux") else x


@pytest.mark.parametrize("kind", ["sd3", "flux", "flux_cfg", "sdxl"])
def test_ld3_scheduler_in_the_pipeline_equals_solve(family_folders, models, kind) -> None:
    model = models[kind]
    pipe = _pipe(family_folders, kind)
    t, mt = _learned(model)
    pipe.scheduler = _ld3_scheduler(pipe, model, t, mt)
    x_T = _noise((2, *model.sample_shape), seed=1)
    got = _run_text_pipeline(pipe, kind, x_T, num_inference_steps=NFE)
    cond = model.prompt_encoder(PROMPTS2)
    with torch.no_grad():
        ours = solve(model, x_T, t, "unipc", 2, model_timesteps=mt, cond=cond)
        coupled = solve(model, x_T, t, "unipc", 2, cond=cond)
    assert H.rel_err(got, ours) < TOL
    assert H.rel_err(coupled, ours) > 10 * TOL  # the decoupled times really were used


def test_ld3_scheduler_in_the_dit_pipeline_equals_solve(family_folders, models) -> None:
    model = models["dit"]
    pipe = _pipe(family_folders, "dit")
    t, mt = _learned(model)
    pipe.scheduler = _ld3_scheduler(pipe, model, t, mt, solver="dpm++", order=2)
    rec = H.capture_last_sample(pipe.scheduler)
    pipe(class_labels=[3, 7], guidance_scale=4.0, num_inference_steps=NFE,
         generator=torch.Generator().manual_seed(2), output_type="np")
    x_T = _noise((2, *model.sample_shape), seed=2)  # DiTPipeline's own draw
    with torch.no_grad():
        ours = solve(model, x_T, t, "dpm++", 2, model_timesteps=mt,
                     cond={"class_labels": torch.tensor([3, 7])})
    got = rec["x"][:2]  # DiTPipeline steps the doubled CFG batch; both halves are equal
    assert torch.equal(rec["x"][:2], rec["x"][2:])
    assert H.rel_err(got, ours) < TOL


@pytest.mark.parametrize("kind", ["sd3", "flux"])
def test_flow_match_euler_pipeline_with_exported_sigmas(family_folders, models, kind) -> None:
    model = models[kind]
    pipe = _pipe(family_folders, kind)
    t, _ = _learned(model)
    export = to_format("diffusers", t, model.schedule)
    assert export["schedulers"]["FlowMatchEulerDiscreteScheduler"]["argument"] == "sigmas"
    x_T = _noise((2, *model.sample_shape), seed=3)
    got = _run_text_pipeline(pipe, kind, x_T, sigmas=export["pipeline_sigmas"])
    assert pipe.scheduler.sigmas[:-1].double().sub(t[:-1]).abs().max() < 1e-6
    cond = model.prompt_encoder(PROMPTS2)
    with torch.no_grad():  # n-1 steps on t_0..t_{n-1}, then the last step to sigma 0
        x = solve(model, x_T.double(), t[:-1], "euler", 1, cond=cond)
        ours = model.denoise(x, t[-2], cond=cond)
    assert H.rel_err(got, ours) < TOL


def test_sdxl_euler_pipeline_with_exported_sigmas(family_folders, models) -> None:
    model = models["sdxl"]
    pipe = _pipe(family_folders, "sdxl")
    pipe.scheduler = diffusers.EulerDiscreteScheduler.from_config(pipe.scheduler.config,
                                                                  timestep_spacing="leading")
    t, _ = _learned(model)
    export = to_format("diffusers", t, model.schedule)
    x_T = _noise((2, *model.sample_shape), seed=4)
    got = _run_text_pipeline(pipe, "sdxl", x_T, sigmas=export["sigmas"])
    mt = torch.cat([model.schedule.time_of_index(pipe.scheduler.timesteps.double()), t[-1:]])
    alpha_end = model.schedule.alpha(t[-1]).float()  # Euler's state is x / alpha
    with torch.no_grad():
        ours = solve(model, x_T, t, "euler", 1, model_timesteps=mt,
                     cond=model.prompt_encoder(PROMPTS2))
    assert H.rel_err(got * alpha_end, ours) < TOL


@pytest.mark.parametrize("kind", ["sd3", "flux", "sdxl", "dit"])
@pytest.mark.parametrize("net", ["float16", "bfloat16"])
def test_half_precision_networks_with_a_float64_state(family_folders, models, kind, net) -> None:
    """The transformer / UNet runs in its own dtype, the solver state stays float64."""
    half = load(str(family_folders[kind]), dtype=net, **OPTIONS[kind])
    assert half.network_dtype == getattr(torch, net)
    x_T = _noise((2, *half.sample_shape), seed=5).double()
    cond = half.sample_cond(2, torch.Generator().manual_seed(6))
    ref_cond = models[kind].sample_cond(2, torch.Generator().manual_seed(6))
    t = discretize("logsnr", 3, half.schedule)
    with torch.no_grad():
        out = solve(half, x_T, t, "dpm++", 2, cond=cond)
        ref = solve(models[kind], x_T, t, "dpm++", 2, cond=ref_cond)
    assert out.dtype == torch.float64 and bool(torch.isfinite(out).all())
    assert H.rel_err(out, ref) < (0.02 if net == "float16" else 0.1)


def test_hub_id_of_a_pipeline_fetches_components_only(
    family_folders, tmp_path, monkeypatch
) -> None:
    """A pipeline repo on the hub: only model_index.json and the component sub-folders are
    requested (not the multi-GB single-file checkpoints such repos keep at the top level),
    and the family loader runs on the snapshot."""
    import shutil

    import huggingface_hub

    calls: list = []
    snapshot = tmp_path / "snap"
    shutil.copytree(family_folders["sd3"], snapshot)

    def fake_snapshot_download(repo_id, allow_patterns=None, **kw):
        calls.append(list(allow_patterns or []))
        return str(snapshot)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    model = load("some-org/tiny-sd3", prompts=["a cat"])
    assert model.prediction == "flow" and model.diffusers_info["kind"] == "sd3"
    assert calls[0] == ["model_index.json"]
    assert "*.safetensors" not in calls[1] and "*/*.safetensors" in calls[1]
