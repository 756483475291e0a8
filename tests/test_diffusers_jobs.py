"""A job on each tiny diffusers model: teacher pairs, a short LD3 run, a trust-region solve,
and the result sampled through LD3Scheduler inside the model's diffusers pipeline."""

from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("diffusers")

import real_models_helpers as H  # noqa: E402

from ld3_core import ld3, teacher, trust_region  # noqa: E402
from ld3_core.diffusers_scheduler import LD3Scheduler  # noqa: E402
from ld3_core.export import EXPORT_FORMATS, to_format  # noqa: E402
from ld3_core.models import load  # noqa: E402
from ld3_core.solvers import solve  # noqa: E402

KINDS = ("pixel", "latent", "sd")


@pytest.fixture(scope="module")
def models(diffusers_folders):
    folders = diffusers_folders
    return {
        "pixel": load(str(folders["pixel"])),
        "latent": load(str(folders["latent"])),
        "sd": load(str(folders["sd"]), prompts=H.PROMPTS, guidance_scale=7.5),
    }


def _teacher(model):
    cfg = teacher.TeacherConfig(nfe=5, discretization="logsnr", batch_size=4)
    return teacher.generate(model, 4, cfg, seed=0)


@pytest.mark.parametrize("kind", KINDS)
def test_teacher_generation(models, kind):
    model = models[kind]
    data = _teacher(model)
    assert data.x_T.shape == (4, *model.sample_shape) == data.x_0.shape
    assert torch.isfinite(data.x_0).all()
    if kind == "sd":
        assert data.cond["encoder_hidden_states"].shape[0] == 4
        assert teacher.TeacherConfig().resolve(model).nfe == 10  # guided-model default
        # the teacher pair is the guided solve of x_T with its prompts
        with torch.no_grad():
            again = solve(model, data.x_T[:2], torch.tensor(data.config["timesteps"]), "unipc",
                          data.config["order"], cond={k: v[:2] for k, v in data.cond.items()})
        assert H.rel_err(again, data.x_0[:2]) < 1e-5
    else:
        assert data.cond is None


@pytest.mark.parametrize("kind", KINDS)
def test_short_ld3_run_and_its_export(models, kind):
    model = models[kind]
    nfe = 3
    result = ld3.learn(
        model, "unipc", 2, nfe, teacher=_teacher(model), seed=0,
        n_train=2, n_val=2, epochs_phase1=1, epochs_phase2=1, val_batch_size=2,
    )
    t, mt = result.timesteps, result.model_timesteps
    assert t.shape == (nfe + 1,) and mt is not None and mt.shape == (nfe + 1,)
    assert bool((t[1:] < t[:-1]).all())
    assert t[0] == pytest.approx(model.schedule.t_max) and t[-1] == pytest.approx(
        model.schedule.t_min)
    assert math.isfinite(result.val_loss) and set(result.heuristic_val_losses)
    for fmt in EXPORT_FORMATS:
        assert to_format(fmt, t, model.schedule, model_timesteps=mt)["nfe"] == nfe
    sched = LD3Scheduler.from_learned(t, mt, solver="unipc", order=2,
                                      base_config=model.diffusers_info["scheduler_config"])
    sched.set_timesteps(nfe)
    assert sched.timesteps.shape == (nfe,)


@pytest.mark.parametrize("kind", KINDS)
def test_trust_region_schedule(models, kind):
    model = models[kind]
    p = 2 if model.latent else 1
    t = trust_region.optimize(model.schedule, 5, solver="unipc", order=2, p=p)
    assert t.shape == (6,) and t.dtype == torch.float64
    assert bool((t[1:] < t[:-1]).all())
    assert float(t[0]) == pytest.approx(model.schedule.t_max)
    assert float(t[-1]) == pytest.approx(model.schedule.t_min)
    with torch.no_grad():  # a usable schedule for this model
        x = model.sample_prior(2, torch.Generator().manual_seed(0))
        cond = model.sample_cond(2, torch.Generator().manual_seed(0))
        assert torch.isfinite(solve(model, x, t, "unipc", 2, cond=cond)).all()
