"""GET /schedules on SQLite and the real PostgreSQL: best schedule, export formats, ETag/304,
Cache-Control, interpolation for NFEs never learned, model ids with '/' and ':', listing, and
the per-job report files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from api_helpers import (
    RecordingDispatcher,
    assert_problem,
    database_fixtures,
    logsnr_times,
    publish_fake_result,
    settings_for,
    vp_config,
)
from fastapi.testclient import TestClient

from api.app import create_app
from ld3_core.export import parse_comfyui_sigmas, to_format
from ld3_core.schedules import DiscreteVP, VPLinear
from ld3_core.spec import JobSpec
from registry import db
from registry import jobs as jr
from registry import schedules as sr
from registry.catalog import register_model
from registry.settings import Settings

KEY = "/schedules/builtin:gmm-digits/unipc"
F64 = torch.float64


module_url, url = database_fixtures("sched")


@pytest.fixture
def client(url: str, tmp_path: Path) -> TestClient:
    """A client of an app on the test database (artifacts in tmp_path/artifacts)."""
    return TestClient(create_app(settings_for(url, tmp_path), RecordingDispatcher()),
                      raise_server_exceptions=False)


def kd_sigmas(times: list[float]) -> list[float]:
    return VPLinear().kd_sigma(torch.tensor(times, dtype=F64)).tolist()


def test_best_schedule_native_with_etag_and_cache(client, url):
    row = publish_fake_result(url, nfe=6, score=2.0, decoupled=True)
    response = client.get(f"{KEY}/6")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["timesteps"] == pytest.approx(row.timesteps, abs=0)
    assert body["model_timesteps"] == pytest.approx(row.model_timesteps, abs=0)
    assert body["sigmas"] == pytest.approx(kd_sigmas(row.timesteps), rel=1e-12)
    assert len(body["timesteps"]) == 7
    assert (body["model"], body["solver"], body["order"], body["nfe"]) == (
        "builtin:gmm-digits", "unipc", 2, 6)
    assert (body["score"], body["metric"], body["extractor"]) == (2.0, "fd", "digits")
    assert body["job_id"] == row.job_id and body["schedule_id"] == row.id
    assert body["interpolated"] is False and body["created_at"]
    assert body["noise_schedule"] == "vp_linear"
    assert response.headers["cache-control"] == "public, max-age=300"
    assert response.headers["x-ld3-interpolated"] == "false"
    assert response.headers["link"] == f'<{body["links"]["canonical"]}>; rel="canonical"'
    etag = response.headers["etag"]
    for inm in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        cached = client.get(f"{KEY}/6", headers={"If-None-Match": inm})
        assert cached.status_code == 304 and cached.content == b""
        assert cached.headers["etag"] == etag
    assert client.get(f"{KEY}/6", headers={"If-None-Match": '"stale"'}).status_code == 200
    # the immutable canonical URL
    canonical = client.get(body["links"]["canonical"])
    assert canonical.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert canonical.json()["timesteps"] == body["timesteps"]
    # a better schedule for the same key replaces it (new ETag); the old one stays at its id
    better = publish_fake_result(url, nfe=6, score=1.0, jitter=0.5)
    newer = client.get(f"{KEY}/6", headers={"If-None-Match": etag})
    assert newer.status_code == 200 and newer.json()["schedule_id"] == better.id
    assert newer.headers["etag"] != etag
    assert client.get(body["links"]["canonical"]).json()["schedule_id"] == row.id


@pytest.mark.parametrize("fmt", ["diffusers", "k-diffusion", "comfyui"])
def test_export_formats(client, url, fmt):
    row = publish_fake_result(url, nfe=5, decoupled=True)
    response = client.get(f"{KEY}/5", params={"format": fmt})
    assert response.status_code == 200, response.text
    body = response.json()
    expected = to_format(fmt, torch.tensor(row.timesteps, dtype=F64), VPLinear(),
                         model_timesteps=torch.tensor(row.model_timesteps, dtype=F64))
    assert body.pop("source") == (row.extra or {}).get("source", row.kind)
    assert body == {**json.loads(json.dumps(expected)), "interpolated": False}
    sigmas = kd_sigmas(row.timesteps)
    if fmt == "k-diffusion":  # n+1 values: exactly n model calls when pasted verbatim
        assert body["sigmas"] == pytest.approx(sigmas, rel=1e-12)
        assert body["sigmas_with_final_denoise"][-1] == 0.0
    elif fmt == "comfyui":
        assert parse_comfyui_sigmas(body["sigmas"]) == pytest.approx(sigmas, rel=1e-9)
    else:
        assert body["sigmas"] == pytest.approx(sigmas, rel=1e-12)
    assert "etag" in response.headers
    again = client.get(f"{KEY}/5", params={"format": fmt},
                       headers={"If-None-Match": response.headers["etag"]})
    assert again.status_code == 304


def test_diffusers_export_of_a_discrete_schedule_gives_integer_timesteps(client, url):
    cfg = DiscreteVP.from_betas(0.00085, 0.012, 1000, "scaled_linear").config()
    row = publish_fake_result(url, nfe=6, noise_schedule=cfg, model="builtin:unet-digits")
    body = client.get("/schedules/builtin:unet-digits/unipc/6",
                      params={"format": "diffusers"}).json()
    expected = [round(1000 * t - 1) for t in row.timesteps[:-1]]
    assert body["timesteps"] == expected and all(isinstance(t, int) for t in body["timesteps"])


def test_interpolated_schedule_for_an_nfe_never_learned(client, url):
    from ld3_core.interpolate import interpolate_schedule

    six = publish_fake_result(url, nfe=6, score=1.0)
    ten = publish_fake_result(url, nfe=10, score=1.0)
    response = client.get(f"{KEY}/8")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["interpolated"] is True and body["source_nfe"] == 10  # tie: larger NFE
    assert body["source_schedule_id"] == ten.id
    assert body["job_id"] is None and body["score"] is None and body["model_timesteps"] is None
    expected = interpolate_schedule({10: torch.tensor(ten.timesteps, dtype=F64)}, 8, VPLinear())
    assert body["timesteps"] == pytest.approx(expected.tolist(), rel=1e-12)
    ts = body["timesteps"]
    assert len(ts) == 9 and all(a > b for a, b in zip(ts, ts[1:], strict=False))
    assert body["sigmas"] == pytest.approx(kd_sigmas(ts), rel=1e-12)
    assert response.headers["cache-control"] == "public, max-age=30"
    assert response.headers["x-ld3-interpolated"] == "true"
    assert response.headers["x-ld3-source-nfe"] == "10"
    etag = response.headers["etag"]
    assert client.get(f"{KEY}/8", headers={"If-None-Match": etag}).status_code == 304
    assert client.get(f"{KEY}/7").json()["source_nfe"] == six.nfe
    kd = client.get(f"{KEY}/8", params={"format": "k-diffusion"}).json()
    assert kd["interpolated"] is True and kd["source_nfe"] == 10 and len(kd["sigmas"]) == 9
    # once NFE 8 is learned, the published one is served instead
    learned = publish_fake_result(url, nfe=8)
    assert client.get(f"{KEY}/8").json()["schedule_id"] == learned.id


def test_not_found_and_bad_parameters(client, url):
    publish_fake_result(url, nfe=6)
    assert_problem(client.get("/schedules/builtin:gmm-digits/dpm++/6"), 404,
                   "schedule-not-found")
    assert_problem(client.get(f"{KEY}/6", params={"order": 3}), 404, "schedule-not-found")
    assert_problem(client.get("/schedules/builtin:unknown/unipc/6"), 404)
    assert_problem(client.get("/schedules/only-two/segments"), 404)
    assert_problem(client.get("/schedules/id/987654"), 404)
    for path, params, where in [
        ("/schedules/builtin:gmm-digits/rk45/6", {}, "solver"),
        (f"{KEY}/abc", {}, "nfe"),
        (f"{KEY}/0", {}, "nfe"),
        (f"{KEY}/1000", {}, "nfe"),
        (f"{KEY}/6", {"order": 9}, "order"),
        (f"{KEY}/6", {"order": "two"}, "order"),
        (f"{KEY}/6", {"format": "png"}, "format"),
        ("/schedules/builtin:gmm-digits/euler/6", {"order": 2}, "order"),
    ]:
        problem = assert_problem(client.get(path, params=params), 422)
        assert where in json.dumps(problem["errors"]), (path, problem)


def test_model_ids_with_slashes_and_solver_with_plus(client, url):
    with db.session_scope(Settings(database_url=url)) as s:
        register_model(s, source="org/tiny-sd", kind="text2img", noise_schedule=vp_config())
    row = publish_fake_result(url, model="org/tiny-sd", solver="dpm++", order=3, nfe=4)
    for path in ("/schedules/org/tiny-sd/dpm++/4?order=3",
                 "/schedules/org%2Ftiny-sd/dpm%2B%2B/4?order=3"):
        body = client.get(path).json()
        assert body["schedule_id"] == row.id and body["model"] == "org/tiny-sd", path
    assert body["links"]["self"] == "/schedules/org/tiny-sd/dpm++/4?order=3"
    assert client.get(body["links"]["self"]).json()["schedule_id"] == row.id
    job = client.get(f"/jobs/{row.job_id}").json()
    assert client.get(job["links"]["schedule"]).json()["schedule_id"] == row.id
    assert client.get(job["links"]["result"]).json()["schedule_id"] == row.id


def test_export_needs_a_known_noise_schedule(client, url):
    with db.session_scope(Settings(database_url=url)) as s:
        register_model(s, source="org/mystery", kind="pixel")
        job, _ = jr.create_job(s, JobSpec.parse("ld3", "org/mystery", "unipc", 3, 2))
        jr.claim_job(s, job.id, "w")
        sr.publish_result(s, job.id, timesteps=[1.0, 0.5, 0.2, 0.01], sigmas=[9, 3, 1, 0.1])
    native = client.get("/schedules/org/mystery/unipc/3")
    assert native.status_code == 200 and native.json()["sigmas"] == [9, 3, 1, 0.1]
    assert_problem(client.get("/schedules/org/mystery/unipc/3", params={"format": "comfyui"}),
                   422, "noise-schedule-unknown")
    assert_problem(client.get("/schedules/org/mystery/unipc/4"), 422, "noise-schedule-unknown")


def test_builtin_models_noise_schedule_comes_from_ld3_core(client, url):
    from ld3_core.models import load

    times = logsnr_times(4)
    with db.session_scope(Settings(database_url=url)) as s:
        job, _ = jr.create_job(s, JobSpec.parse("ld3", "builtin:gmm-digits", "unipc", 4, 2))
        jr.claim_job(s, job.id, "w")
        sr.publish_result(s, job.id, timesteps=times, sigmas=[5, 4, 3, 2, 1])  # no config
    body = client.get(f"{KEY}/4", params={"format": "k-diffusion"})
    assert body.status_code == 200, body.text
    schedule = load("builtin:gmm-digits").schedule
    expected = schedule.kd_sigma(torch.tensor(times, dtype=F64)).tolist()
    assert body.json()["sigmas"] == pytest.approx(expected, rel=1e-12)


def test_list_schedules(client, url):
    made = [publish_fake_result(url, nfe=n) for n in (4, 5, 6)]
    publish_fake_result(url, nfe=5, solver="euler", order=1)
    body = client.get("/schedules", params={"limit": 2}).json()
    assert body["total"] == 4 and len(body["items"]) == 2 and body["next"]
    assert len(client.get(body["next"]).json()["items"]) == 2
    unipc = client.get("/schedules", params={"solver": "unipc"}).json()
    assert sorted(i["schedule_id"] for i in unipc["items"]) == sorted(r.id for r in made)
    assert client.get("/schedules", params={"nfe": 5, "order": 1}).json()["total"] == 1
    assert client.get("/schedules", params={"model": "nope"}).json()["total"] == 0
    assert_problem(client.get("/schedules", params={"limit": 101}), 422)


def test_job_report_files(client, url, tmp_path):
    from PIL import Image

    art = tmp_path / "artifacts"
    (art / "r1").mkdir(parents=True)
    report = {"model": "builtin:gmm-digits", "schedules": {"uniform": {"fd": 3.0}}}
    (art / "r1" / "report.json").write_text(json.dumps(report))
    Image.new("RGB", (8, 4), (255, 0, 0)).save(art / "r1" / "grid.png")
    plot = tmp_path / "elsewhere" / "fd.png"  # absolute paths work too
    plot.parent.mkdir()
    Image.new("RGB", (4, 4), (0, 0, 255)).save(plot)
    row = publish_fake_result(url, artifacts={
        "report_json": "r1/report.json", "grid_png": "r1/grid.png", "fd_plot_png": str(plot)})
    job = client.get(f"/jobs/{row.job_id}").json()
    assert job["state"] == "succeeded" and job["progress"] == 1.0
    links = job["links"]
    assert "cancel" not in links
    got = client.get(links["report"])
    assert got.status_code == 200 and got.headers["content-type"] == "application/json"
    assert got.json() == report
    grid = client.get(links["report_grid"])
    assert grid.headers["content-type"] == "image/png"
    assert grid.content == (art / "r1" / "grid.png").read_bytes()
    assert client.get(links["report_fd_vs_nfe"]).content == plot.read_bytes()
    # missing pieces are 404 problems
    bare = publish_fake_result(url, nfe=4)
    assert "report" not in client.get(f"/jobs/{bare.job_id}").json()["links"]
    assert_problem(client.get(f"/jobs/{bare.job_id}/report"), 404)
    assert_problem(client.get(f"/jobs/{bare.job_id}/report/grid.png"), 404)
    assert_problem(client.get("/jobs/nope/report/fd_vs_nfe.png"), 404)
    (art / "r1" / "grid.png").unlink()
    assert_problem(client.get(links["report_grid"]), 404)

