"""`ld3_core.optimize`: splits, held-out scoring with intervals, the selection rule, resume."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import torch

from ld3_core.evaluation import get_extractor
from ld3_core.models import load
from ld3_core.models.wrapper import DiffusionModel
from ld3_core.optimize import (
    Candidate,
    CandidateScore,
    ScoreSet,
    check_disjoint,
    optimize_schedule,
    select_winner,
)
from ld3_core.optimize.refine import params_from_timesteps, timesteps_from_params
from ld3_core.schedules import VPLinear
from ld3_core.teacher import TeacherConfig, TeacherData

TINY: dict[str, Any] = {
    "n_train": 8, "n_val": 6, "n_tune": 48, "n_select": 96, "n_boot": 60, "ld3_inits": 1,
    "refine_max_evals": 12, "ld3": {"epochs_phase1": 1, "epochs_phase2": 1},
    "teacher": TeacherConfig(nfe=8, discretization="logsnr"),
}


@pytest.fixture(scope="module")
def gmm() -> DiffusionModel:
    return load("builtin:gmm-digits")


def _score(fd: float, boot: np.ndarray) -> CandidateScore:
    return CandidateScore(fd, (fd, fd), None, None, len(boot), boot)


def test_selection_rule_publishes_learned_only_beyond_the_interval():
    t = torch.linspace(1.0, 1e-3, 5, dtype=torch.float64)
    cands = [Candidate("uniform", "heuristic:uniform", t),
             Candidate("logsnr", "heuristic:logsnr", t), Candidate("ld3@logsnr", "ld3", t)]
    rng = np.random.default_rng(0)
    base = 1.0 + 0.05 * rng.standard_normal(200)
    # clearly better: every paired resample has ratio ~0.6 -> published as learned
    scores = {"uniform": _score(2.0, 2 * base), "logsnr": _score(1.0, base),
              "ld3@logsnr": _score(0.6, 0.6 * base * (1 + 0.01 * rng.standard_normal(200)))}
    winner, best_h, gain, table = select_winner(cands, scores)
    assert (winner.source, best_h) == ("ld3", "logsnr")
    assert gain["ratio"] == pytest.approx(0.6) and gain["ratio_ci"][1] < 1.0
    assert table["uniform"]["ratio_to_best_heuristic"] == pytest.approx(2.0)
    # the learned candidate under test is the one picked on training data, not the best here
    cands.append(Candidate("trust_region", "trust_region", t))
    scores["trust_region"] = _score(0.9, 0.9 * base)
    winner, _, gain, _ = select_winner(cands, scores, learned_pick="trust_region")
    assert winner.name == "trust_region" and gain["learned_candidate"] == "trust_region"
    cands.pop()
    # lower point estimate, but the paired interval straddles 1 -> the heuristic is published
    noisy = 0.97 * base * (1 + 0.2 * rng.standard_normal(200))
    scores["ld3@logsnr"] = _score(0.97, noisy)
    winner, best_h, gain, _ = select_winner(cands, scores)
    assert winner.source == "heuristic:logsnr" and gain["learned_ratio"] == pytest.approx(0.97)
    assert gain["learned_ratio_ci"][0] < 1.0 < gain["learned_ratio_ci"][1]
    assert "not separable" in gain["verdict"]
    # a heuristic already at round-off from the teacher is never beaten
    scores = {"uniform": _score(2e-14, 2e-14 * base), "logsnr": _score(1e-14, 1e-14 * base),
              "ld3@logsnr": _score(1e-15, 1e-15 * base)}
    winner, *_ = select_winner(cands, scores, exact_fd=1e-9)
    assert winner.source == "heuristic:logsnr"


def test_confidence_interval_shrinks_with_more_samples():
    ext = get_extractor("pixels")
    widths = {}
    for n in (100, 1600):
        gen = torch.Generator().manual_seed(n)
        teacher = torch.randn(n, 1, 4, 4, generator=gen) * 0.3
        x_T = torch.randn(n, 1, 4, 4, generator=gen)
        cand = teacher + 0.1 * torch.randn(n, 1, 4, 4, generator=gen) + 0.05
        sset = ScoreSet(x_T, None, teacher, ext, n_boot=200, seed=0)
        s = sset.score_pixels(cand)
        assert s.fd_ci[0] <= s.fd <= s.fd_ci[1]
        assert s.l2_ci[0] <= s.l2 <= s.l2_ci[1]
        widths[n] = s.fd_ci[1] - s.fd_ci[0]
    # 16x the samples: the interval is about 4x narrower (sqrt(n)); at least 2.5x
    assert widths[1600] < widths[100] / 2.5


def test_refine_parameterization_round_trips(gmm):
    from ld3_core.heuristics import discretize

    t = discretize("edm", 6, gmm.schedule)
    back = timesteps_from_params(params_from_timesteps(t, gmm.schedule), gmm.schedule)
    assert torch.allclose(back, t, rtol=1e-9, atol=1e-12)
    rnd = timesteps_from_params(np.array([3.0, -2.0, 0.5, 0.0, -7.0]), gmm.schedule)
    assert rnd[0] == gmm.schedule.t_max and rnd[-1] == gmm.schedule.t_min
    assert bool(torch.all(rnd[1:] < rnd[:-1]))


def test_splits_are_disjoint_and_every_candidate_is_scored(gmm, tmp_path):
    out = optimize_schedule(gmm, "ld3", "unipc", 2, 4, seed=1, checkpoint_dir=tmp_path, **TINY)
    splits = {name: TeacherData.load(tmp_path / f"teacher_{name}.pt") for name in
              ("train", "val", "select")}
    assert {k: len(v) for k, v in splits.items()} == {"train": 48, "val": 6, "select": 96}
    check_disjoint(splits)
    assert out.splits["select"]["n"] == 96
    names = set(out.scores)
    assert {"uniform", "quadratic", "edm", "logsnr", "trust_region"} <= names
    assert any(n.startswith("ld3@") for n in names)
    assert any("+refine" in n for n in names)
    for entry in out.scores.values():
        lo, hi = entry["fd_ci"]
        assert lo <= entry["fd"] <= hi and entry["n"] == 96
    assert out.winner in out.scores and out.scores[out.winner]["source"] == out.source
    best_h = min((v["fd"], k) for k, v in out.scores.items()
                 if v["source"].startswith("heuristic:"))[1]
    assert out.best_heuristic == best_h
    if out.learned:
        assert out.gain["ratio_ci"][1] < 1.0
    assert out.noise_floor["fd_half_sets"] > 0
    assert out.samples["teacher"].shape == (8, 1, 8, 8)
    with pytest.raises(ValueError, match="share a sample"):
        check_disjoint({"a": splits["val"], "b": splits["val"].subset(slice(0, 2))})


def test_resume_after_a_kill_ends_with_the_uninterrupted_result(gmm, tmp_path):
    whole = optimize_schedule(gmm, "ld3", "dpm++", 2, 4, seed=2,
                              checkpoint_dir=tmp_path / "whole", **TINY)

    class Killed(Exception):
        pass

    for stop_at in ("train", "refine"):
        seen = {"n": 0}

        def kill(info: dict[str, Any], stop_at: str = stop_at, seen: dict = seen) -> None:
            if info["stage"] == stop_at:
                seen["n"] += 1
                if seen["n"] == 3:
                    raise Killed

        ck = tmp_path / f"killed-{stop_at}"
        with pytest.raises(Killed):
            optimize_schedule(gmm, "ld3", "dpm++", 2, 4, seed=2, checkpoint_dir=ck,
                              progress=kill, **TINY)
        assert not (ck / "outcome.json").exists()
        resumed = optimize_schedule(gmm, "ld3", "dpm++", 2, 4, seed=2, checkpoint_dir=ck, **TINY)
        assert resumed.winner == whole.winner
        assert torch.equal(resumed.timesteps, whole.timesteps)
        assert {k: v["fd"] for k, v in resumed.scores.items()} == \
            {k: v["fd"] for k, v in whole.scores.items()}
    again = optimize_schedule(gmm, "ld3", "dpm++", 2, 4, seed=2,
                              checkpoint_dir=tmp_path / "whole", **TINY)
    assert json.dumps(again.to_dict(), default=str) == json.dumps(whole.to_dict(), default=str)
    with pytest.raises(ValueError, match="different job"):
        optimize_schedule(gmm, "ld3", "dpm++", 2, 5, seed=2, checkpoint_dir=tmp_path / "whole",
                          **TINY)


def _point_mass_model() -> DiffusionModel:
    """Data = one point: the posterior mean is that point for every x and t, so every
    data-prediction solver is exact on any time grid and no schedule can beat another."""
    center = torch.linspace(-0.5, 0.5, 16).reshape(1, 1, 4, 4)

    def fn(x: torch.Tensor, t: torch.Tensor, **_: Any) -> torch.Tensor:
        return center.to(x).expand_as(x)

    model = DiffusionModel(fn, VPLinear(), prediction="x0", sample_shape=(1, 4, 4),
                           name="point-mass", modules=())
    model.default_extractor = "pixels"  # type: ignore[attr-defined]
    return model


def test_a_model_where_heuristics_cannot_be_beaten_publishes_a_heuristic():
    model = _point_mass_model()
    out = optimize_schedule(model, "ld3", "unipc", 2, 4, seed=0, **TINY)
    assert out.source.startswith("heuristic:") and not out.learned
    assert out.source == f"heuristic:{out.winner}" and out.winner == out.best_heuristic
    assert out.gain["heuristic_exact"] is True
    assert "published" in out.summary() and out.best_heuristic in out.summary()


def test_trust_region_job_scores_against_heuristics(gmm):
    opts = {k: v for k, v in TINY.items() if k not in ("ld3", "ld3_inits")}
    out = optimize_schedule(gmm, "trust_region", "unipc", 2, 5, seed=0, **opts)
    assert set(out.scores) == {"uniform", "quadratic", "edm", "logsnr", "trust_region"}
    assert out.source in ("trust_region", f"heuristic:{out.best_heuristic}")
    assert "train" not in out.splits  # no refinement: no training split is drawn


def test_bad_arguments_are_rejected(gmm):
    with pytest.raises(ValueError, match="kind"):
        optimize_schedule(gmm, "nope", "unipc", 2, 4)
    with pytest.raises(ValueError, match="unknown option"):
        optimize_schedule(gmm, "ld3", "unipc", 2, 4, n_selct=10)
    with pytest.raises(ValueError, match="n_select"):
        optimize_schedule(gmm, "ld3", "unipc", 2, 4, n_select=2)
    with pytest.raises(ValueError, match="nfe"):
        optimize_schedule(gmm, "ld3", "unipc", 2, 0)


def test_bootstrap_size_shrinks_for_wide_features_only():
    ext = get_extractor("pixels")
    gen = torch.Generator().manual_seed(0)
    narrow = ScoreSet(torch.zeros(40, 1, 8, 8), None, torch.rand(40, 1, 8, 8, generator=gen),
                      ext, n_boot=200)
    # many samples of wide features (Inception-like: n 1000, D 2048) cost O(n^2 D) each
    wide = ScoreSet(torch.zeros(1000, 2, 32, 32), None,
                    torch.rand(1000, 2, 32, 32, generator=gen), ext, n_boot=200)
    assert narrow.n_boot_used == 200 and narrow.boot_index.shape == (200, 40)
    assert 20 <= wide.n_boot_used < 200 and wide.boot_index.shape[0] == wide.n_boot_used


@pytest.mark.parametrize("n,d", [(30, 8), (6, 40), (40, 40)])
def test_feature_reference_fd_matches_the_covariance_formula(n, d):
    from ld3_core.evaluation.frechet import feature_stats, frechet_distance
    from ld3_core.optimize.scoring import FeatureRef

    rng = np.random.default_rng(n + d)
    a = rng.standard_normal((n, d)) @ rng.standard_normal((d, d)) * 0.3
    b = rng.standard_normal((n + 3, d)) + 0.2
    want = frechet_distance(*feature_stats(b), *feature_stats(a))
    ref = FeatureRef(a)
    assert ref.uses_gram(n + 3) == (min(n, n + 3) <= d)
    # the D x D route loses ~1e-8 on rank-deficient covariances (n < D); the n x n one does not
    assert ref.fd(b) == pytest.approx(want, rel=1e-7, abs=1e-9)
    assert FeatureRef(stats=feature_stats(a)).fd(b) == pytest.approx(want, rel=1e-7, abs=1e-9)
