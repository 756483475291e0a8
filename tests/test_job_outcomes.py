"""A job always ends succeeded / failed / cancelled, through HTTP with the real
in-process runner on SQLite and PostgreSQL: an unwritable artifacts folder, and an error text
the database cannot store (NUL, lone surrogate), both end ``failed`` with a readable error."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from api_helpers import database_fixtures, settings_for
from fastapi.testclient import TestClient

from ld3_cli.server import build_app
from ld3_core.spec import TERMINAL_STATES

JOB = {"kind": "trust_region", "model": "builtin:gmm-digits", "solver": "unipc", "order": 2,
       "nfe": 4, "options": {"n_score_samples": 16, "seed": 1}}

module_url, url = database_fixtures("outcomes")


@pytest.fixture
def client_for(url: str, tmp_path: Path):
    """``client_for(artifacts_dir)``: an app with the embedded runner; runners reset after."""
    from worker.dispatch import reset_dispatchers

    clients: list[TestClient] = []

    def make(artifacts: Path) -> TestClient:
        app = build_app(settings_for(url, tmp_path, artifacts_dir=artifacts))
        client = TestClient(app, raise_server_exceptions=False)
        clients.append(client)
        return client

    yield make
    reset_dispatchers()


def wait_terminal(client: TestClient, job_id: str, timeout: float = 120.0) -> dict[str, Any]:
    """Poll GET /jobs/{id} until the job is finished."""
    deadline = time.monotonic() + timeout
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        job = client.get(f"/jobs/{job_id}").json()
        if job["state"] in TERMINAL_STATES:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} never ended: {job}")


def test_unwritable_artifacts_folder_fails_the_job(client_for, tmp_path):
    artifacts = tmp_path / "artifacts"
    artifacts.write_text("a file where the artifacts folder should be")
    client = client_for(artifacts)
    job = client.post("/jobs", json=JOB)
    assert job.status_code == 202, job.text
    done = wait_terminal(client, job.json()["id"])
    assert done["state"] == "failed", done
    assert "Error" in done["error"] and "Not a directory" in done["error"], done["error"]
    assert done["finished_at"] is not None
    assert client.post(f"/jobs/{done['id']}/cancel").status_code == 409


def test_error_text_the_database_cannot_store_still_fails_the_job(client_for, tmp_path,
                                                                 monkeypatch):
    import ld3_core.trust_region as tr

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("bad \x00 byte, \x1b[31m escape, lone \ud800 surrogate")

    monkeypatch.setattr(tr, "optimize", broken)
    client = client_for(tmp_path / "artifacts")
    job = client.post("/jobs", json=JOB)
    assert job.status_code == 202, job.text
    done = wait_terminal(client, job.json()["id"])
    assert done["state"] == "failed", done
    assert done["error"] == "RuntimeError: bad ? byte, ?[31m escape, lone ? surrogate"


def test_cancel_of_a_running_job_completes(client_for, tmp_path, monkeypatch):
    import ld3_core.trust_region as tr

    real = tr.optimize

    def slow(*args: Any, **kwargs: Any) -> Any:
        time.sleep(1.5)
        return real(*args, **kwargs)

    monkeypatch.setattr(tr, "optimize", slow)
    client = client_for(tmp_path / "artifacts")
    job_id = client.post("/jobs", json=JOB).json()["id"]
    deadline = time.monotonic() + 60
    while client.get(f"/jobs/{job_id}").json()["state"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert client.post(f"/jobs/{job_id}/cancel").status_code in (200, 202)
    assert wait_terminal(client, job_id)["state"] == "cancelled"
