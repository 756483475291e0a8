"""Loading diffusers folders (pixel, latent, Stable-Diffusion-style) through ld3_core.models.load.

Every model is a tiny random-weight model written by tests/real_models_helpers.py; nothing is
downloaded.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

import real_models_helpers as H  # noqa: E402

from ld3_core.models import DiffusionModel, load  # noqa: E402
from ld3_core.schedules import DiscreteVP  # noqa: E402


def test_pixel_folder_schedule_prediction_and_time_input(diffusers_folders):
    from diffusers import DDPMScheduler, UNet2DModel

    model = load(str(diffusers_folders["pixel"]))
    assert isinstance(model, DiffusionModel)
    assert model.diffusers_info["kind"] == "pixel"
    assert isinstance(model.schedule, DiscreteVP) and model.prediction == "eps"
    assert model.sample_shape == (3, 8, 8) and not model.latent and model.decode is None
    ref = DDPMScheduler.from_pretrained(diffusers_folders["pixel"], subfolder="scheduler")
    torch.testing.assert_close(model.schedule.alphas_cumprod, ref.alphas_cumprod.double())
    # the network is fed the fractional index N t - 1 (here t = 0.4567 -> 455.7)
    unet = UNet2DModel.from_pretrained(diffusers_folders["pixel"], subfolder="unet")
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expect = unet(x, torch.tensor([455.7, 455.7])).sample
        got = model.network(x, 0.4567)
    torch.testing.assert_close(got, expect, rtol=1e-5, atol=1e-6)


def test_bare_unet_folder_needs_a_scheduler_config(diffusers_folders, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(diffusers_folders["pixel"] / "unet", bare)
    with pytest.raises(ValueError, match="scheduler"):
        load(str(bare))
    cfg_path = diffusers_folders["pixel"] / "scheduler" / "scheduler_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["prediction_type"] = "sample"
    model = load(str(bare), scheduler=cfg)
    assert model.prediction == "x0" and model.diffusers_info["kind"] == "pixel"
    (bare / "scheduler_config.json").write_text(json.dumps(cfg))
    assert load(str(bare)).prediction == "x0"


def test_latent_folder_decodes_with_the_vae(diffusers_folders):
    from diffusers import AutoencoderKL

    model = load(str(diffusers_folders["latent"]))
    assert model.latent and model.prediction == "v" and model.sample_shape == (4, 8, 8)
    vae = AutoencoderKL.from_pretrained(diffusers_folders["latent"], subfolder="vae")
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        img = model.decode(z)
        expect = vae.decode(z / vae.config.scaling_factor).sample.clamp(-1, 1)
    assert img.shape == (2, 3, 16, 16)
    torch.testing.assert_close(img, expect)
    # v-prediction: x0 = alpha x - sigma v  (VP: alpha^2 + sigma^2 = 1)
    t = torch.tensor(0.3, dtype=torch.float64)
    a, s = model.schedule.alpha(t).float(), model.schedule.sigma(t).float()
    with torch.no_grad():
        torch.testing.assert_close(model.denoise(z, 0.3), a * z - s * model.network(z, 0.3),
                                   rtol=1e-5, atol=1e-5)


def test_sd_folder_prompts_uncond_and_batched_cfg(diffusers_folders):
    from diffusers import StableDiffusionPipeline

    model = load(str(diffusers_folders["sd"]), prompts=H.PROMPTS)
    assert model.diffusers_info["kind"] == "text-to-image" and model.latent
    assert model.guidance_scale == 7.5 and model.teacher_defaults["nfe"] == 10
    pipe = StableDiffusionPipeline.from_pretrained(diffusers_folders["sd"], safety_checker=None)
    with torch.no_grad():
        pos, neg = pipe.encode_prompt(H.PROMPTS, "cpu", 1, True, None)
    torch.testing.assert_close(model.prompt_encoder(H.PROMPTS), pos)
    torch.testing.assert_close(model.uncond["encoder_hidden_states"], neg[:1])
    cond = model.sample_cond(5, torch.Generator().manual_seed(0))
    emb = cond["encoder_hidden_states"]
    assert emb.shape == (5, *pos.shape[1:])
    assert all(any(torch.equal(e, p) for p in pos) for e in emb)  # drawn among the prompts
    # guided output = u + w (c - u), from one batched call
    x = torch.randn(5, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    calls = []
    with torch.no_grad():
        c = model.with_guidance(1.0).network(x, 0.6, cond)
        u = model.with_guidance(1.0).network(x, 0.6, None)
        inner = model.fn

        def counting(xx, tt, **kw):
            calls.append(xx.shape[0])
            return inner(xx, tt, **kw)

        model.fn = counting
        try:
            g = model.network(x, 0.6, cond)
        finally:
            model.fn = inner
    assert calls == [10]
    torch.testing.assert_close(g, u + 7.5 * (c - u), rtol=1e-4, atol=1e-4)


def test_sd_without_prompts_samples_unconditionally(diffusers_folders):
    model = load(str(diffusers_folders["sd"]), guidance_scale=1.0)
    assert model.sample_cond(2) is None and model.teacher_defaults == {}
    x = torch.zeros(2, 4, 8, 8)
    with torch.no_grad():
        assert model.denoise(x, 0.5).shape == x.shape


@pytest.mark.parametrize(
    ("kind", "options", "match"),
    [
        ("pixel", {"colour": 1}, "unknown option"),
        ("pixel", {"prompts": ["a"]}, "prompts were given"),
        ("pixel", {"guidance_scale": 2.0}, "unconditional"),
        ("pixel", {"dtype": "float7"}, "dtype"),
        ("sd", {"prompts": []}, "non-empty list"),
    ],
)
def test_bad_options_raise_value_error(diffusers_folders, kind, options, match):
    with pytest.raises(ValueError, match=match):
        load(str(diffusers_folders[kind]), **options)


def test_missing_folder_and_non_model_folder(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load(str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="does not exist"):
        load("./no/such/folder")
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "Transformer2DModel"}))
    with pytest.raises(ValueError, match="no UNet2DModel"):
        load(str(tmp_path))


def test_hub_id_offline_gives_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="HF_HUB_OFFLINE"):
        load("some-org/some-model-that-is-not-cached", cache_dir=str(tmp_path / "hub"))


def test_hub_id_offline_is_served_from_the_local_cache(diffusers_folders, tmp_path, monkeypatch):
    """A hub id already in the Hugging Face cache loads without network (HF_HUB_OFFLINE=1)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--some-org--tiny-ddpm"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(diffusers_folders["pixel"], repo / "snapshots" / commit)
    model = load("some-org/tiny-ddpm", cache_dir=str(tmp_path / "hub"))
    assert model.name == "some-org/tiny-ddpm" and model.diffusers_info["kind"] == "pixel"
    assert model.diffusers_info["folder"].endswith(commit)
