"""Shared pieces of the step-wise solvers: per-step schedule quantities and the Stepper base.

A *stepper* advances the sampling ODE one step at a time from model outputs:
``x_{i+1} = stepper.step(i, x_i, x0_i)`` where ``x0_i`` is the data prediction at ``(x_i, t_i)``.
It keeps whatever history its multistep method needs. All coefficients are computed in
float64 from ``lambda = log(alpha/sigma)`` of the given times and are differentiable in them.
"""

from __future__ import annotations

from torch import Tensor

from ld3_core.schedules import NoiseSchedule


class Stepper:
    """Base class: holds t, lambda, alpha, sigma of every step (float64 tensors of shape (n+1,)).

    Args:
        schedule: the model's noise schedule.
        timesteps: (n+1,) decreasing times t (any float dtype; differentiable).
        orders: (n,) order used at each step (see :func:`ld3_core.solvers.orders.step_orders`).
    """

    def __init__(self, schedule: NoiseSchedule, timesteps: Tensor, orders: list[int]) -> None:
        t = timesteps.double()
        self.n_steps = t.numel() - 1
        if len(orders) != self.n_steps:
            raise ValueError("need one order per step")
        self.orders = list(orders)
        self.t = t
        self.lam = schedule.lambda_(t)
        self.alpha = schedule.alpha(t)
        self.sigma = schedule.sigma(t)
        self.history: list[Tensor] = []  # data predictions x0_0 .. x0_i

    def h(self, i: int) -> Tensor:
        """Step size in lambda of step i (from t_i to t_{i+1}), > 0."""
        return self.lam[i + 1] - self.lam[i]

    def step(self, i: int, x: Tensor, x0: Tensor) -> Tensor:
        """Advance from x_i at t_i (with data prediction x0_i) to x_{i+1} at t_{i+1}."""
        raise NotImplementedError

    def _push(self, x0: Tensor, keep: int) -> None:
        self.history.append(x0)
        if len(self.history) > keep:
            self.history.pop(0)


def coef(value: Tensor, like: Tensor) -> Tensor:
    """A float64 scalar coefficient cast to the dtype/device of the state ``like``."""
    return value.to(dtype=like.dtype, device=like.device)
