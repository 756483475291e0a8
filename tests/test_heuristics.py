"""Heuristic discretizations equal their formulas (ld3_core.heuristics), computed here in numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ld3_core.heuristics import HEURISTICS, NAMES, all_heuristics, discretize
from ld3_core.schedules import EDM, DiscreteVP, NoiseSchedule, VPCosine, VPLinear

SCHEDULES: dict[str, NoiseSchedule] = {
    "vp_linear": VPLinear(),
    "vp_cosine": VPCosine(),
    "edm": EDM(),
    "discrete": DiscreteVP.from_betas(0.00085, 0.012, 1000, "scaled_linear"),
}


def _vp_linear_t_of_lambda(lam: np.ndarray, b0: float = 0.1, b1: float = 20.0) -> np.ndarray:
    """Independent VPLinear inverse: log alpha = -0.5 log(1 + e^{-2 lam}), then the quadratic."""
    log_alpha = -0.5 * np.log1p(np.exp(-2 * lam))
    a, b, c = (b1 - b0) / 4, b0 / 2, log_alpha
    return (-b + np.sqrt(b * b - 4 * a * c)) / (2 * a)


def _expected(name: str, n: int, s: NoiseSchedule, rho: float = 7.0) -> np.ndarray:
    i = np.arange(n + 1, dtype=np.float64)
    t_min, t_max = s.t_min, s.t_max
    if name == "uniform":
        return t_max + (i / n) * (t_min - t_max)
    if name == "quadratic":  # DPM-Solver's time_quadratic: linspace in sqrt(t), squared
        return np.linspace(np.sqrt(t_max), np.sqrt(t_min), n + 1) ** 2
    if name == "quadratic_tmin":
        return ((n - i) / n) ** 2 * (t_max - t_min) + t_min
    lam_max = float(s.lambda_(torch.tensor(t_min, dtype=torch.float64)))
    lam_min = float(s.lambda_(torch.tensor(t_max, dtype=torch.float64)))
    if name == "edm":
        s_max, s_min = np.exp(-lam_min), np.exp(-lam_max)
        kd = (s_max ** (1 / rho) + (i / n) * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho
        lam = -np.log(kd)
    else:
        lam = lam_min + (i / n) * (lam_max - lam_min)
    if isinstance(s, EDM):
        return np.exp(-lam)
    if isinstance(s, VPLinear):
        return _vp_linear_t_of_lambda(lam)
    return s.t_of_lambda(torch.from_numpy(lam)).numpy()


@pytest.mark.parametrize("sched_name", list(SCHEDULES))
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("n", [1, 2, 5, 10, 37])
def test_heuristic_matches_formula(sched_name: str, name: str, n: int) -> None:
    s = SCHEDULES[sched_name]
    t = discretize(name, n, s)
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float64 and t.shape == (n + 1,)
    expected = _expected(name, n, s)
    np.testing.assert_allclose(t.numpy(), expected, rtol=1e-11, atol=0)
    # endpoints exact
    assert float(t[0]) == s.t_max
    assert float(t[-1]) == s.t_min
    assert bool((t[1:] < t[:-1]).all()), "strictly decreasing"


@pytest.mark.parametrize("sched_name", list(SCHEDULES))
def test_logsnr_is_uniform_in_lambda_and_edm_in_kd_sigma_rho(sched_name: str) -> None:
    s = SCHEDULES[sched_name]
    lam = s.lambda_(discretize("logsnr", 12, s)).numpy()
    np.testing.assert_allclose(np.diff(lam), np.full(12, (lam[-1] - lam[0]) / 12), rtol=1e-9)
    kd = s.kd_sigma(discretize("edm", 12, s)).numpy() ** (1 / 7)
    np.testing.assert_allclose(np.diff(kd), np.full(12, (kd[-1] - kd[0]) / 12), rtol=1e-8)


def test_edm_rho_parameter() -> None:
    s = EDM()
    t3 = discretize("edm", 8, s, rho=3.0).numpy()
    np.testing.assert_allclose(t3, _expected("edm", 8, s, rho=3.0), rtol=1e-12)
    assert not np.allclose(t3, discretize("edm", 8, s).numpy())


def test_all_heuristics() -> None:
    s = VPLinear()
    out = all_heuristics(7, s)
    assert set(out) == set(HEURISTICS)
    for name, t in out.items():
        torch.testing.assert_close(t, discretize(name, 7, s), rtol=0, atol=0)


@pytest.mark.parametrize("bad_nfe", [0, -3, 2.5, "10", None, True])
def test_bad_nfe_raises(bad_nfe) -> None:
    with pytest.raises(ValueError):
        discretize("logsnr", bad_nfe, VPLinear())


def test_unknown_name_raises() -> None:
    with pytest.raises(ValueError, match="unknown heuristic"):
        discretize("cosine", 10, VPLinear())


def test_quadratic_is_dpm_solvers_time_quadratic_and_differs_from_quadratic_tmin() -> None:
    s = VPLinear()
    t = discretize("quadratic", 4, s).numpy()
    np.testing.assert_allclose(np.sqrt(t), np.linspace(1.0, np.sqrt(1e-3), 5), rtol=1e-12)
    old = discretize("quadratic_tmin", 4, s).numpy()
    # The two curves agree at the ends only; the t_min-anchored one ends closer to t_min.
    assert old[3] == pytest.approx(1e-3 + 0.0625 * (1.0 - 1e-3), rel=1e-12)
    assert t[3] == pytest.approx((0.25 + 0.75 * np.sqrt(1e-3)) ** 2, rel=1e-12)
    assert np.all(old[1:-1] < t[1:-1])
    assert "quadratic_tmin" in NAMES and "quadratic_tmin" not in HEURISTICS
