"""LD3Scheduler as a diffusers scheduler: config, set_timesteps, step, service fetch, img2img."""

from __future__ import annotations

import json

import httpx
import pytest
import torch

pytest.importorskip("diffusers")

import real_models_helpers as H  # noqa: E402
from diffusers import DDPMScheduler, DPMSolverMultistepScheduler  # noqa: E402

from ld3_client import schedule_path  # noqa: E402
from ld3_core.diffusers_scheduler import LD3Scheduler, with_fixed_schedule  # noqa: E402
from ld3_core.export import to_format  # noqa: E402
from ld3_core.heuristics import discretize  # noqa: E402
from ld3_core.models import DiffusionModel  # noqa: E402
from ld3_core.models.diffusers_loader import schedule_from_scheduler_config  # noqa: E402
from ld3_core.solvers import solve  # noqa: E402

BASE = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                     prediction_type="v_prediction").config
SCHED = schedule_from_scheduler_config(BASE)


def _net(x: torch.Tensor, t_in: torch.Tensor, **_) -> torch.Tensor:
    """A smooth stand-in network (v-prediction) that depends on x and the time input."""
    return 0.3 * torch.tanh(x) * torch.cos(t_in / 250.0).reshape(-1, 1, 1, 1) + 0.01 * t_in.reshape(
        -1, 1, 1, 1) / 1000.0


MODEL = DiffusionModel(_net, SCHED, "v", sample_shape=(2, 4, 4))


def _run(scheduler: LD3Scheduler, x: torch.Tensor) -> torch.Tensor:
    """The loop every diffusers pipeline runs."""
    x = x * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        inp = scheduler.scale_model_input(x, t)
        out = _net(inp, t.expand(x.shape[0]).to(x.dtype))
        x = scheduler.step(out, t, x).prev_sample
    return x


def test_manual_loop_equals_solve_including_decoupled_times():
    t, mt = H.learned_schedule(SCHED, 7)
    x = torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    for solver, order in (("unipc", 3), ("dpm++", 2), ("ipndm", 2), ("euler", 1)):
        sch = LD3Scheduler.from_learned(t, mt, solver=solver, order=order, base_config=BASE)
        sch.set_timesteps(7)
        torch.testing.assert_close(sch.timesteps, (1000 * mt[:-1] - 1).float())
        with torch.no_grad():
            torch.testing.assert_close(_run(sch, x), solve(MODEL, x, t, solver, order,
                                                           model_timesteps=mt),
                                       rtol=1e-6, atol=1e-6)


def test_set_timesteps_forms_agree_and_fall_back_to_a_heuristic():
    t, _ = H.learned_schedule(SCHED, 5)
    sch = LD3Scheduler.from_config(BASE)  # any diffusers config works
    assert sch.config.prediction_type == "v_prediction" and len(sch) == 1000
    assert "DPMSolverMultistepScheduler" in [c.__name__ for c in sch.compatibles]
    sch.set_timesteps(timesteps=t)
    a = sch.timesteps.clone()
    sch.set_timesteps(sigmas=to_format("native", t, SCHED)["sigmas"])
    torch.testing.assert_close(sch.timesteps, a)
    sch.set_timesteps(num_inference_steps=4)  # no learned schedule: logSNR steps
    torch.testing.assert_close(sch._t, discretize("logsnr", 4, SCHED))
    assert sch.num_inference_steps == 4 and sch.sigmas.shape == (5,)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "exactly one"),
        ({"num_inference_steps": 3, "timesteps": [1.0, 0.5, 0.001]}, "exactly one"),
        ({"sigmas": [14.6, 1.0, 0.0]}, "trailing 0.0"),
        ({"timesteps": [0.5, 1.0]}, "decreasing"),
        ({"num_inference_steps": 4, "model_timesteps": [1.0, 0.5]}, "go with timesteps"),
        ({"timesteps": [1.0, 0.5, 0.001], "model_timesteps": [1.0, 0.5]}, "shape"),
    ],
)
def test_set_timesteps_rejects_bad_input(kwargs, match):
    sch = LD3Scheduler.from_config(BASE)
    with pytest.raises(ValueError, match=match):
        sch.set_timesteps(**kwargs)


def test_learned_length_mismatch_step_order_and_bad_config():
    t, _ = H.learned_schedule(SCHED, 5)
    sch = LD3Scheduler.from_learned(t, base_config=BASE)
    with pytest.raises(ValueError, match="5 steps"):
        sch.set_timesteps(8)
    x = torch.zeros(1, 2, 4, 4)
    with pytest.raises(ValueError, match="set_timesteps"):
        LD3Scheduler.from_learned(t, base_config=BASE).step(x, 0, x)
    sch.set_timesteps(5)
    for step_t in sch.timesteps:
        x = sch.step(torch.zeros_like(x), step_t, x).prev_sample
    with pytest.raises(ValueError, match="all steps are done"):
        sch.step(x, 0, x)
    with pytest.raises(ValueError, match="orders"):
        LD3Scheduler(solver="euler", solver_order=2)
    with pytest.raises(ValueError, match="unknown solver"):
        LD3Scheduler(solver="heun")
    with pytest.raises(ValueError, match="prediction_type"):
        LD3Scheduler(prediction_type="flow_prediction")  # without a FlowMatch schedule_config
    with pytest.raises(ValueError, match="prediction_type"):
        LD3Scheduler(prediction_type="score")


def test_save_and_reload_keeps_the_learned_schedule(tmp_path):
    t, mt = H.learned_schedule(SCHED, 6)
    sch = LD3Scheduler.from_learned(t, mt, solver="ipndm", order=3, variant="variable",
                                    base_config=BASE)
    sch.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "scheduler_config.json").read_text())
    assert cfg["_class_name"] == "LD3Scheduler" and cfg["learned_timesteps"] == t.tolist()
    again = LD3Scheduler.from_pretrained(tmp_path)
    x = torch.randn(2, 2, 4, 4, generator=torch.Generator().manual_seed(1))
    sch.set_timesteps(6)
    again.set_timesteps(6)
    with torch.no_grad():
        torch.testing.assert_close(_run(again, x), _run(sch, x))


def test_half_precision_state_is_stepped_in_float32():
    t, _ = H.learned_schedule(SCHED, 4)
    sch = LD3Scheduler.from_learned(t, solver="unipc", order=2, base_config=BASE)
    sch.set_timesteps(4)
    x = torch.randn(2, 2, 4, 4, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = solve(MODEL, x, t, "unipc", 2)
        y = x.half()
        for step_t in sch.timesteps:
            y = sch.step(_net(y.float(), step_t.expand(2)).half(), step_t, y).prev_sample
    assert y.dtype == torch.float16
    assert H.rel_err(y.float(), ref) < 5e-3


def test_img2img_begin_index_and_add_noise():
    t, _ = H.learned_schedule(SCHED, 6)
    sch = LD3Scheduler.from_learned(t, solver="dpm++", order=2, base_config=BASE)
    sch.set_timesteps(6)
    x0 = torch.randn(2, 2, 4, 4, generator=torch.Generator().manual_seed(3))
    noise = torch.randn(2, 2, 4, 4, generator=torch.Generator().manual_seed(4))
    start = 2
    noisy = sch.add_noise(x0, noise, sch.timesteps[start:start + 1].repeat(2))
    a, s = SCHED.alpha(t[start]).float(), SCHED.sigma(t[start]).float()
    torch.testing.assert_close(noisy, a * x0 + s * noise)
    sch.set_begin_index(start)
    x = noisy
    with torch.no_grad():
        for step_t in sch.timesteps[start:]:
            x = sch.step(_net(x, step_t.expand(2)), step_t, x).prev_sample
        ref = solve(MODEL, noisy, t[start:], "dpm++", 2)
    torch.testing.assert_close(x, ref, rtol=1e-6, atol=1e-6)


def test_from_service_fetches_the_native_schedule():
    t, mt = H.learned_schedule(SCHED, 5)
    seen = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen["url"] = str(request.url)
        seen["auth"] = request.headers.get("authorization")
        if "/builtin:nope/" in request.url.path:
            return httpx.Response(404, json={"title": "Not Found", "detail": "no schedule"})
        body = to_format("native", t, SCHED, model_timesteps=mt)
        body.update({"solver": "unipc", "order": 3})
        return httpx.Response(200, json=body)

    client = httpx.Client(transport=httpx.MockTransport(handler))
    sch = LD3Scheduler.from_service("http://svc/", "org/my-model", "unipc", 5,
                                    base_config=BASE, client=client,
                                    headers={"Authorization": "Bearer tok"})
    assert seen["url"] == f"http://svc{schedule_path('org/my-model', 'unipc', 5)}?format=native"
    assert seen["auth"] == "Bearer tok"
    assert sch.config.solver_order == 3 and sch.config.learned_model_timesteps == mt.tolist()
    sch.set_timesteps(5)
    torch.testing.assert_close(sch.timesteps, (1000 * mt[:-1] - 1).float())
    LD3Scheduler.from_service("http://svc", "org/my-model", "dpm++", 5, order=2,
                              base_config=BASE, client=client)
    assert seen["url"].endswith(f"{schedule_path('org/my-model', 'dpm++', 5)}"
                                "?format=native&order=2")
    with pytest.raises(ValueError, match="404.*no schedule"):
        LD3Scheduler.from_service("http://svc", "builtin:nope", "unipc", 5, client=client)
    assert not client.is_closed, "a client passed in is left open"


def test_from_service_reports_an_unreachable_service():
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    client = httpx.Client(transport=httpx.MockTransport(refuse))
    with pytest.raises(ValueError, match="cannot reach the schedule service at http://svc"):
        LD3Scheduler.from_service("http://svc", "m", "unipc", 5, client=client)
    with pytest.raises(ValueError, match="http://"):
        LD3Scheduler.from_service("svc:8000", "m", "unipc", 5, client=client)


def test_from_schedule_builds_from_a_native_body_only():
    t, mt = H.learned_schedule(SCHED, 4)
    body = to_format("native", t, SCHED, model_timesteps=mt)
    body.update({"solver": "dpm++", "order": 2})
    sch = LD3Scheduler.from_schedule(body, base_config=BASE)
    assert sch.config.solver == "dpm++" and sch.config.solver_order == 2
    assert sch.config.learned_timesteps == pytest.approx(t.tolist())
    # what the body does not say comes from the arguments
    bare = {"timesteps": t.tolist()}
    sch = LD3Scheduler.from_schedule(bare, solver="euler", order=1, base_config=BASE)
    assert sch.config.solver == "euler" and sch.config.learned_model_timesteps is None
    with pytest.raises(ValueError, match="names no solver"):
        LD3Scheduler.from_schedule(bare, base_config=BASE)
    with pytest.raises(ValueError, match="'diffusers' format"):
        LD3Scheduler.from_schedule({**body, "format": "diffusers"}, base_config=BASE)
    with pytest.raises(ValueError, match="no 'timesteps'"):
        LD3Scheduler.from_schedule({"solver": "unipc"}, base_config=BASE)


def test_with_fixed_schedule_ignores_the_pipelines_step_count():
    sch = DPMSolverMultistepScheduler.from_config(BASE, final_sigmas_type="sigma_min")
    sch = with_fixed_schedule(sch, timesteps=[999, 700, 300, 50])
    sch.set_timesteps(25)
    assert sch.timesteps.tolist() == [999, 700, 300, 50]
