"""Built-in models, loaded by ``ld3_core.models.load("builtin:<name>", **options)``.

- ``gmm-digits``: Gaussian mixture fitted to scikit-learn's 8x8 digits; x0-prediction with the
  exact posterior mean under any schedule (``schedule=`` option, default VPLinear).
- ``gmm-digits-cond``: the same mixture, class-conditional (``cond={"class_labels": (B,)}``,
  label 10 = unconditional), classifier-free guidance via ``guidance_scale``.
- ``unet-digits``: small convolutional eps-prediction U-Net trained on the digits (VPLinear).

Options: ``schedule`` (a :class:`NoiseSchedule`, a name for :func:`ld3_core.schedules.get`, or
a config dict; GMM models only), ``guidance_scale`` (gmm-digits-cond), ``device``, ``dtype``
(torch dtype or its name, e.g. ``"float64"``), ``weights`` (path to other weights/params).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ld3_core.data import DIGITS_SHAPE
from ld3_core.models.wrapper import DiffusionModel
from ld3_core.schedules import NoiseSchedule, VPLinear, from_config, get

DIGITS_EXTRACTOR = "digits"


def _schedule(value: Any) -> NoiseSchedule:
    if value is None:
        return VPLinear()
    if isinstance(value, NoiseSchedule):
        return value
    if isinstance(value, str):
        return get(value)
    if isinstance(value, dict):
        return from_config(value) if "name" in value else get("vp_linear", **value)
    raise ValueError(f"schedule must be a NoiseSchedule, a name or a config dict, got {value!r}")


def _dtype(value: Any) -> torch.dtype | None:
    if value is None or isinstance(value, torch.dtype):
        return value
    if isinstance(value, str):
        dt = getattr(torch, value.replace("torch.", ""), None)
        if isinstance(dt, torch.dtype) and dt.is_floating_point:
            return dt
    raise ValueError(f"dtype must be a floating torch dtype or its name, got {value!r}")


def _gmm(conditional: bool, name: str, options: dict[str, Any]) -> DiffusionModel:
    from ld3_core.models.gmm import gmm_model, load_digits_gmm

    allowed = {"schedule", "device", "dtype", "weights"}
    if conditional:
        allowed.add("guidance_scale")
    _reject_unknown(name, options, allowed)
    mixture = load_digits_gmm(options.get("weights"))
    model = gmm_model(
        mixture,
        _schedule(options.get("schedule")),
        sample_shape=DIGITS_SHAPE,
        conditional=conditional,
        guidance_scale=float(options.get("guidance_scale", 1.0)),
        name="builtin:" + name,
        dtype=_dtype(options.get("dtype")),
        device=options.get("device", "cpu"),
    )
    model.default_extractor = DIGITS_EXTRACTOR  # type: ignore[attr-defined]
    return model


def gmm_digits(**options: Any) -> DiffusionModel:
    """``builtin:gmm-digits``; options ``schedule``, ``device``, ``dtype``, ``weights``."""
    return _gmm(False, "gmm-digits", options)


def gmm_digits_cond(**options: Any) -> DiffusionModel:
    """``builtin:gmm-digits-cond``; options as gmm-digits plus ``guidance_scale``."""
    return _gmm(True, "gmm-digits-cond", options)


def unet_digits_model(
    net: torch.nn.Module | None = None, **options: Any
) -> DiffusionModel:
    """``builtin:unet-digits`` (eps-prediction on VPLinear); options ``device``, ``dtype``,
    ``weights``, and ``schedule`` (only VPLinear with the training defaults is accepted).
    ``net`` wraps an already built :class:`DigitsUNet` instead of loading weights.
    """
    from ld3_core.models.unet_digits import load_unet_digits

    _reject_unknown("unet-digits", options, {"schedule", "device", "dtype", "weights"})
    schedule = VPLinear()
    if options.get("schedule") is not None:
        wanted = _schedule(options["schedule"])
        if wanted.config() != schedule.config():
            raise ValueError(
                f"unet-digits was trained on {schedule!r}; it cannot run on {wanted!r}"
            )
    dtype = _dtype(options.get("dtype")) or torch.float32
    device = options.get("device", "cpu")
    if net is None:
        net = load_unet_digits(options.get("weights"), device=device, dtype=dtype)
    model = DiffusionModel(
        net, schedule, prediction="eps", sample_shape=DIGITS_SHAPE, network_dtype=dtype,
        name="builtin:unet-digits", device=device,
    )
    model.analytic = False  # type: ignore[attr-defined]
    model.default_extractor = DIGITS_EXTRACTOR  # type: ignore[attr-defined]
    return model


def _reject_unknown(name: str, options: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown} for builtin:{name}; allowed: {sorted(allowed)}"
        )


BUILTIN_MODELS: dict[str, Callable[..., DiffusionModel]] = {
    "gmm-digits": gmm_digits,
    "gmm-digits-cond": gmm_digits_cond,
    "unet-digits": unet_digits_model,
}


def load_builtin(name: str, **options: Any) -> DiffusionModel:
    """Build the built-in model ``name`` (without the ``builtin:`` prefix) with ``options``.

    Raises ``ValueError`` for an unknown name (listing the known ones) or a bad option.
    """
    if name not in BUILTIN_MODELS:
        raise ValueError(
            f"unknown built-in model {name!r}; known: "
            + ", ".join("builtin:" + k for k in sorted(BUILTIN_MODELS))
        )
    return BUILTIN_MODELS[name](**options)


def weights_file(name: str) -> Path:
    """Path of the shipped weights/parameters file of built-in model ``name``."""
    from ld3_core.weights import weights_path

    files = {
        "gmm-digits": "gmm_digits.npz",
        "gmm-digits-cond": "gmm_digits.npz",
        "unet-digits": "unet_digits.pt",
    }
    if name not in files:
        raise ValueError(f"unknown built-in model {name!r}; known: {', '.join(sorted(files))}")
    return weights_path(files[name])
