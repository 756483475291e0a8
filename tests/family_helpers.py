"""Tiny random-weight pipelines of the newer model families (nothing is downloaded).

Each ``build_*`` writes a folder with the pipeline's own ``save_pretrained`` and returns it:

- ``build_sd3``: ``StableDiffusion3Pipeline`` (SD3 transformer, two CLIP-with-projection
  encoders, a tiny T5 + tokenizer, flow-match Euler scheduler with ``shift=3``);
- ``build_flux``: ``FluxPipeline`` (CLIP + T5, dynamic shifting); ``guidance_embeds=True``
  is a guidance-distilled model (FLUX.1-dev style), False needs true CFG;
- ``build_sdxl``: ``StableDiffusionXLPipeline`` (two text encoders, pooled embeddings,
  ``time_ids``; Euler discrete scheduler, scaled-linear betas);
- ``build_dit``: ``DiTPipeline`` (class-conditional DiT transformer with learned sigma,
  DDIM scheduler).

Latents are 4x8x8 (SD3, SDXL, DiT) or 4x4x4 (FLUX, 2x2 packed into 4 tokens); the VAE is the
tiny scale-2 ``AutoencoderKL`` of real_models_helpers (16 latent channels for SD3 / FLUX).
"""

from __future__ import annotations

from pathlib import Path

import real_models_helpers as H
import torch

PROMPTS = H.PROMPTS
TEXT_LEN = 8


def _vae(latent_channels: int = 4, seed: int = 1, **extra):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=latent_channels,
        block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1, norm_num_groups=4,
        sample_size=16, scaling_factor=0.5, **extra,
    ).eval()


def _clip_tokenizer(folder: Path):
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(H.write_tokenizer(folder, max_length=TEXT_LEN))


def _clip(cls_name: str, hidden: int, seed: int, projection_dim: int = 16):
    import transformers

    torch.manual_seed(seed)
    cfg = transformers.CLIPTextConfig(
        vocab_size=54, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=TEXT_LEN, projection_dim=projection_dim,
        bos_token_id=0, eos_token_id=1, pad_token_id=1,
    )
    return getattr(transformers, cls_name)(cfg).eval()


def _t5_tokenizer():
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = ([("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
             + [("\u2581" + c, -1.0) for c in letters] + [(c, -2.0) for c in letters])
    tok = Tokenizer(models.Unigram(vocab, unk_id=2))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    return transformers.T5TokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
        extra_ids=0, model_max_length=TEXT_LEN)


def _t5(d_model: int, seed: int):
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    return T5EncoderModel(T5Config(
        vocab_size=55, d_model=d_model, d_kv=8, d_ff=2 * d_model, num_layers=1, num_heads=2,
        relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1,
        decoder_start_token_id=0)).eval()


def build_sd3(folder: Path) -> Path:
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )

    folder = Path(folder)
    tok = _clip_tokenizer(folder / "_tok_src")
    torch.manual_seed(5)
    transformer = SD3Transformer2DModel(
        sample_size=8, patch_size=2, in_channels=4, out_channels=4, num_layers=1,
        attention_head_dim=8, num_attention_heads=2, joint_attention_dim=32,
        caption_projection_dim=16, pooled_projection_dim=32, pos_embed_max_size=8,
    ).eval()
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=_vae(4, shift_factor=0.1),
        text_encoder=_clip("CLIPTextModelWithProjection", 16, 6), tokenizer=tok,
        text_encoder_2=_clip("CLIPTextModelWithProjection", 16, 7), tokenizer_2=tok,
        text_encoder_3=_t5(32, 8), tokenizer_3=_t5_tokenizer(),
    )
    pipe.save_pretrained(folder)
    return folder


def build_flux(folder: Path, guidance_embeds: bool = True) -> Path:
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    folder = Path(folder)
    torch.manual_seed(9)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1,
        attention_head_dim=8, num_attention_heads=2, joint_attention_dim=32,
        pooled_projection_dim=16, guidance_embeds=guidance_embeds, axes_dims_rope=(2, 2, 4),
    ).eval()
    sched = FlowMatchEulerDiscreteScheduler(
        shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
        base_image_seq_len=256, max_image_seq_len=4096)
    pipe = FluxPipeline(
        scheduler=sched, vae=_vae(4, shift_factor=0.1),
        text_encoder=_clip("CLIPTextModel", 16, 10),
        tokenizer=_clip_tokenizer(folder / "_tok_src"), text_encoder_2=_t5(32, 11),
        tokenizer_2=_t5_tokenizer(), transformer=transformer,
    )
    pipe.save_pretrained(folder)
    return folder


def build_sdxl(folder: Path) -> Path:
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    folder = Path(folder)
    tok = _clip_tokenizer(folder / "_tok_src")
    torch.manual_seed(12)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(8, 16), norm_num_groups=4, cross_attention_dim=32,
        attention_head_dim=2, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        addition_embed_type="text_time", addition_time_embed_dim=4,
        projection_class_embeddings_input_dim=16 + 6 * 4, transformer_layers_per_block=1,
    ).eval()
    sched = EulerDiscreteScheduler(num_train_timesteps=1000, **H.SD_BETAS,
                                   prediction_type="epsilon", timestep_spacing="leading",
                                   steps_offset=1)
    pipe = StableDiffusionXLPipeline(
        vae=_vae(4), text_encoder=_clip("CLIPTextModel", 16, 13), tokenizer=tok,
        text_encoder_2=_clip("CLIPTextModelWithProjection", 16, 14), tokenizer_2=tok,
        unet=unet, scheduler=sched, force_zeros_for_empty_prompt=True,
    )
    pipe.save_pretrained(folder)
    return folder


def build_dit(folder: Path) -> Path:
    from diffusers import DDIMScheduler, DiTPipeline, DiTTransformer2DModel

    folder = Path(folder)
    torch.manual_seed(15)
    transformer = DiTTransformer2DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8,
        num_layers=1, sample_size=8, patch_size=2, num_embeds_ada_norm=1000,
        norm_num_groups=4,
    ).eval()
    pipe = DiTPipeline(transformer=transformer, vae=_vae(4),
                       scheduler=DDIMScheduler(num_train_timesteps=1000,
                                               beta_schedule="linear", clip_sample=False),
                       id2label={i: f"class{i}" for i in range(10)})
    pipe.save_pretrained(folder)
    return folder

