"""Schedules for unlearned NFEs (ld3_core.interpolate): log-linear resampling in log kd-sigma."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ld3_core import heuristics, schedules
from ld3_core.interpolate import (
    InterpolatedSchedule,
    interpolate,
    interpolate_schedule,
    nearest_nfe,
    resample_log_sigma,
)

SCHEDULES = [
    schedules.VPLinear(),
    schedules.VPCosine(),
    schedules.EDM(),
    schedules.DiscreteVP.from_betas(0.00085, 0.012, 1000, "scaled_linear"),
]


def _learned(schedule, nfe):
    """A non-trivial "learned" schedule: EDM steps, distinct from logSNR."""
    return heuristics.discretize("edm", nfe, schedule)


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: s.name)
@pytest.mark.parametrize("nfe", [1, 3, 7, 9, 13, 25])
def test_result_is_a_valid_schedule(schedule, nfe):
    known = {5: _learned(schedule, 5), 10: _learned(schedule, 10)}
    t = interpolate_schedule(known, nfe, schedule)
    assert t.dtype == torch.float64 and t.shape == (nfe + 1,)
    assert float(t[0]) == schedule.t_max and float(t[-1]) == schedule.t_min
    assert bool(torch.all(t[1:] < t[:-1]))


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: s.name)
def test_refining_keeps_the_learned_points_and_is_loglinear_between(schedule):
    src = _learned(schedule, 6)
    out = resample_log_sigma(src, 12, schedule)
    # every other new point is a learned point (same normalized position)
    np.testing.assert_allclose(out[::2].numpy(), src.numpy(), rtol=1e-9, atol=1e-12)
    # the points in between are geometric means of the neighbours' kd-sigmas
    s = schedule.kd_sigma(out).numpy()
    np.testing.assert_allclose(s[1::2], np.sqrt(s[0:-1:2] * s[2::2]), rtol=1e-8)


def test_known_nfe_is_returned_unchanged_and_flagged():
    schedule = SCHEDULES[0]
    learned = _learned(schedule, 8)
    res = interpolate({8: learned, 4: _learned(schedule, 4)}, 8, schedule)
    assert isinstance(res, InterpolatedSchedule)
    assert res.interpolated is False and res.source_nfe == 8 and res.nfe == 8
    assert torch.equal(res.timesteps, learned)
    res = interpolate({8: learned}, 11, schedule)
    assert res.interpolated is True and res.source_nfe == 8 and res.nfe == 11
    d = res.to_dict()
    assert d["interpolated"] is True and len(d["timesteps"]) == 12


def test_nearest_nfe_prefers_the_finer_on_ties():
    assert nearest_nfe([5, 10], 7) == 5
    assert nearest_nfe([5, 10], 8) == 10
    assert nearest_nfe([6, 10], 8) == 10
    assert nearest_nfe([6, 10], 30) == 10
    assert nearest_nfe([6, 10], 1) == 6


def test_uses_the_nearest_schedule():
    schedule = SCHEDULES[0]
    known = {
        4: heuristics.discretize("uniform", 4, schedule),
        12: heuristics.discretize("logsnr", 12, schedule),
    }
    res = interpolate(known, 10, schedule)
    assert res.source_nfe == 12
    # logSNR resampled log-linearly stays logSNR
    np.testing.assert_allclose(res.timesteps.numpy(),
                               heuristics.discretize("logsnr", 10, schedule).numpy(), rtol=1e-9)


def test_accepts_lists_and_string_free_keys():
    schedule = SCHEDULES[2]
    known = {3: _learned(schedule, 3).tolist()}
    assert interpolate_schedule(known, 5, schedule).shape == (6,)


@pytest.mark.parametrize(
    ("known", "nfe"),
    [
        ({}, 5),
        ({5: torch.linspace(1.0, 1e-3, 5)}, 5),  # 4 steps under key 5
        ({4: torch.tensor([1.0, 0.5, 0.6, 0.1, 1e-3])}, 6),  # not decreasing
        ({4: torch.tensor([2.0, 0.5, 0.3, 0.1, 1e-3])}, 6),  # outside [t_min, t_max]
        ({0: torch.tensor([1.0])}, 3),
        ({4: torch.linspace(1.0, 1e-3, 5)}, 0),
        ({4: torch.linspace(1.0, 1e-3, 5)}, 2.5),
        ("not a dict", 3),
    ],
)
def test_bad_input_raises_value_error(known, nfe):
    with pytest.raises(ValueError):
        interpolate_schedule(known, nfe, SCHEDULES[0])


def test_rejects_non_schedule():
    with pytest.raises(ValueError):
        interpolate({4: torch.linspace(1.0, 1e-3, 5)}, 6, "vp_linear")
