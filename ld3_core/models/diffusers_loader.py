"""Load diffusers models (local folder or Hugging Face Hub id) as a :class:`DiffusionModel`.

Three kinds are recognised from the folder layout:

- **pixel**: a ``UNet2DModel`` with its scheduler config: a folder with ``unet/`` and
  ``scheduler/`` sub-folders (as ``DDPMPipeline.save_pretrained`` writes it), or a bare UNet
  folder (``config.json`` + weights) with a ``scheduler_config.json`` next to it, in a
  ``scheduler/`` sub-folder, or given by the ``scheduler=`` option;
- **latent**: the same plus a VAE in ``vae/`` (``AutoencoderKL``) or ``vqvae/`` (as
  ``LDMPipeline`` saves it). The noise schedule lives in latent space; ``model.decode`` maps
  latents to pixels in [-1, 1] (``vae.decode(z / scaling_factor + shift_factor)``);
- **text-to-image**: a ``StableDiffusionPipeline``-style folder (``text_encoder/``,
  ``tokenizer/``, ``unet/`` with a ``UNet2DConditionModel``, ``vae/``, ``scheduler/``). The
  job's ``prompts`` are embedded once at load time; ``model.sample_cond`` draws one prompt
  embedding per sample among them, the unconditional input is the empty-prompt embedding
  and classifier-free guidance (``guidance_scale``) runs as one batched network call.

``StableDiffusion3Pipeline``, ``FluxPipeline``, ``StableDiffusionXLPipeline`` and
``DiTPipeline`` folders go to :mod:`ld3_core.models.families` (flow-matching schedules,
pooled / added conditions, class labels); anything else gets an error naming what is
supported.

For the three kinds above, the noise schedule is a :class:`~ld3_core.schedules.DiscreteVP` built
from the very ``alphas_cumprod`` table the model's own diffusers scheduler computes from its
config (``beta_schedule``, ``trained_betas``, ``rescale_betas_zero_snr``), and the prediction
type comes from its ``prediction_type`` (``epsilon`` / ``sample`` / ``v_prediction`` -> ``eps``
/ ``x0`` / ``v``). The network is fed the fractional discrete index ``N t - 1``
(:meth:`DiscreteVP.network_time`), the index convention of diffusers' schedulers.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ld3_core.extras import require
from ld3_core.models.wrapper import DiffusionModel
from ld3_core.schedules import DiscreteVP

PREDICTION_TYPES = {"epsilon": "eps", "sample": "x0", "v_prediction": "v",
                    "flow_prediction": "flow"}
KINDS = ("pixel", "latent", "text-to-image")
# Teacher settings of the LD3 paper (App. B.1.3) for guided text-to-image models.
GUIDED_TEACHER_DEFAULTS = {"solver": "unipc", "order": 2, "nfe": 10}
DEFAULT_GUIDANCE_SCALE = 7.5

_OPTIONS = ("device", "dtype", "guidance_scale", "prompts", "scheduler", "revision",
            "local_files_only", "cache_dir", "name")
# options of the SD3 / FLUX / SDXL / DiT families only (ld3_core.models.families)
_FAMILY_OPTIONS = ("resolution", "max_sequence_length", "class_labels")
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
           "fp16": torch.float16, "half": torch.float16, "bfloat16": torch.bfloat16,
           "bf16": torch.bfloat16, "float64": torch.float64, "fp64": torch.float64}
_HUB_PATTERNS = ["*.json", "*/*.json", "*.txt", "*/*.txt", "*/*.model",
                 "*.safetensors", "*/*.safetensors"]
_HUB_PIPELINE_PATTERNS = ["model_index.json", "*/*.json", "*/*.txt", "*/*.model",
                          "*/*.safetensors"]
_HUB_IGNORE = ["safety_checker/*", "feature_extractor/*", "*.fp16.*", "*.ckpt", "*non_ema*",
               "*.ema.*"]


# -- public helpers ---------------------------------------------------------------------------
def parse_dtype(dtype: Any) -> torch.dtype | None:
    """A torch dtype from None, a torch.dtype or a name (``"float16"``, ``"bf16"``, ...)."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    key = str(dtype).lower().removeprefix("torch.")
    if key not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(set(_DTYPES))}")
    return _DTYPES[key]


def schedule_from_scheduler_config(config: dict[str, Any]) -> DiscreteVP:
    """The :class:`DiscreteVP` of a diffusers scheduler config (dict or FrozenDict).

    ``alphas_cumprod`` is taken from the scheduler class the config names (falling back to
    ``DDPMScheduler``), so beta schedules, ``trained_betas`` and zero-SNR rescaling match
    what that scheduler uses; a zero-SNR last entry (alphas_cumprod = 0) is replaced by
    2**-24 as diffusers does. Raises ValueError for configs that are not discrete VP.
    """
    diffusers = require("diffusers", "a diffusers scheduler config")

    cfg = {k: v for k, v in dict(config).items()}
    if cfg.get("use_flow_sigmas") or cfg.get("prediction_type") == "flow_prediction" or str(
            cfg.get("_class_name", "")).startswith("FlowMatch"):
        raise ValueError("a flow-matching scheduler config has no discrete VP table; flow "
                         "models load as StableDiffusion3Pipeline / FluxPipeline folders "
                         "(ld3_core.models.families.flow_schedule_from_config)")
    cls = getattr(diffusers, str(cfg.get("_class_name", "")), None)
    if cls is None or not hasattr(cls, "from_config"):
        cls = diffusers.DDPMScheduler
    try:
        sched = cls.from_config(cfg)
    except Exception as exc:  # noqa: BLE001 - any config error becomes a ValueError
        raise ValueError(f"bad scheduler config: {exc}") from exc
    ac = getattr(sched, "alphas_cumprod", None)
    if ac is None:
        sched = diffusers.DDPMScheduler.from_config(cfg)
        ac = sched.alphas_cumprod
    ac = torch.as_tensor(ac).double().clone()
    if float(ac[-1]) <= 0.0:
        ac[-1] = 2.0**-24
    return DiscreteVP(ac)


def prediction_of(config: dict[str, Any]) -> str:
    """``eps`` / ``x0`` / ``v`` from a scheduler config's ``prediction_type`` (default epsilon)."""
    ptype = dict(config).get("prediction_type", "epsilon") or "epsilon"
    if ptype not in PREDICTION_TYPES:
        raise ValueError(
            f"unsupported prediction_type {ptype!r}; supported: {', '.join(PREDICTION_TYPES)}"
        )
    return PREDICTION_TYPES[ptype]


def resolve_folder(
    path_or_hub_id: str,
    revision: str | None = None,
    local_files_only: bool | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> Path:
    """A local folder for ``path_or_hub_id``: the folder itself, or a Hub snapshot.

    Hub ids are downloaded with ``huggingface_hub.snapshot_download`` (configs, tokenizer
    files and ``.safetensors`` weights, ``.bin`` where a component has no safetensors; no
    safety checker) into ``cache_dir`` (default: the Hugging Face cache). Offline
    (``HF_HUB_OFFLINE=1`` or ``local_files_only=True``) only that cache is used. Raises
    ValueError with the reason when neither works, ModuleNotFoundError (naming what to
    install) for a hub id without huggingface_hub.
    """
    if not isinstance(path_or_hub_id, str) or not path_or_hub_id.strip():
        raise ValueError("model id must be a non-empty string")
    path = Path(path_or_hub_id).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ValueError(f"{path_or_hub_id!r} is a file; give a diffusers model folder")
    looks_like_path = path_or_hub_id.startswith((".", "/", "~", os.sep))
    if looks_like_path or not _HUB_ID.match(path_or_hub_id):
        raise ValueError(f"model folder {path_or_hub_id!r} does not exist")
    offline = bool(local_files_only) or os.environ.get("HF_HUB_OFFLINE", "").lower() in (
        "1", "true", "yes", "on")
    snapshot_download = require("huggingface_hub", "loading a hub id").snapshot_download
    try:
        # pipeline repos (model_index.json) often also ship single-file checkpoints of many GB
        # at the top level (sd3_medium.safetensors, flux1-dev.safetensors, ...): only the
        # component sub-folders are fetched for them
        first = Path(snapshot_download(
            path_or_hub_id, revision=revision, allow_patterns=["model_index.json"],
            local_files_only=offline, cache_dir=cache_dir,
        ))
        patterns = _HUB_PIPELINE_PATTERNS if (first / "model_index.json").is_file() \
            else _HUB_PATTERNS
        folder = Path(snapshot_download(
            path_or_hub_id, revision=revision, allow_patterns=patterns,
            ignore_patterns=_HUB_IGNORE, local_files_only=offline, cache_dir=cache_dir,
        ))
        # older repos ship PyTorch .bin weights only: fetch those where no safetensors came
        missing = [p.parent.relative_to(folder).as_posix() for p in folder.glob("**/config.json")
                   if not any(p.parent.glob("*.safetensors"))]
        if missing:
            folder = Path(snapshot_download(
                path_or_hub_id, revision=revision, local_files_only=offline, cache_dir=cache_dir,
                allow_patterns=[f"{m}/*.bin" if m != "." else "*.bin" for m in missing],
                ignore_patterns=_HUB_IGNORE,
            ))
    except Exception as exc:  # noqa: BLE001 - network/cache errors of any kind
        where = "the local Hugging Face cache" if offline else "the Hugging Face Hub"
        raise ValueError(
            f"cannot load model {path_or_hub_id!r}: it is not a local folder and {where} does "
            f"not provide it ({type(exc).__name__}: {exc}). "
            + ("Hub access is off (HF_HUB_OFFLINE / local_files_only); download it first on a "
               "machine with network (`huggingface-cli download "
               f"{path_or_hub_id}`) or pass a local folder."
               if offline else "Check the id and the network, or pass a local folder.")
        ) from exc
    return folder


# -- folder inspection ------------------------------------------------------------------------
def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from exc


def _class_name(folder: Path) -> str | None:
    cfg = folder / "config.json"
    return _read_json(cfg).get("_class_name") if cfg.is_file() else None


def _scheduler_config(folder: Path, unet_dir: Path, override: Any) -> dict[str, Any]:
    if override is not None:
        if isinstance(override, dict):
            return dict(override)
        p = Path(override)
        p = p / "scheduler_config.json" if p.is_dir() else p
        if not p.is_file():
            raise ValueError(f"scheduler config {override!r} not found")
        return _read_json(p)
    for cand in (folder / "scheduler" / "scheduler_config.json",
                 folder / "scheduler_config.json",
                 unet_dir / "scheduler_config.json",
                 unet_dir.parent / "scheduler" / "scheduler_config.json"):
        if cand.is_file():
            return _read_json(cand)
    raise ValueError(
        f"no scheduler config found for {folder}: expected scheduler/scheduler_config.json "
        "(or pass scheduler=<path or dict>)"
    )


def inspect_folder(folder: Path, scheduler: Any = None) -> dict[str, Any]:
    """Describe a diffusers folder: kind, component folders and the scheduler config.

    Returns a dict with ``kind`` (pixel / latent / text-to-image), ``unet``, ``vae``,
    ``text_encoder``, ``tokenizer`` (Paths or None) and ``scheduler_config``.
    Raises ValueError when the folder holds no supported UNet.
    """
    folder = Path(folder)
    if (folder / "unet").is_dir():
        unet_dir = folder / "unet"
    elif _class_name(folder) in ("UNet2DModel", "UNet2DConditionModel"):
        unet_dir = folder
    else:
        found = _class_name(folder) or (
            _read_json(folder / "model_index.json").get("_class_name")
            if (folder / "model_index.json").is_file() else None)
        raise ValueError(
            f"{folder} holds no UNet2DModel / UNet2DConditionModel "
            f"(found {found or 'no diffusers config'}); supported: a unet/ + scheduler/ folder, "
            "a latent model with vae/ or vqvae/, a StableDiffusionPipeline folder, a bare UNet, "
            "or StableDiffusionXLPipeline / StableDiffusion3Pipeline / FluxPipeline / "
            "DiTPipeline folders"
        )
    unet_cls = _class_name(unet_dir)
    if unet_cls not in ("UNet2DModel", "UNet2DConditionModel"):
        raise ValueError(f"unsupported denoiser class {unet_cls!r} in {unet_dir}")
    vae = next((folder / n for n in ("vae", "vqvae") if (folder / n).is_dir()), None)
    text_encoder = folder / "text_encoder" if (folder / "text_encoder").is_dir() else None
    tokenizer = folder / "tokenizer" if (folder / "tokenizer").is_dir() else None
    if unet_cls == "UNet2DConditionModel":
        if text_encoder is None or tokenizer is None:
            raise ValueError(
                f"{folder}: a UNet2DConditionModel needs text_encoder/ and tokenizer/ "
                "(StableDiffusionPipeline layout) to build its prompt embeddings"
            )
        if vae is None:
            raise ValueError(f"{folder}: a text-to-image model needs a vae/ folder")
        kind = "text-to-image"
    else:
        kind = "latent" if vae is not None else "pixel"
    return {
        "kind": kind, "unet": unet_dir, "unet_class": unet_cls, "vae": vae,
        "text_encoder": text_encoder, "tokenizer": tokenizer,
        "scheduler_config": _scheduler_config(folder, unet_dir, scheduler),
    }


# -- component loading ------------------------------------------------------------------------
def _load_diffusers_module(folder: Path, dtype: torch.dtype | None, device: Any) -> Any:
    diffusers = require("diffusers", "a diffusers model")

    name = _class_name(folder)
    cls = getattr(diffusers, str(name), None)
    if cls is None:
        raise ValueError(f"unknown diffusers class {name!r} in {folder}")
    try:
        module = cls.from_pretrained(folder, torch_dtype=dtype) if dtype else \
            cls.from_pretrained(folder)
    except (OSError, ValueError, RuntimeError) as exc:
        raise ValueError(f"cannot load {name} from {folder}: {exc}") from exc
    return module.to(device).eval().requires_grad_(False)


def _check_unet(unet: Any) -> None:
    cfg = unet.config
    emb = getattr(cfg, "time_embedding_type", "positional")
    if emb not in ("positional",):
        raise ValueError(
            f"UNet time_embedding_type {emb!r} is not supported (needs a continuous index "
            "input; 'fourier' models are VE/score-SDE, 'learned' takes integer steps only)"
        )
    if getattr(cfg, "addition_embed_type", None) is not None:
        raise ValueError("UNets with addition_embed_type (SDXL-style added conditions) need "
                         "their pipeline folder (StableDiffusionXLPipeline: unet/, text_encoder/, "
                         "text_encoder_2/, tokenizers, vae/, scheduler/)")
    if getattr(cfg, "time_cond_proj_dim", None) is not None:
        raise ValueError("UNets with time_cond_proj_dim (guidance-distilled LCM) are not "
                         "supported")


def _sample_shape(unet: Any) -> tuple[int, ...]:
    size = unet.config.sample_size
    hw = (int(size), int(size)) if isinstance(size, int) else tuple(int(s) for s in size)
    return (int(unet.config.in_channels), *hw)


def _unet_fn(unet: Any, in_channels: int):
    """fn(x, t_in, **cond) calling the UNet on its device; output cast back to x's device."""
    device = unet.device

    def fn(x: Tensor, t_in: Tensor, **cond: Any) -> Tensor:
        kwargs = {k: (v.to(device) if isinstance(v, Tensor) else v) for k, v in cond.items()}
        if "encoder_hidden_states" in kwargs:
            kwargs["encoder_hidden_states"] = kwargs["encoder_hidden_states"].to(unet.dtype)
        out = unet(x.to(device), t_in.to(device), return_dict=False, **kwargs)[0]
        if out.shape[1] == 2 * in_channels:  # learned variance: keep the mean part
            out = out[:, :in_channels]
        return out.to(x.device)

    return fn


def _vae_decode(vae: Any):
    """decode(z): latents (B, C, h, w) -> pixels (B, 3, H, W) in [-1, 1], z's dtype/device."""
    scaling = float(getattr(vae.config, "scaling_factor", 1.0) or 1.0)
    shift = getattr(vae.config, "shift_factor", None)
    shift = float(shift) if shift is not None else 0.0

    def decode(z: Tensor) -> Tensor:
        zin = (z / scaling + shift).to(device=vae.device, dtype=vae.dtype)
        img = vae.decode(zin, return_dict=False)[0]
        return img.clamp(-1.0, 1.0).to(device=z.device, dtype=z.dtype)

    return decode


class PromptEncoder:
    """Prompt -> CLIP embedding exactly as ``StableDiffusionPipeline.encode_prompt`` does it.

    ``__call__(prompts: list[str]) -> Tensor (P, L, D)``: pad/truncate to the tokenizer's
    ``model_max_length``, last hidden state of the text encoder (no clip-skip).
    """

    def __init__(self, tokenizer: Any, text_encoder: Any) -> None:
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder

    @torch.no_grad()
    def __call__(self, prompts: list[str], max_length: int | None = None) -> Tensor:
        tok = self.tokenizer(
            list(prompts), padding="max_length",
            max_length=max_length or self.tokenizer.model_max_length,
            truncation=True, return_tensors="pt",
        )
        device = self.text_encoder.device
        mask = None
        if getattr(self.text_encoder.config, "use_attention_mask", False):
            mask = tok.attention_mask.to(device)
        return self.text_encoder(tok.input_ids.to(device), attention_mask=mask)[0]


def _load_text_stack(info: dict[str, Any], dtype: torch.dtype | None, device: Any):
    transformers = require("transformers", "a text-to-image model's text encoder")
    te_cfg = _read_json(info["text_encoder"] / "config.json")
    arch = (te_cfg.get("architectures") or ["CLIPTextModel"])[0]
    te_cls = getattr(transformers, arch, None) or transformers.CLIPTextModel
    tok_cls = transformers.AutoTokenizer
    tok_cfg_path = info["tokenizer"] / "tokenizer_config.json"
    if tok_cfg_path.is_file():
        tok_name = _read_json(tok_cfg_path).get("tokenizer_class")
        tok_cls = getattr(transformers, str(tok_name), None) or tok_cls
    try:
        kw = {"dtype": dtype} if dtype is not None else {}
        text_encoder = te_cls.from_pretrained(info["text_encoder"], **kw)
        tokenizer = tok_cls.from_pretrained(info["tokenizer"])
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot load the text encoder / tokenizer: {exc}") from exc
    text_encoder = text_encoder.to(device).eval().requires_grad_(False)
    return PromptEncoder(tokenizer, text_encoder)


def _check_prompts(prompts: Any) -> list[str] | None:
    if prompts is None:
        return None
    if isinstance(prompts, str):
        prompts = [prompts]
    if not isinstance(prompts, (list, tuple)) or not prompts or not all(
        isinstance(p, str) for p in prompts
    ):
        raise ValueError("prompts must be a non-empty list of strings")
    return list(prompts)


def _prompt_sampler(embeds: Tensor):
    """cond_sampler(n, generator): one prompt embedding per sample, drawn uniformly."""

    def sampler(n: int, generator: torch.Generator | None = None) -> dict[str, Any]:
        idx = torch.randint(embeds.shape[0], (n,), generator=generator)
        return {"encoder_hidden_states": embeds[idx.to(embeds.device)]}

    return sampler


def _class_sampler(num_classes: int, device: Any):
    def sampler(n: int, generator: torch.Generator | None = None) -> dict[str, Any]:
        labels = torch.randint(num_classes, (n,), generator=generator)
        return {"class_labels": labels.to(device)}

    return sampler


# -- entry point ------------------------------------------------------------------------------
def load_diffusers(path_or_hub_id: str, **options: Any) -> DiffusionModel:
    """Load a diffusers model folder or hub id as a :class:`DiffusionModel`.

    Args:
        path_or_hub_id: local folder (see the module docstring for layouts) or a Hugging Face
            Hub id such as ``"google/ddpm-cifar10-32"`` (needs network or the local cache).
        **options: ``device`` (default "cpu"), ``dtype`` (network dtype, e.g. "float16"),
            ``guidance_scale`` (CFG weight w; text-to-image default 7.5; 1 = no guidance),
            ``prompts`` (list of str, text-to-image only), ``scheduler`` (path or dict of a
            scheduler config, overrides the folder's), ``revision`` / ``local_files_only`` /
            ``cache_dir`` (hub), ``name`` (model id to record; default ``path_or_hub_id``).

    Returns:
        A DiffusionModel with a ``DiscreteVP`` schedule (t in [1/N, 1], network input
        ``N t - 1``), ``sample_shape`` (C, H, W) from the UNet config, ``latent=True`` and a
        ``decode`` for VAE models, prompt conditioning + CFG for text-to-image models, a
        ``diffusers_info`` dict (kind, folder, scheduler_config, prompts) and
        ``prompt_encoder`` (text-to-image: ``list[str] -> (P, L, D)`` embeddings, else None)
        and ``device`` (the device string the networks live on).

    Raises:
        ValueError: unknown options, a missing/unsupported folder, an unreachable hub id, bad
            prompts, or guidance on a model without an unconditional input.
        MissingExtraError: diffusers is not installed (the ``diffusers`` extra).
    """
    require("diffusers", f"loading the diffusers model {path_or_hub_id!r}")
    from ld3_core.models.families import detect_family, load_family

    unknown = sorted(set(options) - set(_OPTIONS) - set(_FAMILY_OPTIONS))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown}; accepted: "
                         f"{', '.join(_OPTIONS + _FAMILY_OPTIONS)}")
    device = torch.device(options.get("device") or "cpu")
    dtype = parse_dtype(options.get("dtype"))
    prompts = _check_prompts(options.get("prompts"))
    folder = resolve_folder(path_or_hub_id, options.get("revision"),
                            options.get("local_files_only"), options.get("cache_dir"))
    family = detect_family(folder)
    if family is not None:
        return load_family(family, folder, options, dtype=dtype, device=device,
                           name=str(options.get("name") or path_or_hub_id))
    given = sorted(set(options) & set(_FAMILY_OPTIONS))
    if given:
        raise ValueError(f"option(s) {given} apply to SD3 / FLUX / SDXL / DiT folders only")
    info = inspect_folder(folder, options.get("scheduler"))
    kind = info["kind"]
    sched_cfg = info["scheduler_config"]
    schedule = schedule_from_scheduler_config(sched_cfg)
    prediction = prediction_of(sched_cfg)
    if prompts is not None and kind != "text-to-image":
        raise ValueError(f"prompts were given but {path_or_hub_id!r} is a {kind} model")

    unet = _load_diffusers_module(info["unet"], dtype, device)
    _check_unet(unet)
    num_train = int(sched_cfg.get("num_train_timesteps", schedule.num_steps))
    if num_train != schedule.num_steps:
        raise ValueError(f"scheduler num_train_timesteps {num_train} != table length "
                         f"{schedule.num_steps}")
    shape = _sample_shape(unet)
    fn = _unet_fn(unet, shape[0])
    decode = _vae_decode(_load_diffusers_module(info["vae"], dtype, device)) \
        if info["vae"] is not None else None

    guidance = options.get("guidance_scale")
    uncond: dict[str, Any] | None = None
    cond_sampler = None
    teacher_defaults: dict[str, Any] = {}
    encoder = None
    if kind == "text-to-image":
        encoder = _load_text_stack(info, dtype, device)
        guidance = DEFAULT_GUIDANCE_SCALE if guidance is None else float(guidance)
        empty = encoder([""])
        uncond = {"encoder_hidden_states": empty}
        if prompts is not None:
            cond_sampler = _prompt_sampler(encoder(prompts, max_length=empty.shape[1]))
            if guidance != 1.0:
                teacher_defaults = dict(GUIDED_TEACHER_DEFAULTS)
    else:
        guidance = 1.0 if guidance is None else float(guidance)
        n_classes = getattr(unet.config, "num_class_embeds", None)
        if n_classes:
            cond_sampler = _class_sampler(int(n_classes), device)
        if guidance != 1.0:
            raise ValueError(
                f"guidance_scale={guidance} needs an unconditional input; {kind} UNet2DModel "
                "folders have none (use guidance_scale=1)"
            )

    model = DiffusionModel(
        fn, schedule, prediction,
        guidance_scale=guidance, uncond=uncond, sample_shape=shape,
        cond_sampler=cond_sampler, decode=decode, network_dtype=unet.dtype,
        name=str(options.get("name") or path_or_hub_id), latent=kind != "pixel",
        teacher_defaults=teacher_defaults, modules=(unet,),
    )
    model.diffusers_info = {  # type: ignore[attr-defined]
        "kind": kind, "folder": str(folder), "scheduler_config": dict(sched_cfg),
        "prompts": prompts, "unet_class": info["unet_class"],
    }
    model.device = str(device)  # type: ignore[attr-defined]  # where teacher/LD3 run it
    # text-to-image: prompts -> (P, L, D) embeddings, for conditions of your own choosing
    model.prompt_encoder = encoder if kind == "text-to-image" else None  # type: ignore[attr-defined]
    return model
