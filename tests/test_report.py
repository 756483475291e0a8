"""Per-job reports (ld3_core.report): files, JSON content, PNG validity, scoring helper."""

from __future__ import annotations

import json
import math

import pytest
import torch
from PIL import Image

from ld3_core import heuristics, models
from ld3_core import report as rp


@pytest.fixture(scope="module")
def model():
    return models.load("builtin:gmm-digits")


@pytest.fixture(scope="module")
def reference():
    from ld3_core.data import load_digits

    images, _ = load_digits()
    return images[:200]


def _png_ok(path) -> tuple[int, int]:
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


def test_write_report_scores_and_writes_everything(tmp_path, model, reference):
    nfes = [4, 6]
    table = {}
    for nfe in nfes:
        cands = rp.candidate_schedules(model.schedule, nfe, "unipc", 2, maxiter=30)
        cands["ld3"] = {"timesteps": cands["logsnr"]["timesteps"], "val_loss": 0.5,
                        "fd": 1.25, "extractor": "digits", "n": 10}
        table[nfe] = cands
    out = rp.write_report(tmp_path / "rep", model, "unipc", 2, nfes, table, seed=3,
                          reference=reference, n_score=32, n_grid=4, extra={"job": "abc"})
    files = {name: tmp_path / "rep" / name for name in (rp.REPORT_JSON, rp.GRID_PNG,
                                                        rp.FD_PLOT_PNG)}
    assert all(p.is_file() for p in files.values())
    assert out["report_json"] == str(files[rp.REPORT_JSON])
    assert out["grid"] == str(files[rp.GRID_PNG]) and out["fd_vs_nfe"] == str(files[rp.FD_PLOT_PNG])
    w, h = _png_ok(files[rp.GRID_PNG])
    assert h > w / 4  # five+ rows of images, not a single strip
    _png_ok(files[rp.FD_PLOT_PNG])

    on_disk = json.loads(files[rp.REPORT_JSON].read_text())
    assert on_disk == out
    assert on_disk["model"] == "builtin:gmm-digits" and on_disk["solver"] == "unipc"
    assert on_disk["order"] == 2 and on_disk["nfes"] == nfes and on_disk["extra"] == {"job": "abc"}
    assert on_disk["extractors"] == ["digits"]
    for nfe in nfes:
        entries = on_disk["results"][str(nfe)]
        assert set(entries) == {*heuristics.HEURISTICS, "trust_region", "ld3"}
        for name, e in entries.items():
            assert len(e["timesteps"]) == nfe + 1
            assert e["extractor"] == "digits"
            assert isinstance(e["fd"], float) and math.isfinite(e["fd"]) and e["fd"] >= 0
            assert e["kind"] == rp.schedule_kind(name)
        # given scores are kept, missing ones were computed with n_score samples
        assert entries["ld3"]["fd"] == 1.25 and entries["ld3"]["n"] == 10
        assert entries["ld3"]["val_loss"] == 0.5
        assert entries["trust_region"]["n"] == 32
        best = min(entries, key=lambda k: entries[k]["fd"])
        assert on_disk["best"][str(nfe)] == best


def test_report_without_reference_keeps_missing_scores_null(tmp_path, model):
    ts = heuristics.all_heuristics(5, model.schedule)
    table = {5: {"uniform": {"timesteps": ts["uniform"], "fd": 3.0, "extractor": "digits"},
                 "logsnr": ts["logsnr"]}}  # a bare tensor is accepted too
    out = rp.write_report(tmp_path, model, "dpm++", 2, [5], table, n_grid=2)
    res = out["results"]["5"]
    assert res["logsnr"]["fd"] is None and res["uniform"]["fd"] == 3.0
    assert out["best"] == {"5": "uniform"}
    _png_ok(tmp_path / rp.GRID_PNG)
    _png_ok(tmp_path / rp.FD_PLOT_PNG)


def test_non_finite_scores_become_null(tmp_path, model):
    ts = heuristics.discretize("logsnr", 3, model.schedule)
    out = rp.write_report(tmp_path, model, "euler", 1, [3],
                          {3: {"logsnr": {"timesteps": ts, "fd": float("nan")}}}, n_grid=1)
    assert out["results"]["3"]["logsnr"]["fd"] is None and out["best"] == {"3": None}
    json.loads((tmp_path / rp.REPORT_JSON).read_text())  # strict JSON (no NaN)


def test_score_schedules_is_cheap_and_same_x_T(model, reference):
    ts = heuristics.discretize("logsnr", 6, model.schedule)
    table = {6: {"a": {"timesteps": ts}, "b": {"timesteps": ts.clone()}}}
    scored = rp.score_schedules(model, "unipc", 2, table, n=16, reference=reference)
    a, b = scored[6]["a"], scored[6]["b"]
    assert a["n"] == 16 and a["extractor"] == "digits"
    assert a["fd"] == pytest.approx(b["fd"], rel=1e-9)  # same x_T -> same samples -> same FD
    with pytest.raises(ValueError):
        rp.score_schedules(model, "unipc", 2, table, n=1, reference=reference)


def test_default_reference_is_accurate_model_samples(model):
    x = rp.reference_samples(model, 4, seed=0)
    assert x.shape == (4, 1, 8, 8) and bool(torch.isfinite(x).all())


@pytest.mark.parametrize(
    ("nfes", "table", "kwargs"),
    [
        ([], {}, {}),
        ([4], {}, {}),
        ([4], {4: {"x": {"model_timesteps": [1.0, 0.5]}}}, {}),
        ([4], {4: {"x": [1.0, 0.5, 0.001]}}, {}),  # 2 steps under NFE 4
        ([0], {0: {"x": [1.0]}}, {}),
        ([2], {2: {"x": [1.0, 0.5, 0.001]}}, {"grid_nfe": 3}),
        ([2], {2: {"x": [1.0, 0.5, 0.001]}}, {"n_grid": 0}),
        ([2], {2: {"x": [1.0, 0.5, 0.001]}}, {"order": 0}),
    ],
)
def test_bad_input_raises_value_error(tmp_path, model, nfes, table, kwargs):
    order = kwargs.pop("order", 2)
    with pytest.raises(ValueError):
        rp.write_report(tmp_path, model, "unipc", order, nfes, table, **kwargs)


def test_schedule_kind_knows_every_heuristic_name():
    for name in heuristics.NAMES:  # quadratic_tmin (the pre-issue-12 quadratic) included
        assert rp.schedule_kind(name) == "heuristic"
    assert rp.schedule_kind("trust_region") == "trust_region"
    assert rp.schedule_kind("my-schedule") == "other"


def _color_pixels(path, rgb, tol=12) -> int:
    """Pixels of the PNG at ``path`` within ``tol`` of the colour ``rgb``."""
    import numpy as np

    with Image.open(path) as im:
        a = np.asarray(im.convert("RGB")).astype(int)
    return int((np.abs(a - np.array(rgb)).max(axis=-1) <= tol).sum())


@pytest.mark.parametrize("winner", ["trust_region", "logsnr"])
def test_write_job_report_writes_the_schedule_plot(tmp_path, winner):
    from report_helpers import synthetic_outcome

    outcome = synthetic_outcome(winner=winner)
    names = rp.write_job_report(tmp_path, outcome, title="t")
    assert names == {"report_json": rp.REPORT_JSON, "grid": rp.GRID_PNG,
                     "fd_vs_nfe": rp.FD_PLOT_PNG, "schedule": rp.SCHEDULE_PNG}
    w, h = _png_ok(tmp_path / rp.SCHEDULE_PNG)
    assert w > 300 and h > 200
    red, blue = (214, 39, 40), (31, 119, 180)  # the winner's line, the best heuristic's
    assert _color_pixels(tmp_path / rp.SCHEDULE_PNG, red) > 200
    best_drawn = _color_pixels(tmp_path / rp.SCHEDULE_PNG, blue)
    if winner == outcome.best_heuristic:
        assert best_drawn < 20  # the best heuristic is the published (red) line
    else:
        assert best_drawn > 100


def test_plot_job_schedules_draws_every_candidate(tmp_path):
    from report_helpers import synthetic_outcome

    outcome = synthetic_outcome()
    one = rp.plot_job_schedules(outcome, tmp_path / "a.png")
    del outcome.scores["uniform"]  # one candidate fewer: its (green) line is gone
    two = rp.plot_job_schedules(outcome, tmp_path / "b.png")
    green = tuple(round(0.75 * c + 0.25 * 255) for c in (44, 160, 44))  # tab:green, alpha .75
    assert _color_pixels(one, green) > 50 and _color_pixels(two, green) < 5
