"""Full flow with REAL processes: the compose commands (``ld3 migrate``, ``ld3 serve``,
``ld3 worker``) against PostgreSQL and Redis (see ``service_stack`` in tests/fixtures/compose.py).

- submit -> progress on the job row -> published -> GET the schedule in every format;
- cancel a running LD3 job -> cancelled, nothing published;
- SIGKILL the worker mid-job, start a new one -> the job resumes and publishes ONE schedule;
- embedded mode: the in-process runner completes a trust-region job with SQLite.

Job settings are tiny (the GMM digits model, small sample counts) to keep this fast.
"""

from __future__ import annotations

import signal
import time
from typing import Any

import pytest
import sqlalchemy as sa

from ld3_client import schedule_path
from ld3_core.spec import TERMINAL_STATES

pytestmark = pytest.mark.services

MODEL = "builtin:gmm-digits"
TR_OPTIONS = {"n_score_samples": 64, "teacher_nfe": 10, "seed": 3}


def _schedule_rows(stack: Any, job_id: str) -> int:
    engine = sa.create_engine(stack.database_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(
                sa.text("select count(*) from schedules where job_id = :j"), {"j": job_id}
            ).scalar())
    finally:
        engine.dispose()


def _submit(stack: Any, body: dict[str, Any]) -> dict[str, Any]:
    with stack.client() as http:
        resp = http.post("/jobs", json=body)
    assert resp.status_code == 202, resp.text
    assert resp.headers["Location"].endswith(resp.json()["id"])
    return resp.json()


def test_submit_progress_publish_and_every_format(service_stack):
    stack = service_stack
    nfe = 5
    job = _submit(stack, {"kind": "trust_region", "model": MODEL, "solver": "unipc",
                          "order": 2, "nfe": nfe, "options": TR_OPTIONS})
    seen: list[dict[str, Any]] = []
    done = stack.wait_job(job["id"], seen=seen, timeout=240)
    assert done["state"] == "succeeded", done
    assert done["progress"] == pytest.approx(1.0) and done["attempts"] == 1
    running = [j for j in seen if j["state"] == "running"]
    assert running, "the job was never seen running"
    fractions = [j["progress"] for j in seen]
    assert fractions == sorted(fractions), "progress must never go backwards"
    assert {j["stage"] for j in running} & {"optimize", "score", "report", "publish"}
    for j in seen:  # the fraction of the stage: set exactly in the pipeline's stages
        weighted = j["stage"] in ("optimize", "report", "publish")
        assert (j["stage_progress"] is not None) == weighted, j
        assert not weighted or 0.0 <= j["stage_progress"] <= 1.0
    assert _schedule_rows(stack, job["id"]) == 1

    with stack.client() as http:
        native = http.get(schedule_path(MODEL, "unipc", nfe))
        assert native.status_code == 200, native.text
        body = native.json()
        ts = body["timesteps"]
        assert len(ts) == nfe + 1 and all(a > b for a, b in zip(ts, ts[1:], strict=False))
        assert body["job_id"] == job["id"] and body["score"] is not None
        assert body["source"] == "trust_region" or body["source"].startswith("heuristic:")
        lo, hi = body["score_ci"]
        assert lo <= body["score"] <= hi
        assert len(body["sigmas"]) == nfe + 1
        etag = native.headers["ETag"]
        assert http.get(schedule_path(MODEL, "unipc", nfe),
                        headers={"If-None-Match": etag}).status_code == 304

        kd = http.get(schedule_path(MODEL, "unipc", nfe), params={"format": "k-diffusion"})
        assert kd.status_code == 200, kd.text
        sig = kd.json()["sigmas"]
        assert len(sig) == nfe + 1  # exactly nfe model calls when pasted verbatim
        assert sig == pytest.approx(body["sigmas"])
        comfy = http.get(schedule_path(MODEL, "unipc", nfe), params={"format": "comfyui"})
        assert comfy.status_code == 200, comfy.text
        values = [float(v) for v in comfy.json()["sigmas"].split(",")]
        assert values == pytest.approx(sig)
        diff = http.get(schedule_path(MODEL, "unipc", nfe), params={"format": "diffusers"})
        assert diff.status_code == 200, diff.text
        assert diff.json()["sigmas"] == pytest.approx(body["sigmas"])
        assert diff.json()["ld3_scheduler"]["timesteps"] == pytest.approx(ts)

        report = http.get(f"/jobs/{job['id']}/report")
        assert report.status_code == 200, report.text
        assert report.json()["source"] == body["source"]
        assert str(stack.artifacts) not in report.text, "no server path in a served report"
        for png in ("grid.png", "fd_vs_nfe.png", "schedule.png"):
            image = http.get(f"/jobs/{job['id']}/report/{png}")
            assert image.status_code == 200, (png, image.text[:300])
            assert image.content[:8] == b"\x89PNG\r\n\x1a\n"


def test_cancel_a_running_ld3_job_publishes_nothing(service_stack):
    stack = service_stack
    job = _submit(stack, {
        "kind": "ld3", "model": MODEL, "solver": "unipc", "order": 2, "nfe": 4,
        "options": {"n_train": 20, "n_val": 10, "epochs": 400, "teacher_nfe": 10,
                    "n_score_samples": 64, "n_tune": 20, "ld3_inits": 1},
    })
    stack.wait_job(job["id"], timeout=180,
                   until=lambda j: j["state"] == "running" and j["stage"] == "optimize")
    with stack.client() as http:
        resp = http.post(f"/jobs/{job['id']}/cancel")
    assert resp.status_code in (200, 202), resp.text
    started = time.monotonic()
    done = stack.wait_job(job["id"], timeout=60)
    assert done["state"] == "cancelled", done
    assert time.monotonic() - started < 30, "cancel must be honoured between iterations"
    assert _schedule_rows(stack, job["id"]) == 0
    assert stack.worker is not None and stack.worker.popen.poll() is None


def _checkpointed_iteration(ld3_dir) -> int:
    """The highest training iteration saved in an unfinished LD3 checkpoint under
    ``ld3_dir`` (0 when none)."""
    from ld3_core.ld3 import checkpoint

    done = 0
    for state_file in ld3_dir.glob("*/state.pt"):
        try:
            state = checkpoint.load_state(state_file.parent)
        except Exception:  # noqa: BLE001 - being replaced right now: look again next poll
            continue
        if state is not None and state.get("result") is None:
            done = max(done, int(state["trainer"]["iteration"]))
    return done


def test_sigkilled_worker_job_resumes_on_a_new_worker_with_one_schedule(service_stack):
    from worker.paths import JobPaths

    stack = service_stack
    job = _submit(stack, {
        "kind": "ld3", "model": MODEL, "solver": "unipc", "order": 2, "nfe": 6,
        "options": {"n_train": 8, "n_val": 6, "epochs": 12, "teacher_nfe": 10,
                    "n_score_samples": 64, "seed": 5, "n_tune": 16, "ld3_inits": 1,
                    "refine_max_evals": 10},
    })
    paths = JobPaths(stack.artifacts, job["id"])
    ld3_dir = paths.ckpt_dir / "optimize" / "ld3"
    # kill once a checkpoint holds trained iterations (the first one is written before any)
    stack.wait_job(job["id"], timeout=180, until=lambda j: j["state"] == "running"
                   and _checkpointed_iteration(ld3_dir) >= 1)
    assert stack.worker is not None
    killed = stack.worker
    killed.kill(signal.SIGKILL)
    killed.popen.wait(10)
    with stack.client() as http:
        assert http.get(f"/jobs/{job['id']}").json()["state"] == "running"

    stack.start_worker()
    done = stack.wait_job(job["id"], timeout=240)
    assert done["state"] == "succeeded", done
    assert done["attempts"] == 2
    assert _schedule_rows(stack, job["id"]) == 1
    starts = [e for e in paths.events() if e["event"] == "start"]
    assert len(starts) == 2 and starts[1]["attempt"] == 2
    assert starts[1]["ld3_checkpoint"] is True, "the second attempt must find the checkpoint"
    optimized = [e for e in paths.events() if e["event"] == "optimized"]
    assert len(optimized) == 1 and optimized[0]["attempt"] == 2
    assert optimized[0]["first_iteration"] > 1, "training must resume, not restart"


def test_embedded_runner_completes_a_trust_region_job_on_sqlite(make_settings, tmp_path):
    from fastapi.testclient import TestClient

    from ld3_cli.server import build_app
    from worker.dispatch import EmbeddedDispatcher, reset_dispatchers

    settings = make_settings(database_url=f"sqlite:///{tmp_path / 'embedded.db'}")
    assert settings.embedded
    try:
        with TestClient(build_app(settings)) as client:
            assert isinstance(client.app.state.dispatcher, EmbeddedDispatcher)
            resp = client.post("/jobs", json={"kind": "trust_region", "model": MODEL,
                                              "solver": "dpm++", "order": 2, "nfe": 4,
                                              "options": TR_OPTIONS})
            assert resp.status_code == 202, resp.text
            job_id = resp.json()["id"]
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                job = client.get(f"/jobs/{job_id}").json()
                if job["state"] in TERMINAL_STATES:
                    break
                time.sleep(0.2)
            assert job["state"] == "succeeded", job
            sched = client.get(schedule_path(MODEL, "dpm++", 4))
            assert sched.status_code == 200, sched.text
            assert sched.json()["job_id"] == job_id
    finally:
        reset_dispatchers()
