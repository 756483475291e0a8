"""Broker and database outages: 503 from /readyz and POST /jobs while a server is down, no row
written, and recovery without restarting the API once it is back.

Each test stops a server of its OWN (a private redis-server / PostgreSQL cluster on another
port); the shared servers are never touched. The API runs in-process (the same app object
``ld3 serve`` hands to uvicorn) with the real dispatcher of :mod:`worker.dispatch`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

pytestmark = pytest.mark.services

JOB = {"kind": "trust_region", "model": "builtin:gmm-digits", "solver": "unipc", "order": 2,
       "nfe": 5, "options": {"n_score_samples": 16}}


def _wait(pred: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.2)
    raise AssertionError("condition not reached in time")


def _count_jobs(settings: Any) -> int:
    from registry import count_jobs
    from registry.db import session_scope

    with session_scope(settings) as session:
        return count_jobs(session)


def _problem(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    body = resp.json()
    assert body["status"] == status
    return body


def _app(settings: Any) -> TestClient:
    from ld3_cli.server import build_app
    from registry.db import init_db

    init_db(settings)
    return TestClient(build_app(settings))


def test_redis_outage_gives_503_and_recovers_without_restart(
    private_redis, make_settings, tmp_path
):
    from worker.dispatch import CeleryDispatcher, reset_dispatchers

    token = "t0ken"
    settings = make_settings(
        database_url=f"sqlite:///{tmp_path / 'r.db'}", broker_url=private_redis.url,
        api_token=token, broker_timeout_s=1.0, ready_timeout_s=2.0,
    )
    auth = {"Authorization": f"Bearer {token}"}
    try:
        with _app(settings) as client:
            assert isinstance(client.app.state.dispatcher, CeleryDispatcher)
            assert client.get("/readyz").status_code == 200
            assert client.post("/jobs", json=JOB, headers=auth).status_code == 202
            assert _count_jobs(settings) == 1

            private_redis.stop()
            body = _problem(client.get("/readyz"), 503)
            assert body["checks"]["database"] == "ok" and body["checks"]["broker"] != "ok"
            started = time.monotonic()
            _problem(client.post("/jobs", json=JOB, headers=auth), 503)
            assert time.monotonic() - started < 10, "submission must fail fast"
            assert _count_jobs(settings) == 1, "a rejected submission must not leave a row"

            private_redis.start()  # same port, same API process
            _wait(lambda: client.get("/readyz").status_code == 200)
            resp = client.post("/jobs", json=JOB, headers=auth)
            assert resp.status_code == 202, resp.text
            assert _count_jobs(settings) == 2
            import redis

            queued = redis.Redis.from_url(private_redis.url).llen("ld3:ld3")
            assert queued == 1, "the job after recovery must be on the queue"
    finally:
        reset_dispatchers()


def test_postgres_outage_gives_503_and_recovers_without_restart(
    private_postgres, make_settings, redis_url, redis_prefix, monkeypatch
):
    from registry.db import dispose_engines
    from worker.dispatch import reset_dispatchers
    from worker.pipeline import RegistryUnavailable, run_job

    monkeypatch.setenv("LD3_KEY_PREFIX", f"{redis_prefix}-outage")
    token = "t0ken"
    url = private_postgres.create_database("ld3_outage")
    settings = make_settings(
        database_url=url, broker_url=redis_url, api_token=token, ready_timeout_s=3.0,
        db_connect_timeout_s=2,
    )
    auth = {"Authorization": f"Bearer {token}"}
    try:
        with _app(settings) as client:
            assert client.get("/readyz").status_code == 200
            first = client.post("/jobs", json=JOB, headers=auth)
            assert first.status_code == 202, first.text

            private_postgres.stop()
            body = _problem(client.get("/readyz"), 503)
            assert body["checks"]["database"] != "ok"
            _problem(client.post("/jobs", json=JOB, headers=auth), 503)
            _problem(client.get(f"/jobs/{first.json()['id']}"), 503)
            # a worker receiving the job now does not fail it: it asks to be retried
            with pytest.raises(RegistryUnavailable):
                run_job(first.json()["id"], settings)

            private_postgres.start()
            _wait(lambda: client.get("/readyz").status_code == 200)
            again = client.post("/jobs", json=JOB, headers=auth)
            assert again.status_code == 202, again.text
            assert client.get(f"/jobs/{first.json()['id']}").json()["state"] == "queued"
            assert _count_jobs(settings) == 2, "the 503 submission must not have left a row"
    finally:
        reset_dispatchers()
        dispose_engines()
