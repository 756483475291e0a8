"""Diffusion ODE solvers on an arbitrary decreasing time vector.

``solve(model, x_T, timesteps, solver, order)`` integrates the probability-flow ODE of
``model`` from ``timesteps[0]`` down to ``timesteps[-1]`` with exactly ``len(timesteps) - 1``
model calls. Solvers: ``euler`` (= DDIM), ``dpm++`` (DPM-Solver++ multistep, orders 1-3),
``unipc`` (UniPC bh1/bh2, orders 1-3), ``ipndm`` (orders 1-4, fixed or variable-step
coefficients). Conventions (warm-up, final step, decoupled model times) are documented in
:mod:`ld3_core.solvers.orders` and :class:`ld3_core.models.DiffusionModel`.

For samplers that call the network themselves (e.g. a diffusers scheduler),
:func:`make_stepper` returns the same method as a step-at-a-time object.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ld3_core.models.wrapper import DiffusionModel
from ld3_core.schedules import NoiseSchedule
from ld3_core.solvers.base import Stepper
from ld3_core.solvers.dpm_pp import DPMSolverPPStepper, EulerStepper
from ld3_core.solvers.ipndm import IPNDMStepper
from ld3_core.solvers.orders import (
    SOLVERS,
    canonical_solver,
    check_order,
    max_order,
    step_orders,
    variants,
)
from ld3_core.solvers.remat import rematerialized
from ld3_core.solvers.unipc import UniPCStepper
from ld3_core.solvers.validation import check_model_timesteps, check_state, check_timesteps

__all__ = [
    "SOLVERS",
    "Stepper",
    "make_stepper",
    "max_order",
    "solve",
    "step_orders",
    "variants",
]


def make_stepper(
    schedule: NoiseSchedule,
    timesteps: Tensor,
    solver: str,
    order: int = 2,
    *,
    variant: str | None = None,
    lower_order_final: bool = True,
) -> Stepper:
    """A step-at-a-time solver: ``x_{i+1} = stepper.step(i, x_i, x0_i)`` for i = 0..n-1.

    ``timesteps`` is a validated (n+1,) decreasing tensor of t; ``x0_i`` is the model's data
    prediction at ``(x_i, t_i)``. Call ``step`` in order, once per i, with fresh state.
    """
    name = canonical_solver(solver)
    check_order(name, order)
    allowed = variants(name)
    variant = variant or allowed[0]
    if variant not in allowed:
        raise ValueError(f"solver {name!r} has variants {allowed}, got {variant!r}")
    orders = step_orders(timesteps.numel() - 1, order, lower_order_final)
    if name == "euler":
        return EulerStepper(schedule, timesteps, orders)
    if name == "dpm++":
        return DPMSolverPPStepper(schedule, timesteps, orders, variant=variant)
    if name == "unipc":
        return UniPCStepper(schedule, timesteps, orders, variant=variant)
    return IPNDMStepper(schedule, timesteps, orders, variant=variant)


def solve(
    model: DiffusionModel,
    x_T: Tensor,
    timesteps: Tensor,
    solver: str,
    order: int = 2,
    model_timesteps: Tensor | None = None,
    checkpoint: bool = False,
    *,
    cond: dict[str, Any] | None = None,
    variant: str | None = None,
    lower_order_final: bool = True,
) -> Tensor:
    """Integrate the sampling ODE of ``model`` along ``timesteps`` and return x at the last time.

    Args:
        model: a :class:`DiffusionModel` (its schedule defines t, alpha, sigma, lambda).
        x_T: (B, ...) float32/float64 start state at ``timesteps[0]``.
        timesteps: (n+1,) strictly decreasing times t inside [t_min, t_max] of the schedule.
        solver: ``euler``, ``dpm++``, ``unipc`` or ``ipndm`` (aliases: ``ddim``, ``dpmpp``).
        order: nominal order (euler 1; dpm++/unipc 1-3; ipndm 1-4).
        model_timesteps: optional (n+1,) times fed to the network instead of ``timesteps``
            (LD3's decoupled t^c); only the first n are used.
        checkpoint: recompute each model call during backward (only the x_t chain and the
            data predictions are kept), so backward memory is ~flat in n.
        cond: conditioning passed to the network (class labels, prompt embeddings), batch B.
        variant: ``unipc``: "bh2" (default) or "bh1"; ``ipndm``: "fixed" (default) or
            "variable"; ``dpm++``: "taylor" (default) or "diffusers" (differs at order 3
            only; see :mod:`ld3_core.solvers.dpm_pp`).
        lower_order_final: lower the order of the last steps when n < 15 (diffusers' rule).

    Returns:
        x_0 of x_T's shape and dtype, after exactly n model calls. Differentiable w.r.t.
        ``x_T``, ``timesteps`` and ``model_timesteps``.
    """
    if not isinstance(model, DiffusionModel):
        raise ValueError(f"model must be a DiffusionModel, got {type(model).__name__}")
    check_state(x_T)
    timesteps = check_timesteps(timesteps, model.schedule)
    model_timesteps = check_model_timesteps(model_timesteps, timesteps)
    stepper = make_stepper(
        model.schedule, timesteps, solver, order, variant=variant,
        lower_order_final=lower_order_final,
    )
    times = timesteps.to(dtype=x_T.dtype, device=x_T.device)
    net_times = times if model_timesteps is None else model_timesteps.to(x_T.dtype).to(x_T.device)

    def denoise(x: Tensor, t: Tensor, mt: Tensor, c: dict[str, Any] | None) -> Tensor:
        return model.denoise(x, t, model_t=mt, cond=c)

    # Checkpoint whenever autograd records: gradients may also flow to the network's own
    # parameters, which the inputs' requires_grad flags do not reveal.
    remat_denoise = (rematerialized(model, denoise, cond)
                     if checkpoint and torch.is_grad_enabled() else None)
    x = x_T
    for i in range(stepper.n_steps):
        if remat_denoise is not None:
            x0 = remat_denoise(x, times[i], net_times[i])
        else:
            x0 = denoise(x, times[i], net_times[i], cond)
        x = stepper.step(i, x, x0)
    return x
