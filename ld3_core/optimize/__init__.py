"""One schedule-optimization job: candidates, honest held-out scoring and the winner.

Entry point: :func:`optimize_schedule` (the worker pipeline, the embedded runner and Python
users all call it) returning an :class:`Outcome`.
"""

from ld3_core.optimize.api import check_disjoint, concat_teacher, optimize_schedule, select_winner
from ld3_core.optimize.candidates import Candidate, solve_pixels
from ld3_core.optimize.config import OptimizeConfig, make_config
from ld3_core.optimize.outcome import Outcome
from ld3_core.optimize.refine import refine_timesteps
from ld3_core.optimize.scoring import CandidateScore, ScoreSet, ratio_interval

__all__ = [
    "Candidate",
    "CandidateScore",
    "OptimizeConfig",
    "Outcome",
    "ScoreSet",
    "check_disjoint",
    "concat_teacher",
    "make_config",
    "optimize_schedule",
    "ratio_interval",
    "refine_timesteps",
    "select_winner",
    "solve_pixels",
]
