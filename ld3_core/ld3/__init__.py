"""LD3: learning the time discretization of a diffusion ODE sampler (Tong et al. 2024).

Entry point: :func:`learn`. Modules: ``parameterization`` (tau_xi, decoupled times, the
x'_T ball), ``distances`` (L2, LPIPS), ``config`` (hyper-parameters), ``trainer`` (the loop),
``checkpoint`` (resumable state), ``result`` (:class:`LearnedSchedule`), ``api`` (``learn``).
"""

from ld3_core.ld3.api import INITS, Cancelled, learn
from ld3_core.ld3.config import LD3Config, make_config, paper_config
from ld3_core.ld3.distances import METRICS, MissingWeightsError, get_distance
from ld3_core.ld3.parameterization import (
    ball_radius,
    model_times,
    project_to_ball,
    tau,
    xi_from_timesteps,
)
from ld3_core.ld3.result import LearnedSchedule

__all__ = [
    "INITS",
    "METRICS",
    "Cancelled",
    "LD3Config",
    "LearnedSchedule",
    "MissingWeightsError",
    "ball_radius",
    "get_distance",
    "learn",
    "make_config",
    "paper_config",
    "model_times",
    "project_to_ball",
    "tau",
    "xi_from_timesteps",
]
