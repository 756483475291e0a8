"""Reference solutions of the probability-flow ODE, to measure solver error against.

The probability-flow ODE of ``x_t = alpha_t x_0 + sigma_t eps`` written in the half log-SNR
``lambda = log(alpha/sigma)`` and the scaled state ``y = x / sigma`` is (DPM-Solver++, eq. 9)::

    dy/dlambda = e^lambda * x0_hat(x, t(lambda)),   x = sigma_{t(lambda)} * y,

where ``x0_hat`` is the model's data prediction (:meth:`DiffusionModel.denoise`). Its
Jacobian in ``y`` is ``alpha * sigma * d x0_hat/dx``, which for a Gaussian-like posterior mean
stays bounded by ~1, so the system is not stiff and an explicit high-order Runge-Kutta method
with tight tolerances gives the trajectory to ~1e-9 relative accuracy. We use scipy's
``solve_ivp(method="DOP853")`` in float64 (8th-order Dormand-Prince with error control).

This is the "exact" solution used by the solver tests; with an analytic model (a Gaussian or
a Gaussian mixture, whose posterior mean is closed-form) it is the exact ODE solution up to the
integration tolerance.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from scipy.integrate import solve_ivp
from torch import Tensor

from ld3_core.models.wrapper import DiffusionModel

__all__ = ["exact_solution"]


def _slice_cond(cond: Mapping[str, Any] | None, i: int, batch: int) -> dict[str, Any] | None:
    """The conditions of sample ``i`` (tensors with a batch dimension are sliced)."""
    if cond is None:
        return None
    out: dict[str, Any] = {}
    for key, value in cond.items():
        if isinstance(value, Tensor) and value.ndim > 0 and value.shape[0] == batch:
            out[key] = value[i : i + 1]
        else:
            out[key] = value
    return out


def _check_time(name: str, value: float, t_min: float, t_max: float) -> None:
    # Allow round-off slack at the ends of the schedule's range.
    slack = 1e-12 * max(1.0, abs(t_max))
    if not np.isfinite(value) or value < t_min - slack or value > t_max + slack:
        raise ValueError(f"{name}={value!r} is outside the schedule range [{t_min}, {t_max}]")


def exact_solution(
    model: DiffusionModel,
    x_T: Tensor,
    t_start: float | None = None,
    t_end: float | None = None,
    cond: Mapping[str, Any] | None = None,
    rtol: float = 1e-9,
    atol: float | None = None,
    per_sample: bool = False,
    max_step: float = np.inf,
) -> Tensor:
    """Integrate the probability-flow ODE of ``model`` from ``t_start`` to ``t_end``.

    Args:
        model: the diffusion model; only ``model.denoise(x, t, cond=cond)`` and
            ``model.schedule`` are used. It must accept float64 inputs (analytic models do; a
            float32 network should be wrapped with ``network_dtype``).
        x_T: (B, ...) states at time ``t_start`` (any float dtype; integrated in float64).
        t_start: start time in the schedule's ``t`` (default ``schedule.t_max``).
        t_end: end time, ``t_end < t_start`` (default ``schedule.t_min``).
        cond: optional conditioning dict passed to ``denoise`` (tensors batched like x_T).
        rtol: relative tolerance of ``solve_ivp`` (DOP853) on ``y = x / sigma``.
        atol: absolute tolerance on ``y``; default ``1e-3 * rtol`` (``y`` is O(1) at the
            start and grows like ``1/sigma`` towards the end, so ``rtol`` dominates).
        per_sample: integrate every sample as its own system (each gets its own step-size
            control, ~B times slower); default integrates the whole batch as one system.
        max_step: largest step in lambda (passed to ``solve_ivp``).

    Returns:
        (B, ...) float64 tensor: the states at ``t_end``, on x_T's device.

    Raises:
        ValueError: on times outside ``[t_min, t_max]``, ``t_end >= t_start``, non-finite or
            unbatched ``x_T``.
        RuntimeError: if the integrator fails.
    """
    sched = model.schedule
    t0 = float(sched.t_max if t_start is None else t_start)
    t1 = float(sched.t_min if t_end is None else t_end)
    _check_time("t_start", t0, sched.t_min, sched.t_max)
    _check_time("t_end", t1, sched.t_min, sched.t_max)
    if not t1 < t0:
        raise ValueError(f"need t_end < t_start, got t_start={t0}, t_end={t1}")
    if not isinstance(x_T, Tensor) or x_T.ndim < 1 or x_T.shape[0] < 1:
        raise ValueError("x_T must be a batched tensor of shape (B, ...)")
    if not bool(torch.isfinite(x_T).all()):
        raise ValueError("x_T contains NaN or inf")
    if atol is None:
        atol = 1e-3 * rtol

    device = x_T.device
    f64 = torch.float64
    t0_t = torch.tensor(t0, dtype=f64)
    t1_t = torch.tensor(t1, dtype=f64)
    lam0 = float(sched.lambda_(t0_t))
    lam1 = float(sched.lambda_(t1_t))
    sigma0 = float(sched.sigma(t0_t))
    sigma1 = float(sched.sigma(t1_t))
    x = x_T.detach().to(device=device, dtype=f64)

    def integrate(xb: Tensor, condb: Mapping[str, Any] | None) -> Tensor:
        shape = xb.shape
        y0 = (xb / sigma0).reshape(-1).cpu().numpy()

        def rhs(lam: float, y: np.ndarray) -> np.ndarray:
            lam_t = torch.tensor(lam, dtype=f64)
            t = sched.t_of_lambda(lam_t)
            xs = torch.from_numpy(y).to(device).reshape(shape) * sched.sigma(t).to(device)
            with torch.no_grad():
                d = model.denoise(xs, t.to(device), cond=condb)
            return (np.exp(lam) * d.to(f64).reshape(-1).cpu().numpy()).astype(np.float64)

        sol = solve_ivp(
            rhs, (lam0, lam1), y0, method="DOP853", rtol=rtol, atol=atol, max_step=max_step
        )
        if not sol.success:
            raise RuntimeError(f"solve_ivp failed: {sol.message}")
        y1 = torch.from_numpy(np.ascontiguousarray(sol.y[:, -1])).to(device)
        return y1.reshape(shape) * sigma1

    if not per_sample:
        return integrate(x, cond)
    batch = x.shape[0]
    return torch.cat([integrate(x[i : i + 1], _slice_cond(cond, i, batch)) for i in range(batch)])
