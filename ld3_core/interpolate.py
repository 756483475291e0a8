"""Schedules for an NFE that was never learned, from the nearest learned one.

As Align Your Steps does for other step counts, the nearest learned schedule's noise levels are
resampled log-linearly: with ``s_i = sigma_{t_i} / alpha_{t_i}`` (the k-diffusion sigma,
``exp(-lambda)``) of the learned ``k``-step schedule placed at ``u_i = i / k``, the new schedule
takes ``log s`` linearly interpolated at ``v_j = j / nfe`` and maps it back to t with
``schedule.t_of_kd_sigma``. The endpoints are the learned schedule's own (bit-exact), and the
result is strictly decreasing. Only the solver times are interpolated; LD3's decoupled model
times do not carry over to another NFE.

The result is always flagged: :func:`interpolate` returns an :class:`InterpolatedSchedule`
whose ``interpolated`` is False only when ``nfe`` itself was learned.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ld3_core.schedules import NoiseSchedule


@dataclass(frozen=True)
class InterpolatedSchedule:
    """A schedule for ``nfe`` steps derived from the learned ``source_nfe``-step schedule.

    timesteps: (nfe+1,) float64 decreasing t; source_nfe: the learned NFE it comes from;
    interpolated: False only when ``nfe == source_nfe`` (the learned schedule itself).
    """

    timesteps: Tensor
    source_nfe: int
    interpolated: bool

    @property
    def nfe(self) -> int:
        """Number of steps of :attr:`timesteps`."""
        return self.timesteps.numel() - 1

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable form: timesteps (list), nfe, source_nfe, interpolated."""
        return {
            "timesteps": self.timesteps.tolist(),
            "nfe": self.nfe,
            "source_nfe": self.source_nfe,
            "interpolated": self.interpolated,
        }


def _check_nfe(nfe: Any, what: str = "nfe") -> int:
    if isinstance(nfe, bool) or not isinstance(nfe, (int, np.integer)) or int(nfe) < 1:
        raise ValueError(f"{what} must be a positive integer, got {nfe!r}")
    return int(nfe)


def _check_known(known: Mapping[int, Any], schedule: NoiseSchedule) -> dict[int, Tensor]:
    if not isinstance(known, Mapping) or not known:
        raise ValueError("known must be a non-empty dict {nfe: timesteps}")
    out: dict[int, Tensor] = {}
    slack = 1e-9 * max(1.0, abs(schedule.t_max))
    for key, value in known.items():
        k = _check_nfe(key, "a known NFE")
        t = torch.as_tensor(value, dtype=torch.float64).detach().cpu()
        if t.ndim != 1 or t.numel() != k + 1:
            raise ValueError(
                f"the schedule for NFE {k} must have {k + 1} times, got shape {tuple(t.shape)}"
            )
        if not bool(torch.isfinite(t).all()) or not bool(torch.all(t[1:] < t[:-1])):
            raise ValueError(f"the schedule for NFE {k} must be finite and strictly decreasing")
        if float(t[0]) > schedule.t_max + slack or float(t[-1]) < schedule.t_min - slack:
            raise ValueError(
                f"the schedule for NFE {k} leaves the schedule's range "
                f"[{schedule.t_min}, {schedule.t_max}]"
            )
        out[k] = t
    return out


def nearest_nfe(known_nfes: Any, nfe: int) -> int:
    """The learned NFE closest to ``nfe`` (ties go to the larger, finer schedule)."""
    nfes = sorted({_check_nfe(k, "a known NFE") for k in known_nfes})
    if not nfes:
        raise ValueError("no known NFE")
    return min(nfes, key=lambda k: (abs(k - nfe), -k))


def resample_log_sigma(timesteps: Tensor, nfe: int, schedule: NoiseSchedule) -> Tensor:
    """Resample a decreasing (k+1,) t schedule to ``nfe`` steps, linearly in log kd-sigma.

    Returns (nfe+1,) float64 t, strictly decreasing, with the input's endpoints exactly.
    """
    nfe = _check_nfe(nfe)
    t = torch.as_tensor(timesteps, dtype=torch.float64).detach().cpu()
    k = t.numel() - 1
    if k < 1:
        raise ValueError("timesteps must have at least 2 entries")
    if nfe == k:
        return t.clone()
    log_s = (-schedule.lambda_(t)).numpy()  # log(sigma/alpha), decreasing along the schedule
    new_log_s = np.interp(np.arange(nfe + 1) / nfe, np.arange(k + 1) / k, log_s)
    out = schedule.t_of_kd_sigma(torch.as_tensor(np.exp(new_log_s), dtype=torch.float64))
    out = out.detach().clone()
    out[0], out[-1] = t[0], t[-1]
    if not bool(torch.all(out[1:] < out[:-1])):
        raise ValueError("the interpolated schedule is not strictly decreasing (steps too close)")
    return out


def interpolate(
    known: Mapping[int, Any], nfe: int, schedule: NoiseSchedule
) -> InterpolatedSchedule:
    """Schedule for ``nfe`` steps from the learned schedules ``known`` ({nfe: (nfe+1,) t}).

    Returns the learned schedule itself when ``nfe`` is known (``interpolated=False``), else
    the nearest learned schedule resampled log-linearly in log kd-sigma
    (``interpolated=True``). Raises ``ValueError`` on bad input.
    """
    nfe = _check_nfe(nfe)
    if not isinstance(schedule, NoiseSchedule):
        raise ValueError(f"schedule must be a NoiseSchedule, got {type(schedule).__name__}")
    table = _check_known(known, schedule)
    source = nearest_nfe(table, nfe)
    timesteps = resample_log_sigma(table[source], nfe, schedule)
    return InterpolatedSchedule(timesteps, source, interpolated=source != nfe)


def interpolate_schedule(
    known: Mapping[int, Any], nfe: int, schedule: NoiseSchedule
) -> Tensor:
    """(nfe+1,) float64 decreasing t for ``nfe`` steps from the learned schedules ``known``.

    Same as :func:`interpolate` but returns only the times; use :func:`interpolate` to know
    whether (and from which NFE) the result was interpolated.
    """
    return interpolate(known, nfe, schedule).timesteps
