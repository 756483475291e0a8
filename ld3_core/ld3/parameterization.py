"""LD3's time-step parameterization (paper Sec. 3.3, "Parameterization").

``tau_xi(i)`` maps a free vector ``xi`` (length N+1) to N+1 strictly decreasing times from
``t_max`` to ``t_min``:

    tau'(i) = sum_{n=i}^{N} softmax(xi)[n]
    tau(i)  = (tau'(i) - tau'(N)) / (tau'(0) - tau'(N)) (t_max - t_min) + t_min

Writing ``p = softmax(xi)``, ``tau'(i) - tau'(N) = sum_{n=i}^{N-1} p_n`` and the normalizer is
``sum_{n=0}^{N-1} p_n``: step ``i`` (from ``t_i`` to ``t_{i+1}``) has the size
``(t_max - t_min) p_i / sum_{n<N} p_n``. ``xi_N`` cancels (it is kept only so that ``xi`` has the
paper's length N+1; its gradient is exactly zero here because the formula is evaluated with a
softmax over ``xi[:N]``, which is the same function). The fraction ``u_i`` of the range still
left at step i is a ratio of sums, exactly 1 at i=0 and exactly 0 at i=N, and the times are
formed as ``u t_max + (1 - u) t_min``, so ``t_0 == t_max`` and ``t_N == t_min`` bit for bit.

``space="lambda"`` applies the same construction to the half log-SNR ``lambda`` (from
``lambda(t_max)`` up to ``lambda(t_min)``) and maps back with ``t_of_lambda``; the authors'
public code uses it for EDM-style schedules whose t spans many orders of magnitude. Decoupled
network times (``t^c_i = tau(i) + xi^c_i``) are added in the same space and clamped to the
schedule's range so the network is never fed a time it was not trained on.

Inversion: softmax is shift-invariant, so ``xi_i = log(step_i)`` (i < N) reproduces a given
decreasing time vector up to float64 round-off (~1e-16 relative); ``xi_N`` is set to the mean of
the others.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ld3_core.schedules import NoiseSchedule

SPACES = ("time", "lambda")


def check_space(space: str) -> str:
    """Validate the parameterization space name (``time`` or ``lambda``); returns it."""
    if space not in SPACES:
        raise ValueError(f"space must be one of {SPACES}, got {space!r}")
    return space


def _range(schedule: NoiseSchedule, space: str) -> tuple[float, float]:
    """(start, end) of the parameterized coordinate: t from t_max to t_min, or lambda up."""
    if space == "time":
        return float(schedule.t_max), float(schedule.t_min)
    return float(schedule.lambda_min), float(schedule.lambda_max)


def fractions(xi: Tensor) -> Tensor:
    """Remaining fraction u_i in [0, 1] (u_0 = 1, u_N = 0 exactly) from xi of shape (N+1,)."""
    if xi.ndim != 1 or xi.numel() < 2:
        raise ValueError(f"xi must be a 1-D tensor of length N+1 >= 2, got {tuple(xi.shape)}")
    p = torch.softmax(xi[:-1], dim=0)
    # suffix sums: s_i = sum_{n >= i} p_n for i = 0..N-1, then s_N = 0
    suffix = torch.flip(torch.cumsum(torch.flip(p, [0]), 0), [0])
    suffix = torch.cat([suffix, suffix.new_zeros(1)])
    return suffix / suffix[0]


def _to_times(coord: Tensor, schedule: NoiseSchedule, space: str) -> Tensor:
    if space == "time":
        return coord
    return schedule.t_of_lambda(coord)


def tau(xi: Tensor, schedule: NoiseSchedule, space: str = "time") -> Tensor:
    """Times ``tau_xi(i)``, i = 0..N: a (N+1,) strictly decreasing tensor of t in xi's dtype.

    ``t_0 = t_max`` and ``t_N = t_min`` exactly; differentiable w.r.t. ``xi``.
    """
    check_space(space)
    u = fractions(xi)
    start, end = _range(schedule, space)
    coord = u * start + (1.0 - u) * end
    t = _to_times(coord, schedule, space)
    if space == "lambda":  # t_of_lambda(lambda(t_max)) is exact only to round-off: pin ends
        ends = torch.zeros_like(t)
        ends[0], ends[-1] = schedule.t_max, schedule.t_min
        mask = torch.zeros_like(t, dtype=torch.bool)
        mask[0] = mask[-1] = True
        t = torch.where(mask, ends, t)
    return t


def model_times(
    timesteps: Tensor, xi_c: Tensor, schedule: NoiseSchedule, space: str = "time"
) -> Tensor:
    """Decoupled network times ``t^c_i = tau(i) + xi^c_i`` (shift in ``space``), clamped to
    ``[t_min, t_max]``; a (N+1,) tensor of t. ``timesteps`` is ``tau(xi)``."""
    check_space(space)
    if xi_c.shape != timesteps.shape:
        raise ValueError(f"xi_c must have shape {tuple(timesteps.shape)}, got {tuple(xi_c.shape)}")
    if space == "time":
        return torch.clamp(timesteps + xi_c, schedule.t_min, schedule.t_max)
    lam = schedule.lambda_(timesteps) + xi_c
    lam = torch.clamp(lam, schedule.lambda_min, schedule.lambda_max)
    return torch.clamp(schedule.t_of_lambda(lam), schedule.t_min, schedule.t_max)


def xi_from_timesteps(
    timesteps: Tensor, schedule: NoiseSchedule, space: str = "time"
) -> Tensor:
    """The xi (N+1,) float64 with ``tau(xi) == timesteps`` up to float64 round-off.

    ``timesteps``: (N+1,) strictly decreasing t from t_max to t_min (ends must match the
    schedule's to 1e-9 relative). Raises ``ValueError`` otherwise.
    """
    check_space(space)
    t = torch.as_tensor(timesteps, dtype=torch.float64).detach().cpu()
    if t.ndim != 1 or t.numel() < 2:
        raise ValueError(f"timesteps must be a 1-D tensor of N+1 >= 2 times, got {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()) or not bool((t[1:] < t[:-1]).all()):
        raise ValueError("timesteps must be finite and strictly decreasing")
    span = abs(schedule.t_max - schedule.t_min)
    if abs(float(t[0]) - schedule.t_max) > 1e-9 * max(span, 1.0) or abs(
        float(t[-1]) - schedule.t_min
    ) > 1e-9 * max(schedule.t_min, 1e-12) + 1e-15:
        raise ValueError(
            f"timesteps must start at t_max={schedule.t_max} and end at t_min={schedule.t_min}, "
            f"got {float(t[0])} .. {float(t[-1])}"
        )
    coord = t if space == "time" else schedule.lambda_(t)
    steps = (coord[:-1] - coord[1:]).abs()
    if not bool((steps > 0).all()):
        raise ValueError("timesteps give a zero step in the chosen space")
    logs = torch.log(steps)
    return torch.cat([logs, logs.mean().reshape(1)])


def project_to_ball(x: Tensor, center: Tensor, radius: float) -> Tensor:
    """Project each sample of ``x`` (B, ...) onto the L2 ball ``||x - center|| <= radius``.

    Samples already inside are returned unchanged; those outside are moved radially onto the
    sphere: ``center + radius (x - center) / ||x - center||`` (paper Sec. 3.3). ``radius = 0``
    returns ``center`` (hard teacher forcing). Returns a new tensor of x's shape and dtype.
    """
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    if x.shape != center.shape:
        raise ValueError(f"x {tuple(x.shape)} and center {tuple(center.shape)} differ in shape")
    if radius == 0:
        return center.clone()
    diff = x.double() - center.double()
    norm = diff.flatten(1).norm(dim=1).reshape(-1, *([1] * (x.ndim - 1)))
    outside = norm > radius
    projected = (center.double() + diff * (radius / norm.clamp_min(1e-300))).to(x.dtype)
    return torch.where(outside, projected, x)


def ball_radius(gamma: float, dim: int, nfe: int) -> float:
    """The paper's radius ``r = gamma d / NFE^2`` (in units of the prior std sigma_T)."""
    return float(gamma) * int(dim) / int(nfe) ** 2
