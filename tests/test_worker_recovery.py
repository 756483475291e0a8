"""Crash recovery in seconds, not hours: two real ``ld3 worker`` processes on
PostgreSQL + Redis, the broker's visibility timeout set to an hour; SIGKILL the worker running
an LD3 job -> the other worker's stale-job reaper requeues it within
``LD3_STALE_AFTER_S + LD3_REAP_INTERVAL`` and it finishes there with exactly one schedule.
Plus the registry side of the reaper (requeue / cancel / lease respected) on both backends.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from api_helpers import backend_url
from fastapi.testclient import TestClient

from ld3_core.spec import JobSpec

pytestmark = pytest.mark.services

MODEL = "builtin:gmm-digits"
LEASE_S, STALE_S, REAP_S = 2.0, 5.0, 1.0


def _schedules(url: str, job_id: str) -> int:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text("select count(*) from schedules where job_id = :j"),
                                    {"j": job_id}).scalar())
    finally:
        engine.dispose()


def _poll(client: TestClient, job_id: str, until: Any, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        job = client.get(f"/jobs/{job_id}").json()
        if until(job):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not get there in {timeout}s: {job}")


def test_sigkilled_worker_job_finishes_on_another_within_the_bound(
    tmp_path, redis_url, service_env, start_process, monkeypatch
):
    from ld3_cli.server import build_app
    from registry.settings import Settings
    from worker.dispatch import reset_dispatchers

    with backend_url("postgres", tmp_path) as url:
        env = service_env(url, redis_url, LD3_VISIBILITY_TIMEOUT=3600,
                          LD3_LEASE_SECONDS=LEASE_S, LD3_STALE_AFTER_S=STALE_S,
                          LD3_REAP_INTERVAL=REAP_S)
        for name in ("LD3_KEY_PREFIX", "LD3_VISIBILITY_TIMEOUT", "LD3_LEASE_SECONDS"):
            monkeypatch.setenv(name, env[name])
        workers = {
            name: start_process([sys.executable, "-m", "ld3_cli", "worker", "--hostname",
                                 f"{name}@%h"], env, name)
            for name in ("wa", "wb")
        }
        for proc in workers.values():
            proc.wait_for_output("ready.", timeout=180)
        settings = Settings(database_url=url, broker_url=redis_url, artifacts_dir=Path(
            env["LD3_ARTIFACTS_DIR"]), auto_migrate=False)
        try:
            client = TestClient(build_app(settings), raise_server_exceptions=False)
            created = client.post("/jobs", json={
                "kind": "ld3", "model": MODEL, "solver": "unipc", "order": 2, "nfe": 6,
                "options": {"n_train": 8, "n_val": 6, "epochs": 30, "teacher_nfe": 10,
                            "n_score_samples": 64, "seed": 5}})
            assert created.status_code == 202, created.text
            job_id = created.json()["id"]
            job = _poll(client, job_id, lambda j: j["state"] == "running"
                        and j["progress"] >= 0.2, timeout=240)
            victim = job["worker"].split("@")[0]
            survivor = "wb" if victim == "wa" else "wa"
            workers[victim].kill(signal.SIGKILL)
            workers[victim].popen.wait(10)
            killed_at = time.monotonic()
            resumed = _poll(client, job_id, lambda j: j["attempts"] == 2
                            and j["state"] in ("running", "succeeded"), timeout=120)
            took = time.monotonic() - killed_at
            bound = STALE_S + REAP_S + 15.0  # + the survivor picking the task up, loaded CI
            print(f"recovered in {took:.1f}s after the SIGKILL (bound {bound}s)")
            assert took < bound, f"recovery took {took:.1f}s (bound {bound}s)"
            done = _poll(client, job_id, lambda j: j["state"] in (
                "succeeded", "failed", "cancelled"), timeout=240)
            assert done["state"] == "succeeded", done
            assert done["worker"].startswith(survivor + "@"), (done, resumed)
            assert _schedules(url, job_id) == 1
            assert "requeued" in workers[survivor].log()
        finally:
            reset_dispatchers()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_reaper_requeues_cancels_and_respects_live_leases(backend, tmp_path):
    from registry import db
    from registry.jobs import claim_job, create_job, get_job, request_cancel
    from registry.orm import Job
    from registry.settings import Settings
    from worker.reaper import StaleJobReaper

    with backend_url(backend, tmp_path) as url:
        maker = db.get_sessionmaker(Settings(database_url=url))
        ids = []
        with maker() as s:
            for nfe in (4, 5, 6, 7):
                job, _ = create_job(s, JobSpec.parse("trust_region", MODEL, "unipc", nfe, 2))
                claim_job(s, job.id, "dead-worker")
                ids.append(job.id)
            lost, cancelling, leased, fresh = ids
            request_cancel(s, cancelling)
            old = sa.func.now() - sa.text("interval '1 hour'") if backend == "postgres" else (
                sa.text("datetime('now', '-1 hour')"))
            s.execute(sa.update(Job).where(Job.id.in_([lost, cancelling, leased]))
                      .values(heartbeat_at=old))
            s.commit()
        sent: list[str] = []
        reaper = StaleJobReaper(maker, 60.0, 1.0, sent.append, lambda j: j == leased)
        assert reaper.sweep() == [lost] and sent == [lost]
        assert reaper.sweep() == [], "a requeued job is not requeued twice"
        with maker() as s:
            states = {i: (get_job(s, i).state, get_job(s, i).stage) for i in ids}
        assert states == {lost: ("queued", "requeued"), cancelling: ("cancelled", "cancelled"),
                          leased: ("running", "starting"), fresh: ("running", "starting")}
        with maker() as s:
            again = claim_job(s, lost, "new-worker")
        assert again is not None and again.attempts == 2 and again.worker == "new-worker"
