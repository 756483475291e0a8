"""Direct minimization of the job's score over the time steps (derivative-free).

LD3 minimizes a per-sample distance to the teacher; at small NFE that objective can lead away
from the schedule with the best *distribution* of samples, which is what the job is scored on
(the Frechet distance). This stage minimizes that score itself, on training samples only, with
Nelder-Mead over the ``nfe - 1`` interior steps.

Parameterization: the half log-SNR ``lambda`` runs from ``lambda(t_max)`` to ``lambda(t_min)``;
step i covers the fraction ``softmax(x, 0)_i`` of that range (``x`` has ``nfe - 1`` free
entries, the last logit is pinned to 0), so every ``x`` gives a strictly increasing lambda grid
with exact endpoints. The objective is deterministic (fixed samples), so a run is reproducible;
evaluated points are kept in ``cache`` (a dict the caller may persist), which makes an
interrupted run replay its path instantly and end with the uninterrupted result.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.optimize import minimize
from torch import Tensor

from ld3_core.schedules import NoiseSchedule


def params_from_timesteps(t: Tensor, schedule: NoiseSchedule) -> np.ndarray:
    """Free parameters (nfe - 1,) of a decreasing time vector ``t`` (nfe + 1,) from t_max to
    t_min; inverse of :func:`timesteps_from_params` up to round-off."""
    lam = schedule.lambda_(torch.as_tensor(t, dtype=torch.float64)).numpy()
    steps = np.diff(lam)
    if np.any(steps <= 0):
        raise ValueError("time steps must be strictly decreasing (lambda increasing)")
    logits = np.log(steps)
    return logits[:-1] - logits[-1]


def timesteps_from_params(x: np.ndarray, schedule: NoiseSchedule) -> Tensor:
    """The (nfe + 1,) float64 decreasing times of parameters ``x`` (nfe - 1,)."""
    logits = np.append(np.asarray(x, np.float64), 0.0)
    p = np.exp(logits - logits.max())
    p /= p.sum()
    lo, hi = float(schedule.lambda_min), float(schedule.lambda_max)
    lam = lo + (hi - lo) * np.concatenate([[0.0], np.cumsum(p)])
    t = schedule.t_of_lambda(torch.as_tensor(lam, dtype=torch.float64)).clone()
    t[0], t[-1] = schedule.t_max, schedule.t_min
    return t


class _Budget(Exception):  # noqa: N818 - internal control flow
    """Raised inside the objective when the time budget is spent."""


@dataclass
class RefineResult:
    """Best time vector found (``timesteps``, (nfe+1,) float64), its training score
    (``score``), the start's score (``start_score``), evaluations used, and why it stopped
    (``"converged"``, ``"max_evals"`` or ``"time_budget"``)."""

    timesteps: Tensor
    score: float
    start_score: float
    evaluations: int
    stopped: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable form."""
        return {"timesteps": [float(v) for v in self.timesteps], "score": self.score,
                "start_score": self.start_score, "evaluations": self.evaluations,
                "stopped": self.stopped}


def refine_timesteps(
    objective: Callable[[Tensor], float],
    start: Tensor,
    schedule: NoiseSchedule,
    *,
    max_evals: int = 200,
    time_budget_s: float | None = None,
    step: float = 0.35,
    cache: dict[str, float] | None = None,
    on_eval: Callable[[int, float], None] | None = None,
) -> RefineResult:
    """Minimize ``objective(timesteps)`` from ``start`` by Nelder-Mead (with one restart).

    Args:
        objective: maps a (nfe+1,) float64 decreasing time vector to a float to minimize.
        start: (nfe+1,) start times (t_max ... t_min) of ``schedule``.
        max_evals: objective evaluations at most (cached ones included).
        time_budget_s: wall-clock cap (seconds) on new evaluations; None: no cap. A capped
            run is not reproducible bit for bit; an evaluation cap is.
        step: initial simplex size in log-step units.
        cache: evaluated points (key: hex of the float64 parameters) -> value; read and
            filled in place.
        on_eval: called with (evaluations so far, best value) after each evaluation.

    Returns a :class:`RefineResult`; with nfe = 1 (no interior step) the start is returned.
    """
    start = torch.as_tensor(start, dtype=torch.float64)
    cache = {} if cache is None else cache
    t0 = time.monotonic()
    state = {"evals": 0, "best": np.inf, "best_x": None}
    dim = int(start.numel()) - 2

    def f(x: np.ndarray) -> float:
        key = np.asarray(x, np.float64).tobytes().hex()
        if key in cache:
            value = cache[key]
        else:
            if time_budget_s is not None and time.monotonic() - t0 > time_budget_s:
                raise _Budget
            value = float(objective(timesteps_from_params(x, schedule)))
            if not np.isfinite(value):
                value = 1e30
            cache[key] = value
        state["evals"] += 1
        if value < state["best"]:
            state["best"], state["best_x"] = value, np.array(x, np.float64)
        if on_eval is not None:
            on_eval(state["evals"], state["best"])
        if state["evals"] >= max_evals:
            raise _Budget
        return value

    if dim < 1:
        value = float(objective(start))
        return RefineResult(start, value, value, 1, "converged")
    x0 = params_from_timesteps(start, schedule)
    stopped = "converged"
    start_value = np.inf
    try:
        start_value = f(x0)
        x = x0
        for size in (step, step / 3):
            simplex = np.vstack([x, x + size * np.eye(dim)])
            res = minimize(f, x, method="Nelder-Mead", options={
                "initial_simplex": simplex, "xatol": 1e-3, "fatol": 1e-6,
                "maxfev": 10**9, "maxiter": 10**9,
            })
            x = state["best_x"] if state["best_x"] is not None else res.x
    except _Budget:
        over = time_budget_s is not None and time.monotonic() - t0 > time_budget_s
        stopped = "time_budget" if over and state["evals"] < max_evals else "max_evals"
    best_x = state["best_x"] if state["best_x"] is not None else x0
    return RefineResult(
        timesteps_from_params(best_x, schedule), float(state["best"]), float(start_value),
        int(state["evals"]), stopped,
    )
