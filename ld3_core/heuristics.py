"""Heuristic time discretizations (the baselines of the LD3 paper, App. B.2, and its peers).

Each returns ``nfe + 1`` float64 times ``t_0 = t_max > t_1 > ... > t_N = t_min`` in the
schedule's continuous time ``t`` (u = i/N):

- ``uniform``:   ``t_i = t_max + u (t_min - t_max)``
- ``quadratic``: ``t_i = (sqrt(t_max) + u (sqrt(t_min) - sqrt(t_max)))^2``: uniform in
  ``sqrt(t)``, DPM-Solver's ``time_quadratic`` (``t_order = 2``), the curve DPM-Solver(++),
  UniPC, the authors' trust-region code (``quad``) and LD3's code use under this name
- ``edm``:       ``s_i = (s_max^(1/rho) + u (s_min^(1/rho) - s_max^(1/rho)))^rho``, rho = 7,
  with ``s = sigma_t / alpha_t``, then ``t_i = t(lambda = -log s_i)``
- ``logsnr``:    ``lambda_i`` uniform between ``lambda(t_max)`` and ``lambda(t_min)``

Extra (accepted by :func:`discretize`, not in :data:`HEURISTICS`):

- ``quadratic_tmin``: ``t_i = t_min + (1 - u)^2 (t_max - t_min)``: ``t - t_min`` quadratic in
  the step index (eq. 8 of the LD3 paper's App. B.2 with rho = 2; named ``quadratic`` in
  earlier versions). Both quadratics crowd the steps near t_min; this one puts
  the late steps closer to t_min (e.g. VPLinear, N = 4: t_3 = 0.0634 vs 0.0749).

:data:`HEURISTICS` are the four baselines every job compares (uniform, quadratic, edm,
logsnr); :data:`NAMES` everything :func:`discretize` accepts on any schedule;
:data:`FLOW_HEURISTICS` the ones that need a flow-matching schedule:

- ``shifted_uniform`` (flow matching only, the default grid of SD3 / FLUX pipelines):
  ``u_i`` uniform between ``unshift(t_max)`` and ``unshift(t_min)``, ``t_i = shift(u_i)``
  (:meth:`ld3_core.schedules.FlowMatch.shift_time`)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ld3_core.schedules import NoiseSchedule
from ld3_core.spec import FLOW_HEURISTICS, HEURISTICS
from ld3_core.spec import HEURISTIC_NAMES as NAMES

__all__ = ["FLOW_HEURISTICS", "HEURISTICS", "NAMES", "all_heuristics", "discretize",
           "heuristic_names"]


def _grid(nfe: int) -> Tensor:
    return torch.arange(nfe + 1, dtype=torch.float64) / nfe


def _pin_ends(t: Tensor, schedule: NoiseSchedule) -> Tensor:
    # Round trips through lambda are exact to ~1e-16; make the endpoints bit-exact.
    t = t.clone()
    t[0], t[-1] = schedule.t_max, schedule.t_min
    return t


def discretize(name: str, nfe: int, schedule: NoiseSchedule, rho: float = 7.0) -> Tensor:
    """Heuristic time steps for ``nfe`` steps: a (nfe+1,) float64 tensor of decreasing t.

    ``name`` is one of :data:`NAMES` (``uniform``, ``quadratic``, ``edm``, ``logsnr``,
    ``quadratic_tmin``); ``rho`` only affects ``edm``. Raises ``ValueError`` on an unknown
    name or ``nfe < 1``.
    """
    if isinstance(nfe, bool) or not isinstance(nfe, int) or nfe < 1:
        raise ValueError(f"nfe must be a positive integer, got {nfe!r}")
    u = _grid(nfe)
    t_min, t_max = schedule.t_min, schedule.t_max
    if name == "uniform":
        return _pin_ends(t_max + u * (t_min - t_max), schedule)
    if name == "quadratic":
        root = math.sqrt(t_max) + u * (math.sqrt(t_min) - math.sqrt(t_max))
        return _pin_ends(root**2, schedule)
    if name == "quadratic_tmin":
        return _pin_ends((1.0 - u) ** 2 * (t_max - t_min) + t_min, schedule)
    if name == "edm":
        s_max = float(schedule.kd_sigma(torch.tensor(t_max, dtype=torch.float64)))
        s_min = float(schedule.kd_sigma(torch.tensor(t_min, dtype=torch.float64)))
        s = (s_max ** (1 / rho) + u * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho
        return _pin_ends(schedule.t_of_lambda(-torch.log(s)), schedule)
    if name == "logsnr":
        lam = schedule.lambda_min + u * (schedule.lambda_max - schedule.lambda_min)
        return _pin_ends(schedule.t_of_lambda(lam), schedule)
    if name == "shifted_uniform":
        return _pin_ends(_shifted_uniform(u, schedule), schedule)
    raise ValueError(
        f"unknown heuristic {name!r}; known: {', '.join(NAMES + FLOW_HEURISTICS)}")


def _shifted_uniform(u: Tensor, schedule: NoiseSchedule) -> Tensor:
    if not hasattr(schedule, "shift_time"):
        raise ValueError(f"heuristic 'shifted_uniform' needs a flow-matching schedule, "
                         f"got {type(schedule).__name__}")
    u_max = float(schedule.unshift_time(schedule.t_max))
    u_min = float(schedule.unshift_time(schedule.t_min))
    return schedule.shift_time(u_max + u * (u_min - u_max))


def heuristic_names(schedule: NoiseSchedule) -> tuple[str, ...]:
    """The baselines a job on ``schedule`` compares: :data:`HEURISTICS`, plus
    :data:`FLOW_HEURISTICS` (the pipelines' own default grid) on a flow-matching schedule."""
    flow = FLOW_HEURISTICS if hasattr(schedule, "shift_time") else ()
    return (*HEURISTICS, *flow)


def all_heuristics(nfe: int, schedule: NoiseSchedule) -> dict[str, Tensor]:
    """Every baseline of :func:`heuristic_names` for ``nfe`` steps, by name."""
    return {name: discretize(name, nfe, schedule) for name in heuristic_names(schedule)}
