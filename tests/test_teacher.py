"""Teacher data: determinism, config resolution, save/load, no regeneration."""

from __future__ import annotations

import json

import pytest
import torch
from analytic import conditional_model, mixture_model

from ld3_core.heuristics import HEURISTICS, discretize
from ld3_core.solvers import solve
from ld3_core.teacher import DEFAULTS, TeacherConfig, TeacherData, generate

FAST = TeacherConfig(nfe=8, discretization="logsnr", dtype="float64")


def test_resolve_defaults_and_model_overrides():
    model = mixture_model()
    cfg = TeacherConfig().resolve(model)
    for key in ("solver", "order", "nfe", "discretization"):
        assert getattr(cfg, key) == DEFAULTS[key]
    assert (cfg.solver, cfg.order, cfg.nfe, cfg.discretization) == ("unipc", 3, 20, "best")
    guided = mixture_model(teacher_defaults={"nfe": 10, "discretization": "uniform"})
    cfg = TeacherConfig().resolve(guided)
    assert cfg.nfe == 10 and cfg.discretization == "uniform"
    assert TeacherConfig(nfe=15).resolve(guided).nfe == 15  # explicit beats model default
    with pytest.raises(ValueError):
        TeacherConfig().resolve(mixture_model(teacher_defaults={"steps": 3}))


@pytest.mark.parametrize(
    "bad",
    [{"solver": "rk45"}, {"order": 4}, {"nfe": 0}, {"discretization": "cosine"},
     {"dtype": "float16"}, {"batch_size": 0}],
)
def test_invalid_config(bad):
    with pytest.raises(ValueError):
        TeacherConfig(**bad).resolve(mixture_model())


def test_generate_is_the_teacher_solve_and_deterministic():
    model = mixture_model()
    a = generate(model, 6, FAST, seed=3)
    b = generate(model, 6, FAST, seed=3)
    c = generate(model, 6, FAST, seed=4)
    assert torch.equal(a.x_T, b.x_T) and torch.equal(a.x_0, b.x_0)
    assert not torch.equal(a.x_T, c.x_T)
    assert a.x_T.shape == (6, 16) and a.x_T.dtype == torch.float64
    t = discretize("logsnr", 8, model.schedule)
    expected = solve(model, a.x_T, t, "unipc", 3)
    assert torch.allclose(a.x_0, expected, rtol=1e-12, atol=1e-12)
    assert a.config["used_discretization"] == "logsnr" and a.config["seed"] == 3
    # batching does not change the pairs
    d = generate(model, 6, TeacherConfig(nfe=8, discretization="logsnr", dtype="float64",
                                         batch_size=4), seed=3)
    assert torch.allclose(a.x_0, d.x_0, rtol=1e-12, atol=1e-12)


def test_best_discretization_is_the_probe_argmin():
    model = mixture_model()
    data = generate(model, 2, TeacherConfig(nfe=5, dtype="float64", probe_nfe=40,
                                            probe_samples=4), seed=0)
    errors = data.config["probe_errors"]
    assert set(errors) == set(HEURISTICS)
    assert data.config["used_discretization"] == min(errors, key=errors.get)
    assert len({round(v, 12) for v in errors.values()}) > 1  # really different candidates


def test_save_load_round_trip_and_no_regeneration(tmp_path):
    calls = [0]
    model = mixture_model(counter=calls)
    path = tmp_path / "sub" / "teacher.pt"
    data = generate(model, 5, FAST, seed=1, path=path)
    made = calls[0]
    assert made == 8  # one batch, 8 teacher steps
    assert path.is_file() and path.with_suffix(".json").is_file()
    assert json.loads(path.with_suffix(".json").read_text())["nfe"] == 8
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    loaded = TeacherData.load(path)
    assert torch.equal(loaded.x_T, data.x_T) and torch.equal(loaded.x_0, data.x_0)
    assert loaded.config == data.config
    again = generate(model, 5, FAST, seed=1, path=path)
    assert calls[0] == made  # loaded, not regenerated
    assert torch.equal(again.x_0, data.x_0)
    fewer = generate(model, 3, FAST, seed=1, path=path)
    assert calls[0] == made and torch.equal(fewer.x_0, data.x_0[:3])
    with pytest.raises(ValueError, match="other settings"):
        generate(model, 5, FAST, seed=2, path=path)
    with pytest.raises(ValueError, match="other settings"):
        generate(model, 5, TeacherConfig(nfe=9, discretization="logsnr", dtype="float64"),
                 seed=1, path=path)
    with pytest.raises(ValueError, match="other settings"):
        generate(model, 6, FAST, seed=1, path=path)


def test_load_rejects_foreign_files(tmp_path):
    bad = tmp_path / "x.pt"
    torch.save({"a": 1}, bad)
    with pytest.raises(ValueError):
        TeacherData.load(bad)
    with pytest.raises(ValueError):
        TeacherData.load(tmp_path / "missing.pt")


def test_conditional_teacher_keeps_conditions(tmp_path):
    model = conditional_model()
    data = generate(model, 5, FAST, seed=0, path=tmp_path / "t.pt")
    assert set(data.cond) == {"labels"} and data.cond["labels"].shape == (5,)
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(data.cond["labels"], model.sample_cond(5, gen)["labels"])
    loaded = TeacherData.load(tmp_path / "t.pt")
    assert torch.equal(loaded.cond["labels"], data.cond["labels"])
    sub = loaded.subset(slice(1, 3))
    assert torch.equal(sub.cond["labels"], data.cond["labels"][1:3])
    t = discretize("logsnr", 8, model.schedule)
    expected = solve(model, data.x_T[1:3], t, "unipc", 3, cond={"labels": sub.cond["labels"]})
    assert torch.allclose(sub.x_0, expected, rtol=1e-12, atol=1e-12)


def test_progress_callback_and_cancel():
    seen = []
    generate(mixture_model(), 4, FAST, seed=0, progress=seen.append)
    fr = [s["fraction"] for s in seen]
    assert seen[0]["stage"] == "teacher" and fr[-1] == 1.0 and fr == sorted(fr)

    def boom(info):
        if info["fraction"] > 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate(mixture_model(), 4, FAST, seed=0, progress=boom)


def test_bad_arguments():
    with pytest.raises(ValueError):
        generate(mixture_model(), 0, FAST)
    with pytest.raises(ValueError):
        generate(mixture_model(), 2, {"nfe": 3})
