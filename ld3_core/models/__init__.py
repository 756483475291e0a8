"""Model wrappers and the one loading function for every model id.

``load("builtin:<name>")`` returns a built-in model (see :mod:`ld3_core.models.builtin`);
any other id is a local diffusers folder or a hub id (see
:mod:`ld3_core.models.diffusers_loader`).
"""

from __future__ import annotations

from typing import Any

from ld3_core.models.wrapper import PREDICTIONS, DiffusionModel

__all__ = ["DiffusionModel", "PREDICTIONS", "apply_overrides", "builtin_ids", "load"]

BUILTIN_PREFIX = "builtin:"


def builtin_ids() -> list[str]:
    """Ids of the models that ship with ld3_core (``builtin:...``)."""
    from ld3_core.models.builtin import BUILTIN_MODELS

    return [BUILTIN_PREFIX + name for name in sorted(BUILTIN_MODELS)]


def load(model_id: str, **options: Any) -> DiffusionModel:
    """Load a model by id and return it as a :class:`DiffusionModel`.

    ``model_id`` is ``builtin:<name>`` (shipped with ld3_core), a local diffusers folder, or a
    hub id (needs network access and the ``diffusers`` package). ``options`` go to the loader
    (e.g. ``guidance_scale``, ``prompts``, ``device``, ``dtype``). Raises ``ValueError`` for
    an unknown id.
    """
    if not isinstance(model_id, str) or not model_id:
        raise ValueError("model_id must be a non-empty string")
    if model_id.startswith(BUILTIN_PREFIX):
        from ld3_core.models.builtin import load_builtin

        return load_builtin(model_id[len(BUILTIN_PREFIX):], **options)
    from ld3_core.models.diffusers_loader import load_diffusers

    return load_diffusers(model_id, **options)


def apply_overrides(
    model: DiffusionModel,
    *,
    noise_schedule: dict[str, Any] | None = None,
    prediction: str | None = None,
) -> DiffusionModel:
    """Replace a loaded model's noise schedule and/or prediction type; returns the model.

    ``noise_schedule``: a ``NoiseSchedule.config()`` dict (e.g. from a catalog entry); the
    network's time input follows the new schedule when it was the old schedule's
    ``network_time``. ``prediction``: one of :data:`PREDICTIONS` (``eps``, ``x0``, ``v``,
    ``flow``). Raises ``ValueError`` on an unknown prediction or schedule config.
    """
    if prediction is not None and prediction not in PREDICTIONS:
        raise ValueError(f"prediction must be one of {', '.join(PREDICTIONS)}, got "
                         f"{prediction!r}")
    if noise_schedule is not None:
        from ld3_core.schedules import from_config

        old = model.schedule
        model.schedule = from_config(dict(noise_schedule))
        if model.time_input == old.network_time:
            model.time_input = model.schedule.network_time
    if prediction is not None:
        model.prediction = prediction
    return model
