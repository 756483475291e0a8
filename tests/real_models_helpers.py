"""Tiny random-weight diffusers models for the real-models tests (nothing is downloaded).

Each ``build_*`` writes a model folder with ``save_pretrained`` and returns its path:

- ``build_pixel``: ``DDPMPipeline`` layout (unet/ + scheduler/), 3x8x8 pixels;
- ``build_latent``: unet/ (``UNet2DModel``, 4 latent channels) + vae/ (``AutoencoderKL``,
  scale 2) + scheduler/, no model_index.json (the "components folder" layout);
- ``build_sd``: ``StableDiffusionPipeline`` layout with a 1-layer CLIP text encoder and a
  CLIP tokenizer whose vocab.json / merges.txt are written here (letters only).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

PROMPTS = ["a red cat", "a blue dog", "a tree"]
SD_BETAS = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}


def _scheduler(cls_name: str = "DDPMScheduler", prediction_type: str = "epsilon", **extra):
    import diffusers

    cfg = dict(num_train_timesteps=1000, prediction_type=prediction_type,
               beta_start=0.0001, beta_end=0.02, beta_schedule="linear")
    cfg.update(extra)
    return getattr(diffusers, cls_name)(**cfg)


def tiny_unet2d(in_channels: int = 3, sample_size: int = 8, seed: int = 0):
    """A ~20k-parameter UNet2DModel with random weights."""
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    return UNet2DModel(
        sample_size=sample_size, in_channels=in_channels, out_channels=in_channels,
        layers_per_block=1, block_out_channels=(8, 16), norm_num_groups=4,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"), attention_head_dim=4,
    ).eval()


def tiny_vae(seed: int = 1):
    """AutoencoderKL: 3 pixel channels <-> 4 latent channels, spatial factor 2."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        layers_per_block=1, norm_num_groups=4, sample_size=16, scaling_factor=0.5,
    ).eval()


def build_pixel(folder: Path, prediction_type: str = "epsilon") -> Path:
    """DDPMPipeline folder (unet/ + scheduler/ + model_index.json)."""
    from diffusers import DDPMPipeline

    DDPMPipeline(unet=tiny_unet2d(), scheduler=_scheduler(prediction_type=prediction_type)) \
        .save_pretrained(folder)
    return Path(folder)


def build_latent(folder: Path, prediction_type: str = "epsilon") -> Path:
    """unet/ + vae/ + scheduler/ sub-folders (no model_index.json)."""
    folder = Path(folder)
    tiny_unet2d(in_channels=4).save_pretrained(folder / "unet")
    tiny_vae().save_pretrained(folder / "vae")
    _scheduler("DDIMScheduler", prediction_type).save_pretrained(folder / "scheduler")
    return folder


def write_tokenizer(folder: Path, max_length: int = 8) -> Path:
    """A CLIP BPE tokenizer over lower-case letters (vocab.json + merges.txt, no merges)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    letters = "abcdefghijklmnopqrstuvwxyz"
    tokens = ["<|startoftext|>", "<|endoftext|>", *letters, *(c + "</w>" for c in letters)]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"model_max_length": max_length, "tokenizer_class": "CLIPTokenizer"}))
    return folder


def build_sd(folder: Path, prediction_type: str = "epsilon") -> Path:
    """StableDiffusionPipeline folder with tiny random components (latent 4x8x8, image 16)."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder = Path(folder)
    tok_dir = write_tokenizer(folder / "_tok_src")
    tokenizer = CLIPTokenizer.from_pretrained(tok_dir)
    torch.manual_seed(2)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=54, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, max_position_embeddings=8, projection_dim=16,
        bos_token_id=0, eos_token_id=1, pad_token_id=1,
    )).eval()
    torch.manual_seed(3)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(8, 16), norm_num_groups=4, cross_attention_dim=16,
        attention_head_dim=2,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    ).eval()
    pipe = StableDiffusionPipeline(
        vae=tiny_vae(), text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
        scheduler=_scheduler("PNDMScheduler", prediction_type, steps_offset=1,
                             skip_prk_steps=True, **SD_BETAS),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(folder)
    return folder


def learned_schedule(schedule, nfe: int = 6):
    """A non-integer-aligned (t, t^c) pair like LD3 learns: logSNR steps with the interior
    nudged, and decoupled network times shifted by a few train steps."""
    from ld3_core.heuristics import discretize

    t = discretize("logsnr", nfe, schedule)
    bump = 1.0 + 0.02 * torch.sin(torch.arange(1, nfe, dtype=torch.float64))
    t[1:-1] = t[1:-1] * bump
    mt = t.clone()
    mt[:-1] = mt[:-1] - 0.004 * torch.cos(torch.arange(nfe, dtype=torch.float64))
    mt = mt.clamp(schedule.t_min, schedule.t_max)
    return t, mt


def capture_last_sample(scheduler) -> dict:
    """Make ``scheduler.step`` record its last ``prev_sample`` (the pipeline's pre-clamp state)."""
    original = scheduler.step
    record: dict = {"calls": 0}

    def step(*args, **kwargs):
        out = original(*args, **kwargs)
        record["x"] = out[0] if isinstance(out, tuple) else out.prev_sample
        record["calls"] += 1
        return out

    scheduler.step = step
    return record


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|."""
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    return float((a - b).abs().max() / b.abs().max())

