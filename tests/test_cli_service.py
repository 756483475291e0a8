"""The client commands (submit, status, cancel, get) against an in-process API (FastAPI
TestClient on SQLite): their messages and hints, ``stage_progress`` in the job JSON, and the
per-stage progress of ``submit --wait``."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from api_helpers import (
    RecordingDispatcher,
    logsnr_times,
    publish_fake_result,
    settings_for,
    vp_config,
)
from fastapi.testclient import TestClient

from ld3_cli.main import main
from ld3_client import ServiceClient

MODEL = "builtin:gmm-digits"
TOKEN = "t0ken"


class FakeWorker(RecordingDispatcher):
    """Runs each submitted job in a thread the way a worker reports it: the pipeline's
    stages through ``worker.progress.JobProgress``, then a published schedule."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        self.threads: list[threading.Thread] = []

    def submit(self, job_id: str) -> None:
        """Start the fake run of ``job_id``."""
        super().submit(job_id)
        thread = threading.Thread(target=self._run, args=(job_id,), daemon=True)
        self.threads.append(thread)
        thread.start()

    def _run(self, job_id: str) -> None:
        from ld3_core.spec import JOB_STAGES as STAGES
        from registry.db import get_sessionmaker
        from registry.jobs import claim_job
        from registry.schedules import publish_result
        from registry.settings import Settings
        from worker.progress import JobProgress

        maker = get_sessionmaker(Settings(database_url=self.url))
        time.sleep(0.3)
        with maker() as s:
            job = claim_job(s, job_id, "fake-worker")
            s.commit()
            kind, nfe = job.kind, job.nfe
        progress = JobProgress(maker, job_id, STAGES[kind], interval=0.0)
        for stage, steps in (("optimize", 5), ("report", 2), ("publish", 1)):
            progress.enter(stage)
            for k in range(1, steps + 1):
                time.sleep(0.25)
                progress.report(stage, k / steps, loss=1.0 / k if stage == "optimize" else None)
        with maker() as s:
            publish_result(s, job_id, timesteps=logsnr_times(nfe), score=0.5, metric="fd",
                           extractor="digits", noise_schedule=vp_config())
            s.commit()


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    from registry import db
    from registry.settings import Settings

    url = f"sqlite:///{(tmp_path / 'cli.db').as_posix()}"
    db.init_db(Settings(database_url=url))
    return url


@pytest.fixture
def api(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The CLI's client commands talk to an in-process API (token required, no worker)."""
    return _serve(db_url, tmp_path, monkeypatch, RecordingDispatcher())


def _serve(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dispatcher: Any) -> Any:
    from api.app import create_app

    http = TestClient(create_app(settings_for(db_url, tmp_path, api_token=TOKEN), dispatcher),
                      raise_server_exceptions=False)

    def open_client(args: Any) -> ServiceClient:
        return ServiceClient("http://testserver", args.token, http=http)

    monkeypatch.setattr("ld3_cli.connect.open_client", open_client)
    return http


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_get_tells_an_unknown_model_from_a_missing_schedule(api, capsys):
    code, _, err = run(["get", "builtin:nope", "unipc", "6"], capsys)
    line = one_error_line(err)
    assert code == 1 and line.startswith("ld3 get: error: unknown model 'builtin:nope'; "), line
    assert f"known models: {MODEL}" in line and "builtin:unet-digits" in line

    code, _, err = run(["get", MODEL, "euler", "3"], capsys)
    line = one_error_line(err)
    assert code == 1
    assert f"no schedule published yet for {MODEL} with solver euler" in line, line
    assert f"`ld3 submit trust_region {MODEL} euler 3 --wait`" in line
    code, _, err = run(["get", MODEL, "dpm++", "4", "--order", "3"], capsys)
    assert f"`ld3 submit trust_region {MODEL} dpm++ 4 --order 3 --wait`" in err
    assert "POST /jobs" not in err and "GET /models" not in err


def test_submit_names_an_unknown_model_and_the_token(api, capsys):
    code, _, err = run(["submit", "ld3", "builtin:nope", "unipc", "3", "--token", TOKEN],
                       capsys)
    line = one_error_line(err)
    assert code == 1 and "unknown model 'builtin:nope'; known models: " in line, line
    assert "GET /models" not in line and line.count("unknown model") == 1
    code, _, err = run(["submit", "ld3", MODEL, "unipc", "3", "--token", TOKEN, "-o", "zz=1"],
                       capsys)
    line = one_error_line(err)
    assert code == 1 and "HTTP 422" in line and "zz" in line, line
    code, _, err = run(["submit", "ld3", MODEL, "unipc", "3"], capsys)
    line = one_error_line(err)
    assert code == 1 and "HTTP 401" in line and "--token" in line and "LD3_API_TOKEN" in line


def test_submit_status_cancel_with_command_hints(api, db_url, capsys):
    code, out, err = run(["submit", "trust_region", MODEL, "unipc", "3", "--token", TOKEN],
                         capsys)
    assert code == 0, err
    job = json.loads(out)
    assert job["state"] == "queued" and job["stage_progress"] is None
    assert f"`ld3 status {job['id']}`" in err and f"`ld3 cancel {job['id']}`" in err

    code, out, err = run(["status", job["id"]], capsys)
    assert code == 0 and json.loads(out)["id"] == job["id"]

    code, out, err = run(["cancel", job["id"], "--token", TOKEN], capsys)
    assert code == 0 and out.strip() == f"job {job['id']}: cancelled", out + err
    code, out, err = run(["cancel", job["id"], "--token", TOKEN], capsys)
    assert code == 0 and out.strip() == f"job {job['id']}: cancelled", "idempotent"
    done = publish_fake_result(db_url).job_id
    code, out, err = run(["cancel", done, "--token", TOKEN], capsys)
    line = one_error_line(err)
    assert code == 1 and "HTTP 409" in line and done in line, line
    for argv in (["cancel", "nope", "--token", TOKEN], ["status", "nope"]):
        code, out, err = run(argv, capsys)
        line = one_error_line(err)
        assert code == 1 and "HTTP 404" in line and "job 'nope' does not exist" in line, line


def test_cancel_of_a_running_job_says_how_to_follow_it(db_url, tmp_path, monkeypatch, capsys):
    from registry.db import get_sessionmaker
    from registry.jobs import claim_job
    from registry.settings import Settings

    _serve(db_url, tmp_path, monkeypatch, RecordingDispatcher())
    code, out, _ = run(["submit", "ld3", MODEL, "unipc", "3", "--token", TOKEN], capsys)
    job_id = json.loads(out)["id"]
    with get_sessionmaker(Settings(database_url=db_url))() as s:
        claim_job(s, job_id, "w")
        s.commit()
    code, out, err = run(["cancel", job_id, "--token", TOKEN], capsys)
    assert code == 0 and out.strip() == f"job {job_id}: running (cancel requested)", out
    assert f"`ld3 status {job_id}`" in err


def test_submit_wait_shows_each_stage_and_the_summary(db_url, tmp_path, monkeypatch, capsys):
    worker = FakeWorker(db_url)
    _serve(db_url, tmp_path, monkeypatch, worker)
    code, out, err = run(["submit", "trust_region", MODEL, "unipc", "3", "--token", TOKEN,
                          "--wait"], capsys)
    assert code == 0, out + err
    first = out.splitlines()[0]
    assert first.startswith("job ") and first.endswith(": succeeded"), out
    job_id = first.split()[1]
    assert f"`ld3 get {MODEL} unipc 3 --order 2 --format diffusers`" in out, out
    assert re.search(r"^  schedule:\s+http://testserver/schedules/", out, flags=re.M), out
    # stderr is not a terminal here: one line per stage change and tenth, forward only
    shown = re.findall(r"^\S+ (\w+)\s+(?:\[[#.]+\]\s+(\d+)%)?", err, flags=re.M)
    stages = [s for i, (s, _) in enumerate(shown) if i == 0 or shown[i - 1][0] != s]
    # polled every 0.5 s, a short stage may pass unseen; those seen come once, in run order
    canonical = ["queued", "starting", "optimize", "report", "publish"]
    assert "optimize" in stages and stages == [s for s in canonical if s in stages], err
    for stage in set(stages) & {"optimize", "report", "publish"}:
        pcts = [int(p) for s, p in shown if s == stage]
        assert pcts == sorted(pcts) and pcts[-1] == 100, (stage, err)
    assert "\r" not in err and "ETA" in err

    code, out, err = run(["get", MODEL, "unipc", "3"], capsys)
    assert code == 0 and json.loads(out)["job_id"] == job_id


def test_stage_progress_in_the_job_json(api, db_url):
    from ld3_core.spec import JOB_STAGES as STAGES
    from registry.db import get_sessionmaker
    from registry.jobs import claim_job, update_progress
    from registry.settings import Settings

    job = api.post("/jobs", json={"kind": "ld3", "model": MODEL, "solver": "unipc", "nfe": 3},
                   headers={"Authorization": f"Bearer {TOKEN}"}).json()
    weights = dict(STAGES["ld3"])
    total = sum(weights.values())
    optimize_end = weights["optimize"] / total
    report_share = weights["report"] / total
    maker = get_sessionmaker(Settings(database_url=db_url))
    with maker() as s:
        claim_job(s, job["id"], "w")
        s.commit()
    assert api.get(f"/jobs/{job['id']}").json()["stage_progress"] is None  # starting
    for stage, overall, expected in (("optimize", 0.5 * optimize_end, 0.5),
                                     ("report", optimize_end + 0.25 * report_share, 0.25)):
        with maker() as s:
            update_progress(s, job["id"], stage=stage, progress=overall)
            s.commit()
        got = api.get(f"/jobs/{job['id']}").json()
        assert got["progress"] == pytest.approx(overall)
        assert got["stage_progress"] == pytest.approx(expected), got
