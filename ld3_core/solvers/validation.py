"""Input checks of the solvers: clear ``ValueError`` messages instead of silent garbage."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ld3_core.schedules import NoiseSchedule

_REL_TOL = 1e-6  # float32 round-off of the interval ends


def check_state(x: Tensor) -> None:
    """x must be a finite floating tensor with a batch dimension: (B, ...)."""
    if not isinstance(x, Tensor):
        raise ValueError(f"x_T must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"x_T must be floating point, got {x.dtype}")
    if x.ndim < 1 or x.shape[0] < 1:
        raise ValueError(f"x_T must have a non-empty batch dimension, got shape {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x_T contains NaN or infinite values")


def check_timesteps(timesteps: Tensor, schedule: NoiseSchedule) -> Tensor:
    """Validate a (n+1,) strictly decreasing time vector inside [t_min, t_max]; returns it."""
    if not isinstance(timesteps, Tensor):
        timesteps = torch.as_tensor(timesteps, dtype=torch.float64)
    if not timesteps.is_floating_point():
        timesteps = timesteps.double()
    if timesteps.ndim != 1 or timesteps.numel() < 2:
        raise ValueError(
            f"timesteps must be a 1-D tensor of n+1 >= 2 times, got shape {tuple(timesteps.shape)}"
        )
    t = timesteps.detach()
    if not bool(torch.isfinite(t).all()):
        raise ValueError("timesteps contain NaN or infinite values")
    if not bool((t[1:] < t[:-1]).all()):
        raise ValueError("timesteps must be strictly decreasing (from t_max towards t_min)")
    tol = _REL_TOL * max(abs(schedule.t_max), 1.0)
    if float(t[0]) > schedule.t_max + tol or float(t[-1]) < schedule.t_min - tol * 1e-3 - 1e-12:
        raise ValueError(
            f"timesteps must lie in [t_min, t_max] = [{schedule.t_min}, {schedule.t_max}], "
            f"got [{float(t[-1])}, {float(t[0])}]"
        )
    return timesteps


def check_model_timesteps(model_timesteps: Tensor | None, timesteps: Tensor) -> Tensor | None:
    """Decoupled network times: None, or finite and of the same length as ``timesteps``."""
    if model_timesteps is None:
        return None
    if not isinstance(model_timesteps, Tensor):
        model_timesteps = torch.as_tensor(model_timesteps, dtype=torch.float64)
    if model_timesteps.shape != timesteps.shape:
        raise ValueError(
            f"model_timesteps must have the shape of timesteps {tuple(timesteps.shape)}, "
            f"got {tuple(model_timesteps.shape)}"
        )
    if not bool(torch.isfinite(model_timesteps.detach()).all()):
        raise ValueError("model_timesteps contain NaN or infinite values")
    return model_timesteps


def check_sampling_target(model: Any, solver: Any, order: Any, nfe: Any, who: str) -> str:
    """Check what a schedule is learned for: a :class:`DiffusionModel` with a ``sample_shape``
    (``who`` draws x_T from it), a known ``solver`` at a supported ``order``, ``nfe`` >= 1.

    Returns the canonical solver name; raises ``ValueError`` naming the first bad argument.
    """
    from ld3_core.models.wrapper import DiffusionModel
    from ld3_core.solvers.orders import canonical_solver, check_order

    if not isinstance(model, DiffusionModel):
        raise ValueError(f"model must be a DiffusionModel, got {type(model).__name__}")
    if model.sample_shape is None:
        raise ValueError(f"model has no sample_shape; {who} needs to draw x_T")
    name = canonical_solver(solver)
    if isinstance(nfe, bool) or not isinstance(nfe, int) or nfe < 1:
        raise ValueError(f"nfe must be an integer >= 1, got {nfe!r}")
    check_order(name, order)
    return name
