"""``ld3 demo`` writes to the store ``ld3 serve`` and the client commands use by default: after
the demo, the API built from the default settings lists the demo's jobs and serves their
schedule; running the demo again adds jobs; ``--workdir D`` is the store ``LD3_HOME=D`` gives."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api import create_app
from ld3_cli.main import main
from registry.db import dispose_engines
from registry.settings import get_settings

MODEL = "builtin:gmm-digits"
SMALL = ["--model", MODEL, "--nfe", "3", "--n-train", "6", "--n-val", "4", "--epochs", "1",
         "--teacher-nfe", "6", "--n-score-samples", "48", "--n-tune", "24", "--report-nfes", "4",
         "--no-progress"]


@pytest.fixture
def fresh_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working folder with no ``LD3_*`` variable set (the defaults apply)."""
    for name in list(os.environ):
        if name.startswith("LD3_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    dispose_engines()  # the default URL is relative: no engine of another folder may be reused
    yield tmp_path
    dispose_engines()


def _demo(argv: list[str], capsys: pytest.CaptureFixture[str]) -> set[str]:
    """Run ``ld3 demo argv``; returns the ids of the jobs it reports as succeeded."""
    code = main(["demo", *argv])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    return set(re.findall(r"== job (\S+) \(\w+, [^)]*\): succeeded", out))


def _listed(client: TestClient) -> dict[str, dict]:
    resp = client.get("/jobs", params={"limit": 100})
    assert resp.status_code == 200, resp.text
    return {job["id"]: job for job in resp.json()["items"]}


@pytest.mark.slow
def test_the_server_sees_the_demos_jobs_and_a_rerun_adds_jobs(fresh_folder, capsys):
    first = _demo(SMALL, capsys)
    assert len(first) == 2
    second = _demo([*SMALL, "--kinds", "trust_region"], capsys)
    assert len(second) == 1 and not second & first, "a second run makes new jobs"
    assert (fresh_folder / ".ld3" / "ld3.db").is_file()
    assert not (fresh_folder / ".ld3" / "demo").exists()

    with TestClient(create_app(get_settings())) as client:  # what `ld3 serve` builds
        jobs = _listed(client)
        assert first | second <= set(jobs), sorted(jobs)
        assert {jobs[j]["state"] for j in first | second} == {"succeeded"}
        resp = client.get(f"/schedules/{MODEL}/unipc/3", params={"order": 2})
        assert resp.status_code == 200, resp.text
        assert resp.json()["job_id"] in first | second
        report = client.get(f"/jobs/{sorted(first)[0]}/report")
        assert report.status_code == 200, "the artifacts are in the default store too"


@pytest.mark.slow
def test_workdir_is_the_store_ld3_home_names(fresh_folder, capsys, monkeypatch):
    workdir = fresh_folder / "elsewhere"
    made = _demo([*SMALL, "--kinds", "trust_region", "--workdir", str(workdir)], capsys)
    assert (workdir / "ld3.db").is_file() and not (fresh_folder / ".ld3").exists()

    monkeypatch.setenv("LD3_HOME", str(workdir))
    with TestClient(create_app(get_settings())) as client:
        assert made <= set(_listed(client))
