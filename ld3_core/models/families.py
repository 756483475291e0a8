"""Loaders of the pipeline families beyond Stable Diffusion 1/2: SD3, FLUX, SDXL and DiT.

Each family is recognised from the folder (``model_index.json``'s pipeline class, else the
denoiser's class) and loaded with its own diffusers pipeline class, whose ``encode_prompt``
builds the prompt conditions exactly as the pipeline does at sampling time:

============  ==================================  =========================================
family        schedule / prediction               network input / conditions
============  ==================================  =========================================
``sd3``       :class:`FlowMatch` (``shift``),     ``timestep = 1000 t``; prompt embeddings
              ``flow`` (v = eps - x0)             (CLIP-L + CLIP-G + T5) and pooled ones;
                                                  CFG against the empty prompt
``flux``      :class:`FlowMatch` (dynamic shift   latents packed 2x2 into tokens, ``timestep =
              from the latent token count)        t``; CLIP pooled + T5 embeddings; embedded
              ``flow``                            guidance (``guidance_embeds``) or true CFG
``sdxl``      :class:`DiscreteVP` from the        ``N t - 1``; two text encoders, pooled
              scheduler config                    embeddings and ``time_ids`` (original size,
                                                  crop (0, 0), target size); CFG
``dit``       :class:`DiscreteVP`                 ``N t - 1``; class labels, CFG against the
                                                  null class, learned-sigma half dropped
============  ==================================  =========================================

Options (besides those of :func:`ld3_core.models.diffusers_loader.load_diffusers`):
``resolution`` (pixels, int or (H, W); default the pipeline's default size),
``max_sequence_length`` (T5 tokens; default the pipeline's) and ``class_labels`` (DiT: the
classes ``sample_cond`` draws from; default all).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ld3_core.extras import require
from ld3_core.models.wrapper import DiffusionModel
from ld3_core.schedules import FlowMatch

FAMILIES = {
    "StableDiffusion3Pipeline": "sd3",
    "FluxPipeline": "flux",
    "StableDiffusionXLPipeline": "sdxl",
    "DiTPipeline": "dit",
}
_DENOISERS = {
    "SD3Transformer2DModel": "sd3",
    "FluxTransformer2DModel": "flux",
    "DiTTransformer2DModel": "dit",
    "Transformer2DModel": "dit",
}
DEFAULT_GUIDANCE = {"sd3": 7.0, "flux": 3.5, "flux_cfg": 1.0, "sdxl": 5.0, "dit": 4.0}
# LD3 paper teacher settings for guided models (App. B.1.3), as for Stable Diffusion.
GUIDED_TEACHER_DEFAULTS = {"solver": "unipc", "order": 2, "nfe": 10}


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, json.JSONDecodeError):
        return {}


def detect_family(folder: Path) -> str | None:
    """``sd3`` / ``flux`` / ``sdxl`` / ``dit`` for a folder of one of those pipelines, else None."""
    folder = Path(folder)
    pipeline = _read(folder / "model_index.json").get("_class_name")
    if pipeline in FAMILIES:
        return FAMILIES[pipeline]
    denoiser = _read(folder / "transformer" / "config.json").get("_class_name")
    if denoiser in _DENOISERS:
        return _DENOISERS[denoiser]
    unet = _read(folder / "unet" / "config.json")
    if unet.get("addition_embed_type") == "text_time" and (folder / "text_encoder_2").is_dir():
        return "sdxl"
    return None


def flow_schedule_from_config(config: dict[str, Any], image_seq_len: int | None = None
                              ) -> FlowMatch:
    """The :class:`FlowMatch` of a diffusers flow scheduler config.

    Reads ``FlowMatchEulerDiscreteScheduler``'s ``shift``, ``use_dynamic_shifting``,
    ``base_shift``, ``max_shift``, ``base_image_seq_len``, ``max_image_seq_len``,
    ``time_shift_type``, ``num_train_timesteps`` (or ``flow_shift`` of the flow DPM-Solver /
    UniPC configs). ``image_seq_len`` (latent tokens) sets the dynamic shift. Raises
    ValueError for ``invert_sigmas`` (Mochi-style inverted time), which is not supported.
    """
    cfg = dict(config)
    if cfg.get("invert_sigmas"):
        raise ValueError("flow-match schedulers with invert_sigmas are not supported")
    shift = cfg.get("shift", cfg.get("flow_shift", 1.0)) or 1.0
    kw: dict[str, Any] = {
        "shift": float(shift),
        "use_dynamic_shifting": bool(cfg.get("use_dynamic_shifting", False)),
        "num_train_timesteps": int(cfg.get("num_train_timesteps", 1000) or 1000),
        "time_shift_type": cfg.get("time_shift_type", "exponential") or "exponential",
    }
    for key in ("base_shift", "max_shift", "base_image_seq_len", "max_image_seq_len"):
        if cfg.get(key) is not None:
            kw[key] = cfg[key]
    if kw["use_dynamic_shifting"]:
        kw["image_seq_len"] = image_seq_len
    return FlowMatch(**kw)


def is_flow_config(config: dict[str, Any]) -> bool:
    """True for flow-matching scheduler configs (flow-match Euler / Heun, flow sigmas)."""
    cfg = dict(config)
    return (str(cfg.get("_class_name", "")).startswith("FlowMatch")
            or bool(cfg.get("use_flow_sigmas"))
            or cfg.get("prediction_type") == "flow_prediction")


# -- helpers ----------------------------------------------------------------------------------
def _resolution(option: Any, default: int) -> tuple[int, int]:
    if option is None:
        return default, default
    if isinstance(option, int) and not isinstance(option, bool):
        return int(option), int(option)
    if isinstance(option, (list, tuple)) and len(option) == 2:
        return int(option[0]), int(option[1])
    raise ValueError(f"resolution must be an int or (height, width), got {option!r}")


def _index_sampler(tables: dict[str, Tensor], count: int):
    """cond_sampler(n, generator): one prompt (row of every table) per sample, uniformly."""

    def sampler(n: int, generator: torch.Generator | None = None) -> dict[str, Any]:
        idx = torch.randint(count, (n,), generator=generator)
        return {k: v[idx.to(v.device)] for k, v in tables.items()}

    return sampler


def pack_latents(x: Tensor) -> Tensor:
    """FLUX packing: (B, C, H, W) -> (B, H/2 * W/2, 4 C), 2x2 patches as tokens."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack_latents(x: Tensor, height: int, width: int) -> Tensor:
    """Inverse of :func:`pack_latents`: (B, h w, 4 C) -> (B, C, 2h, 2w)."""
    b, _, d = x.shape
    c = d // 4
    x = x.reshape(b, height // 2, width // 2, c, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, c, height, width)


def _image_ids(h: int, w: int, device: Any, dtype: torch.dtype) -> Tensor:
    """FLUX's positional ids of the (h, w) token grid: (h w, 3) = (0, row, col)."""
    ids = torch.zeros(h, w, 3, device=device, dtype=dtype)
    ids[..., 1] = torch.arange(h, device=device, dtype=dtype)[:, None]
    ids[..., 2] = torch.arange(w, device=device, dtype=dtype)[None, :]
    return ids.reshape(h * w, 3)


def _vae_scale(pipe: Any) -> int:
    vae = getattr(pipe, "vae", None)
    return 2 ** (len(vae.config.block_out_channels) - 1) if vae is not None else 8


# -- network functions ------------------------------------------------------------------------
def _sd3_fn(transformer: Any):
    def fn(x: Tensor, t_in: Tensor, **cond: Any) -> Tensor:
        dev = transformer.device
        out = transformer(
            hidden_states=x.to(dev), timestep=t_in.to(dev),
            encoder_hidden_states=cond["encoder_hidden_states"].to(dev),
            pooled_projections=cond["pooled_projections"].to(dev), return_dict=False)[0]
        return out.to(x.device)

    return fn


def _flux_fn(transformer: Any, num_train_timesteps: int):
    def fn(x: Tensor, t_in: Tensor, **cond: Any) -> Tensor:
        dev = transformer.device
        b, _, h, w = x.shape
        text = cond["encoder_hidden_states"].to(dev)
        guidance = cond.get("guidance")
        out = transformer(
            hidden_states=pack_latents(x).to(dev),
            timestep=(t_in / num_train_timesteps).to(dev),  # FLUX takes the flow sigma t
            guidance=None if guidance is None else guidance.to(dev),
            pooled_projections=cond["pooled_projections"].to(dev),
            encoder_hidden_states=text,
            txt_ids=torch.zeros(text.shape[1], 3, device=dev, dtype=text.dtype),
            img_ids=_image_ids(h // 2, w // 2, dev, text.dtype),
            return_dict=False)[0]
        return unpack_latents(out, h, w).to(x.device)

    return fn


def _sdxl_fn(unet: Any):
    def fn(x: Tensor, t_in: Tensor, **cond: Any) -> Tensor:
        dev = unet.device
        added = {"text_embeds": cond["text_embeds"].to(dev), "time_ids": cond["time_ids"].to(dev)}
        out = unet(x.to(dev), t_in.to(dev),
                   encoder_hidden_states=cond["encoder_hidden_states"].to(dev),
                   added_cond_kwargs=added, return_dict=False)[0]
        return out.to(x.device)

    return fn


def _dit_fn(transformer: Any, channels: int):
    def fn(x: Tensor, t_in: Tensor, **cond: Any) -> Tensor:
        dev = transformer.device
        out = transformer(x.to(dev), timestep=t_in.to(dev),
                          class_labels=cond["class_labels"].to(dev), return_dict=False)[0]
        return out[:, :channels].to(x.device)  # learned sigma: keep the eps half

    return fn


# -- entry point ------------------------------------------------------------------------------
def load_family(family: str, folder: Path, options: dict[str, Any], *, name: str,
                dtype: torch.dtype | None, device: torch.device) -> DiffusionModel:
    """Load a ``sd3`` / ``flux`` / ``sdxl`` / ``dit`` folder as a :class:`DiffusionModel`.

    ``options``: ``guidance_scale`` (CFG weight, or FLUX's embedded guidance for
    guidance-distilled models; defaults as the pipelines: SD3 7, FLUX 3.5 (distilled) / 1
    (true CFG), SDXL 5, DiT 4), ``prompts``, ``scheduler``, ``resolution``,
    ``max_sequence_length``, ``class_labels``. Returns a model with ``sample_shape`` (C, h, w)
    of the latents, ``decode`` through the VAE, ``latent=True``, ``diffusers_info`` and
    ``prompt_encoder`` (text families: prompts -> cond dict, else None).
    """
    diffusers = require("diffusers", f"the {family} pipeline")

    from ld3_core.models.diffusers_loader import (
        _check_prompts,
        _scheduler_config,
        _vae_decode,
        prediction_of,
        schedule_from_scheduler_config,
    )

    pipe_cls = {"sd3": "StableDiffusion3Pipeline", "flux": "FluxPipeline",
                "sdxl": "StableDiffusionXLPipeline", "dit": "DiTPipeline"}[family]
    try:
        kw = {"torch_dtype": dtype} if dtype is not None else {}
        pipe = getattr(diffusers, pipe_cls).from_pretrained(folder, **kw)
    except (OSError, ValueError, RuntimeError, TypeError) as exc:
        raise ValueError(f"cannot load {pipe_cls} from {folder}: {exc}") from exc
    pipe.to(device)
    for module in pipe.components.values():
        if isinstance(module, torch.nn.Module):
            module.eval().requires_grad_(False)
    prompts = _check_prompts(options.get("prompts"))
    if prompts is not None and family == "dit":
        raise ValueError("prompts were given but a DiT model is class-conditional "
                         "(use class_labels)")
    sched_cfg = _scheduler_config(folder, folder / "scheduler", options.get("scheduler"))
    denoiser = pipe.unet if family == "sdxl" else pipe.transformer
    net_dtype = denoiser.dtype
    vs = _vae_scale(pipe)
    guidance = options.get("guidance_scale")
    max_len = options.get("max_sequence_length")
    uncond: dict[str, Any] | None
    tables: dict[str, Tensor] = {}
    encoder = None
    teacher_defaults: dict[str, Any] = {}

    if family in ("sd3", "flux"):
        if family == "sd3":
            h, w = _resolution(options.get("resolution"),
                               int(denoiser.config.sample_size) * vs)
            lat = (int(denoiser.config.in_channels), h // vs, w // vs)
            fn = _sd3_fn(denoiser)
            seq_len = None
        else:
            h, w = _resolution(options.get("resolution"), int(pipe.default_sample_size) * vs)
            lh, lw = 2 * (h // (vs * 2)), 2 * (w // (vs * 2))
            lat = (int(denoiser.config.in_channels) // 4, lh, lw)
            seq_len = (lh // 2) * (lw // 2)
        schedule = flow_schedule_from_config(sched_cfg, image_seq_len=seq_len)
        if family == "flux":
            fn = _flux_fn(denoiser, schedule.num_train_timesteps)
        prediction = "flow"
        distilled = family == "flux" and bool(denoiser.config.guidance_embeds)
        key = "flux" if distilled else ("flux_cfg" if family == "flux" else "sd3")
        guidance = DEFAULT_GUIDANCE[key] if guidance is None else float(guidance)

        def encode(texts: list[str]) -> dict[str, Tensor]:
            kw: dict[str, Any] = {"device": device}
            if max_len is not None:
                kw["max_sequence_length"] = int(max_len)
            with torch.no_grad():
                if family == "sd3":
                    pe, _, pooled, _ = pipe.encode_prompt(
                        prompt=texts, prompt_2=None, prompt_3=None,
                        do_classifier_free_guidance=False, **kw)
                else:
                    pe, pooled, _ = pipe.encode_prompt(prompt=texts, prompt_2=None, **kw)
            out = {"encoder_hidden_states": pe, "pooled_projections": pooled}
            if distilled:
                out["guidance"] = torch.full((pe.shape[0],), guidance, device=pe.device,
                                             dtype=torch.float32)
            return out

        uncond = encode([""])
        cfg_scale = 1.0 if distilled else guidance
    elif family == "sdxl":
        schedule = schedule_from_scheduler_config(sched_cfg)
        prediction = prediction_of(sched_cfg)
        h, w = _resolution(options.get("resolution"), int(denoiser.config.sample_size) * vs)
        lat = (int(denoiser.config.in_channels), h // vs, w // vs)
        fn = _sdxl_fn(denoiser)
        guidance = DEFAULT_GUIDANCE["sdxl"] if guidance is None else float(guidance)
        time_ids = torch.tensor([[h, w, 0, 0, h, w]], dtype=torch.float32, device=device)

        def encode(texts: list[str], negative: bool = False) -> dict[str, Tensor]:
            with torch.no_grad():
                pe, npe, pooled, npooled = pipe.encode_prompt(
                    prompt=texts, device=device, do_classifier_free_guidance=negative)
            if negative:  # the pipeline's default negative (zeros if force_zeros_for_empty)
                pe, pooled = npe, npooled
            return {"encoder_hidden_states": pe, "text_embeds": pooled,
                    "time_ids": time_ids.expand(pe.shape[0], 6).clone()}

        uncond = encode([""], negative=True)
        cfg_scale = guidance
    else:  # dit
        schedule = schedule_from_scheduler_config(sched_cfg)
        prediction = prediction_of(sched_cfg)
        size = int(denoiser.config.sample_size)
        lat = (int(denoiser.config.in_channels), size, size)
        fn = _dit_fn(denoiser, lat[0])
        n_classes = int(denoiser.config.num_embeds_ada_norm)
        guidance = DEFAULT_GUIDANCE["dit"] if guidance is None else float(guidance)
        cfg_scale = guidance
        labels = options.get("class_labels")
        labels = list(range(n_classes)) if labels is None else [int(c) for c in labels]
        if not labels or any(not 0 <= c < n_classes for c in labels):
            raise ValueError(f"class_labels must be a non-empty list in [0, {n_classes})")
        tables = {"class_labels": torch.tensor(labels, device=device)}
        # DiTPipeline's null class is the extra row of the label table (index = n_classes)
        uncond = {"class_labels": torch.tensor([n_classes], device=device)}

    cond_sampler = None
    if family == "dit":
        cond_sampler = _index_sampler(tables, len(labels))
    elif prompts is not None:
        tables = encode(prompts)
        cond_sampler = _index_sampler(tables, len(prompts))
        encoder = encode
    else:
        encoder = encode
    if cond_sampler is not None and (cfg_scale != 1.0 or "guidance" in uncond):
        teacher_defaults = dict(GUIDED_TEACHER_DEFAULTS)

    model = DiffusionModel(
        fn, schedule, prediction, guidance_scale=cfg_scale, uncond=uncond, sample_shape=lat,
        cond_sampler=cond_sampler, decode=_vae_decode(pipe.vae), network_dtype=net_dtype,
        name=name, latent=True, teacher_defaults=teacher_defaults, modules=(denoiser,),
    )
    model.diffusers_info = {  # type: ignore[attr-defined]
        "kind": family, "folder": str(folder), "scheduler_config": dict(sched_cfg),
        "prompts": prompts, "pipeline_class": pipe_cls,
        "unet_class": type(denoiser).__name__, "resolution": [h, w] if family != "dit" else None,
        "guidance": guidance,
    }
    model.device = str(device)  # type: ignore[attr-defined]
    model.prompt_encoder = encoder  # type: ignore[attr-defined]
    return model
