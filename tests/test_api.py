"""HTTP API on SQLite and the real PostgreSQL (FastAPI TestClient): jobs, validation, auth,
body limits, idempotency, broker/database outages, catalog, health, problem+json everywhere.

Every rejected request is checked to have written no row.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from api_helpers import (
    RecordingDispatcher,
    assert_problem,
    count_rows,
    database_fixtures,
    publish_fake_result,
    settings_for,
    vp_config,
)
from fastapi.testclient import TestClient
from fixtures.processes import free_port

from api.app import create_app
from api.dispatch import UnavailableDispatcher
from api.serve import check_bind_host, is_loopback
from registry import db
from registry import jobs as jr
from registry.settings import Settings, get_settings

JOB = {"kind": "ld3", "model": "builtin:gmm-digits", "solver": "unipc", "order": 2, "nfe": 6}
TOKEN = "s3cret-token"


module_url, url = database_fixtures("api")


@pytest.fixture
def dispatcher() -> RecordingDispatcher:
    """An in-memory dispatcher."""
    return RecordingDispatcher()


@pytest.fixture
def make_client(url: str, tmp_path: Path, dispatcher: RecordingDispatcher):
    """``make_client(**settings_overrides) -> TestClient`` on the test database."""

    def make(**overrides: Any) -> TestClient:
        app = create_app(settings_for(url, tmp_path, **overrides), dispatcher)
        return TestClient(app, raise_server_exceptions=False)

    return make


@pytest.fixture
def client(make_client) -> TestClient:
    """A client of an app without token."""
    return make_client()


def no_rows(url: str) -> None:
    assert count_rows(url) == {"artifacts": 0, "schedules": 0, "jobs": 0, "models": 0}


# ----------------------------------------------------------------------------------- health
def test_health_and_ready(client, dispatcher):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "broker": "ok"}
    dispatcher.broker_up = False
    body = assert_problem(client.get("/readyz"), 503, "not-ready")
    assert body["checks"] == {"database": "ok", "broker": "unreachable"}
    dispatcher.broker_up, dispatcher.ping_raises = True, True
    body = assert_problem(client.get("/readyz"), 503, "not-ready")
    assert body["checks"]["broker"].startswith("error: ping exploded")
    dispatcher.ping_raises = False
    assert client.get("/readyz").status_code == 200


def test_database_unreachable_gives_503_everywhere(tmp_path, dispatcher):
    url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nothing"
    app = create_app(settings_for(url, tmp_path, db_connect_timeout_s=2), dispatcher)
    client = TestClient(app, raise_server_exceptions=False)
    assert client.get("/healthz").status_code == 200
    body = assert_problem(client.get("/readyz"), 503, "not-ready")
    assert body["checks"]["database"].startswith("error:")
    assert body["checks"]["broker"] == "ok"
    for response in (client.post("/jobs", json=JOB), client.get("/jobs"),
                     client.get("/schedules/builtin:gmm-digits/unipc/6")):
        assert_problem(response, 503, "database-unavailable")
        assert response.headers["retry-after"] == "5"
    assert dispatcher.submitted == []


@pytest.mark.slow
def test_recovers_without_restart_when_postgres_comes_back(private_postgres, tmp_path):
    url = private_postgres.create_database("ld3_test_api_recover")
    db.init_db(Settings(database_url=url))
    dispatcher = RecordingDispatcher()
    client = TestClient(create_app(settings_for(url, tmp_path), dispatcher),
                        raise_server_exceptions=False)
    assert client.post("/jobs", json=JOB).status_code == 202
    private_postgres.stop()
    assert_problem(client.get("/readyz"), 503)
    assert_problem(client.post("/jobs", json={**JOB, "nfe": 7}), 503, "database-unavailable")
    private_postgres.start()
    assert client.get("/readyz").status_code == 200
    assert client.post("/jobs", json={**JOB, "nfe": 8}).status_code == 202
    assert client.get("/jobs").json()["total"] == 2
    assert len(dispatcher.submitted) == 2


# ------------------------------------------------------------------------------------- jobs
def test_submit_read_and_list_a_job(client, url, dispatcher):
    response = client.post("/jobs", json={**JOB, "options": {"seed": 7}})
    assert response.status_code == 202
    job = response.json()
    assert response.headers["location"] == f"/jobs/{job['id']}"
    assert dispatcher.submitted == [job["id"]]
    assert job["state"] == "queued" and job["progress"] == 0.0 and job["options"] == {"seed": 7}
    assert job["links"] == {"self": f"/jobs/{job['id']}", "cancel": f"/jobs/{job['id']}/cancel",
                            "report_html": f"/jobs/{job['id']}/report?format=html"}
    assert count_rows(url)["jobs"] == 1
    got = client.get(response.headers["location"]).json()
    assert got["id"] == job["id"] and got["model"] == "builtin:gmm-digits"
    assert client.get("/jobs").json()["items"][0]["id"] == job["id"]


def test_default_order_depends_on_solver(client):
    body = {k: v for k, v in JOB.items() if k != "order"}
    assert client.post("/jobs", json=body).json()["order"] == 2
    assert client.post("/jobs", json={**body, "solver": "euler"}).json()["order"] == 1
    assert client.post("/jobs", json={**body, "solver": "ipndm", "order": 4}).json()["order"] == 4


def test_progress_is_visible(client, url):
    job_id = client.post("/jobs", json=JOB).json()["id"]
    with db.session_scope(Settings(database_url=url)) as s:
        jr.claim_job(s, job_id, "gpu-0")
        jr.update_progress(s, job_id, stage="optimize", progress=0.4, loss=0.125)
    got = client.get(f"/jobs/{job_id}").json()
    assert (got["state"], got["stage"], got["progress"], got["loss"]) == (
        "running", "optimize", 0.4, 0.125)
    assert got["worker"] == "gpu-0" and got["started_at"] and got["attempts"] == 1


BAD_BODIES = [
    ("unknown model", {**JOB, "model": "builtin:nope"}, 422, "#/model"),
    ("unregistered hub model", {**JOB, "model": "org/never-registered"}, 422, "#/model"),
    ("unknown solver", {**JOB, "solver": "rk45"}, 422, "#/solver"),
    ("order too high", {**JOB, "order": 4}, 422, "#/order"),
    ("order zero", {**JOB, "order": 0}, 422, "#/order"),
    ("euler order 2", {**JOB, "solver": "euler", "order": 2}, 422, "#/order"),
    ("nfe zero", {**JOB, "nfe": 0}, 422, "#/nfe"),
    ("nfe 1000", {**JOB, "nfe": 1000}, 422, "#/nfe"),
    ("nfe negative", {**JOB, "nfe": -3}, 422, "#/nfe"),
    ("nfe string", {**JOB, "nfe": "6"}, 422, "#/nfe"),
    ("nfe float", {**JOB, "nfe": 6.5}, 422, "#/nfe"),
    ("nfe bool", {**JOB, "nfe": True}, 422, "#/nfe"),
    ("nfe null", {**JOB, "nfe": None}, 422, "#/nfe"),
    ("kind", {**JOB, "kind": "magic"}, 422, "#/kind"),
    ("missing nfe", {k: v for k, v in JOB.items() if k != "nfe"}, 422, "#/nfe"),
    ("extra field", {**JOB, "priority": 1}, 422, "#/priority"),
    ("options not object", {**JOB, "options": [1, 2]}, 422, "#/options"),
    ("unknown option", {**JOB, "options": {"warp_speed": 9}}, 422, "#/options/warp_speed"),
    ("option out of range", {**JOB, "options": {"n_score_samples": -1}}, 422,
     "#/options/n_score_samples"),
    ("option as a string", {**JOB, "options": {"seed": "3"}}, 422, "#/options/seed"),
    ("init for the kind", {**JOB, "kind": "trust_region", "options": {"init": "trust_region"}},
     422, "#/options"),
    ("model not string", {**JOB, "model": 5}, 422, "#/model"),
    ("body is a list", [JOB], 422, "#/"),
]


@pytest.mark.parametrize("name,body,status,pointer", BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
def test_bad_job_bodies_are_rejected_without_rows(client, url, dispatcher, name, body, status,
                                                  pointer):
    problem = assert_problem(client.post("/jobs", json=body), status)
    assert pointer in [e.get("pointer") for e in problem["errors"]], problem
    assert all("detail" in e for e in problem["errors"])
    no_rows(url)
    assert dispatcher.submitted == []


def test_malformed_and_empty_bodies(client, url):
    headers = {"content-type": "application/json"}
    assert_problem(client.post("/jobs", content=b'{"kind": "ld3",', headers=headers), 400,
                   "malformed-json")
    assert_problem(client.post("/jobs", content=b"", headers=headers), 422)
    assert_problem(client.post("/jobs", content=b"kind=ld3",
                               headers={"content-type": "application/x-www-form-urlencoded"}),
                   415, "unsupported-media-type")
    no_rows(url)


@pytest.mark.parametrize("content_type", [
    "text/plain", "text/plain; charset=utf-8", "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x", "application/xml", "application/jsonx",
])
def test_a_body_that_is_not_json_gets_415_naming_the_type(client, url, dispatcher,
                                                          content_type):
    body = json.dumps(JOB).encode()  # a JSON text, but declared as something else
    response = client.post("/jobs", content=body, headers={"content-type": content_type})
    problem = assert_problem(response, 415, "unsupported-media-type")
    assert "application/json" in problem["detail"]
    assert content_type.split(";")[0] in problem["detail"]
    assert problem["errors"] == [{"header": "content-type", "detail": "expected application/json"}]
    assert response.headers["accept-post"] == "application/json"
    model = {"id": "org/x", "source": "org/x", "kind": "pixel"}
    assert_problem(client.post("/models", content=json.dumps(model).encode(),
                               headers={"content-type": content_type}), 415)
    no_rows(url)
    assert dispatcher.submitted == []


@pytest.mark.parametrize("content_type", [
    "application/json", "application/json; charset=utf-8", "Application/JSON",
    "application/vnd.ld3+json",
])
def test_json_content_types_are_accepted(client, url, content_type):
    response = client.post("/jobs", content=json.dumps(JOB).encode(),
                           headers={"content-type": content_type})
    assert response.status_code == 202, response.text
    assert count_rows(url)["jobs"] == 1


def test_a_body_without_content_type_gets_415_even_when_it_is_json(client, url):
    for body in (json.dumps(JOB).encode(), b"kind=ld3"):
        problem = assert_problem(client.post("/jobs", content=body), 415,
                                 "unsupported-media-type")
        assert "application/json" in problem["detail"] and "no Content-Type" in problem["detail"]
    no_rows(url)
    queued = client.post("/jobs", json=JOB).json()["id"]
    cancel = client.post(f"/jobs/{queued}/cancel", headers={"content-type": "text/plain"})
    assert cancel.status_code == 200, cancel.text  # no body: no type needed
    assert client.post(f"/jobs/{queued}/cancel").status_code == 200


def test_huge_bodies_get_413_without_rows(make_client, url, dispatcher):
    client = make_client(max_body_bytes=2048)
    big = {**JOB, "options": {"blob": "x" * 5000}}
    assert_problem(client.post("/jobs", json=big), 413, "body-too-large")

    def chunks() -> Iterator[bytes]:  # streamed without Content-Length
        yield b'{"kind": "ld3", "options": {"blob": "'
        for _ in range(10):
            yield b"y" * 500
        yield b'"}}'

    response = client.post("/jobs", content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in {k.lower() for k in response.request.headers}
    assert_problem(response, 413, "body-too-large")
    assert_problem(client.post("/models", json={"source": "org/m", "kind": "pixel",
                                                 "description": "d" * 4000}), 413)
    no_rows(url)
    assert dispatcher.submitted == []
    assert client.post("/jobs", json={**JOB, "options": {"seed": 7}}).status_code == 202


def test_token_protects_writes(make_client, url, dispatcher):
    client = make_client(api_token=TOKEN)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"},
                    {"Authorization": "Bearer"}):
        response = client.post("/jobs", json=JOB, headers=headers)
        assert_problem(response, 401, "unauthorized")
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert_problem(client.post("/models", json={"source": "org/m", "kind": "pixel"}), 401)
    assert_problem(client.post("/jobs/x/cancel"), 401)
    no_rows(url)
    ok = client.post("/jobs", json=JOB, headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 202
    assert client.get("/jobs").status_code == 200  # reads stay open
    assert client.get(f"/jobs/{ok.json()['id']}").status_code == 200


def test_token_on_reads_when_configured(make_client):
    client = make_client(api_token=TOKEN, reads_require_token=True)
    assert_problem(client.get("/jobs"), 401)
    assert_problem(client.get("/models"), 401)
    assert client.get("/jobs", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert client.get("/healthz").status_code == 200  # probes stay open
    assert client.get("/readyz").status_code == 200


def test_idempotency_key(client, url, dispatcher):
    headers = {"Idempotency-Key": "retry-123"}
    first = client.post("/jobs", json=JOB, headers=headers)
    second = client.post("/jobs", json=JOB, headers=headers)
    assert first.status_code == second.status_code == 202
    assert first.json()["id"] == second.json()["id"]
    assert second.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert dispatcher.submitted == [first.json()["id"]]
    conflict = client.post("/jobs", json={**JOB, "nfe": 7}, headers=headers)
    assert_problem(conflict, 422, "idempotency-key-reused")
    assert_problem(client.post("/jobs", json=JOB, headers={"Idempotency-Key": "k" * 300}), 422)
    assert count_rows(url)["jobs"] == 1
    other = client.post("/jobs", json=JOB, headers={"Idempotency-Key": "retry-456"})
    assert other.json()["id"] != first.json()["id"]


def test_broker_down_gives_503_and_leaves_no_row(client, url, dispatcher):
    dispatcher.broker_up = False
    headers = {"Idempotency-Key": "while-down"}
    response = client.post("/jobs", json=JOB, headers=headers)
    assert_problem(response, 503, "broker-unavailable")
    assert response.headers["retry-after"] == "5"
    no_rows(url)
    dispatcher.broker_up = True  # broker back: the retried request creates the job
    again = client.post("/jobs", json=JOB, headers=headers)
    assert again.status_code == 202 and "idempotent-replayed" not in again.headers
    assert count_rows(url)["jobs"] == 1


def test_no_dispatcher_available(url, tmp_path, monkeypatch):
    import worker.dispatch
    from ld3_cli.server import build_app, build_dispatcher

    def broken(settings):
        raise OSError("broker address not resolvable")

    monkeypatch.setattr(worker.dispatch, "get_dispatcher", broken)
    settings = settings_for(url, tmp_path)
    fallback = build_dispatcher(settings)
    assert isinstance(fallback, UnavailableDispatcher) and fallback.ping() is False
    assert "broker address not resolvable" in fallback.reason
    composed = build_app(settings)
    assert isinstance(composed.state.dispatcher, UnavailableDispatcher)
    bare = create_app(settings)  # no dispatcher given: reads work, submissions are 503
    assert isinstance(bare.state.dispatcher, UnavailableDispatcher)
    for app in (composed, bare):
        client = TestClient(app, raise_server_exceptions=False)
        assert_problem(client.post("/jobs", json=JOB), 503, "broker-unavailable")
        assert assert_problem(client.get("/readyz"), 503)["checks"]["broker"] == "unreachable"
        assert client.get("/jobs").status_code == 200
    no_rows(url)


def test_unknown_job_and_cancel(client, url, dispatcher):
    assert_problem(client.get("/jobs/does-not-exist"), 404, "not-found")
    assert_problem(client.post("/jobs/does-not-exist/cancel"), 404)
    queued = client.post("/jobs", json=JOB).json()["id"]
    response = client.post(f"/jobs/{queued}/cancel")
    assert response.status_code == 200 and response.json()["state"] == "cancelled"
    assert dispatcher.cancelled == [queued]
    assert client.post(f"/jobs/{queued}/cancel").status_code == 200  # idempotent
    running = client.post("/jobs", json={**JOB, "nfe": 7}).json()["id"]
    with db.session_scope(Settings(database_url=url)) as s:
        jr.claim_job(s, running, "w")
    response = client.post(f"/jobs/{running}/cancel")
    assert response.status_code == 202
    assert response.json()["state"] == "running" and response.json()["cancel_requested"]
    done = publish_fake_result(url)
    assert_problem(client.post(f"/jobs/{done.job_id}/cancel"), 409, "job-state")


def test_list_jobs_filters_and_pagination(client, url):
    ids = [client.post("/jobs", json={**JOB, "nfe": n}).json()["id"] for n in range(1, 6)]
    client.post(f"/jobs/{ids[0]}/cancel")
    page = client.get("/jobs", params={"limit": 2})
    body = page.json()
    assert body["total"] == 5 and len(body["items"]) == 2 and body["prev"] is None
    seen = [j["id"] for j in body["items"]]
    while body["next"]:
        body = client.get(body["next"]).json()
        seen += [j["id"] for j in body["items"]]
    assert sorted(seen) == sorted(ids) and len(seen) == 5
    assert body["prev"] is not None
    cancelled = client.get("/jobs", params={"state": "cancelled"}).json()
    assert [j["id"] for j in cancelled["items"]] == [ids[0]]
    assert client.get("/jobs", params={"model": "builtin:gmm-digits"}).json()["total"] == 5
    assert client.get("/jobs", params={"model": "other"}).json()["total"] == 0
    assert client.get("/jobs", params={"kind": "trust_region"}).json()["total"] == 0
    for params in ({"state": "sleeping"}, {"limit": 0}, {"limit": 1000}, {"offset": -1},
                   {"limit": "many"}):
        assert_problem(client.get("/jobs", params=params), 422)


# ---------------------------------------------------------------------------------- catalog
def test_models_catalog(make_client, url, tmp_path):
    client = make_client(model_roots=str(tmp_path))
    listing = client.get("/models").json()
    builtin = [m["id"] for m in listing["items"] if m["builtin"]]
    assert "builtin:gmm-digits" in builtin and listing["total"] == len(builtin)
    assert client.get("/models/builtin:gmm-digits").json()["builtin"] is True
    folder = tmp_path / "my-unet"
    folder.mkdir()
    (folder / "config.json").write_text('{"_class_name": "UNet2DModel"}')
    response = client.post("/models", json={
        "id": "local/my-unet", "source": str(folder), "kind": "pixel",
        "schedule": vp_config(), "prediction_type": "eps", "options": {"device": "cpu"},
    })
    assert response.status_code == 201, response.text
    assert response.headers["location"] == "/models/local/my-unet"
    got = client.get("/models/local/my-unet").json()
    assert got["source"] == str(folder.resolve()) and got["noise_schedule"]["name"] == "vp_linear"
    hub = client.post("/models", json={"source": "org/tiny-sd", "kind": "text2img"})
    assert hub.status_code == 201 and hub.json()["id"] == "org/tiny-sd"
    assert client.get("/models").json()["total"] == len(builtin) + 2
    # a registered model can be used in jobs (id with '/')
    assert client.post("/jobs", json={**JOB, "model": "org/tiny-sd"}).status_code == 202
    assert_problem(client.post("/models", json={"source": "org/tiny-sd", "kind": "pixel"}), 409,
                   "model-exists")
    assert_problem(client.get("/models/org/unknown"), 404)
    assert count_rows(url)["models"] == 2


BAD_MODELS = [
    ("missing path", {"id": "a", "source": "/definitely/not/here", "kind": "pixel"}, "#/source"),
    ("not hub id", {"source": "just words", "kind": "pixel"}, "#/source"),
    ("local needs id", {"source": "TMP", "kind": "pixel"}, "#/id"),
    ("bad kind", {"source": "org/m", "kind": "video"}, "#/kind"),
    ("bad prediction", {"source": "org/m", "kind": "pixel", "prediction_type": "score"},
     "#/prediction_type"),
    ("builtin prefix", {"id": "builtin:x", "source": "org/m", "kind": "pixel"}, "#/id"),
    ("bad id", {"id": "a b", "source": "org/m", "kind": "pixel"}, "#/id"),
    ("bad schedule", {"source": "org/m", "kind": "pixel", "schedule": {"name": "zzz"}},
     "#/schedule"),
    ("schedule params", {"source": "org/m", "kind": "pixel",
                         "schedule": {"name": "edm", "sigma_min": 5, "sigma_max": 1}},
     "#/schedule"),
    ("extra field", {"source": "org/m", "kind": "pixel", "weights": "x"}, "#/weights"),
    ("source type", {"source": 3, "kind": "pixel"}, "#/source"),
]


@pytest.mark.parametrize("name,body,pointer", BAD_MODELS, ids=[b[0] for b in BAD_MODELS])
def test_bad_model_registrations(make_client, url, tmp_path, name, body, pointer):
    client = make_client(model_roots=str(tmp_path))
    body = {k: (str(tmp_path) if v == "TMP" else v) for k, v in body.items()}
    problem = assert_problem(client.post("/models", json=body), 422)
    assert pointer in [e.get("pointer") for e in problem["errors"]], problem
    no_rows(url)


# ---------------------------------------------------------------------------- generic errors
def test_unknown_routes_methods_and_docs(client):
    assert_problem(client.get("/nowhere"), 404)
    response = client.delete("/jobs")
    assert_problem(response, 405)
    assert "POST" in response.headers["allow"] and "GET" in response.headers["allow"]
    assert_problem(client.put("/models"), 405)
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/jobs", "/jobs/{job_id}", "/schedules", "/models", "/readyz"} <= set(paths)


def test_unexpected_error_is_a_500_problem(client, monkeypatch):
    import api.routes.jobs as routes

    def explode(*args, **kwargs):
        raise RuntimeError("bug")

    monkeypatch.setattr(routes, "list_jobs", explode)
    body = assert_problem(client.get("/jobs"), 500, "internal")
    assert "bug" not in json.dumps(body)  # internals are not leaked


def test_auto_migrate_on_fresh_sqlite(tmp_path, dispatcher):
    settings = Settings(home=tmp_path / "home", auto_migrate=None)
    assert settings.is_sqlite and settings.should_auto_migrate and settings.embedded
    client = TestClient(create_app(settings, dispatcher))
    assert client.get("/readyz").status_code == 200
    assert client.post("/jobs", json=JOB).status_code == 202
    assert (tmp_path / "home" / "ld3.db").is_file()


# --------------------------------------------------------------------------------- settings
def test_settings_from_environment(monkeypatch, tmp_path):
    for name in ("LD3_DATABASE_URL", "LD3_BROKER_URL", "LD3_API_TOKEN", "LD3_ARTIFACTS_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    default = get_settings()
    assert default.embedded and default.api_token is None and not default.reads_require_token
    assert default.database_url == "sqlite:///.ld3/ld3.db"
    assert default.artifacts_path == Path(".ld3/artifacts")
    monkeypatch.setenv("LD3_DATABASE_URL", "postgresql://u@db:5432/ld3")
    monkeypatch.setenv("LD3_BROKER_URL", "redis://redis:6379/0")
    monkeypatch.setenv("LD3_API_TOKEN", TOKEN)
    monkeypatch.setenv("LD3_ARTIFACTS_DIR", str(tmp_path / "art"))
    monkeypatch.setenv("LD3_MAX_BODY_BYTES", "1234")
    full = get_settings()
    assert not full.embedded and not full.is_sqlite and not full.should_auto_migrate
    assert full.api_token == TOKEN and TOKEN not in repr(full)
    assert full.artifacts_path == tmp_path / "art" and full.max_body_bytes == 1234
    assert db.normalize_url(full.database_url) == "postgresql+psycopg://u@db:5432/ld3"
    monkeypatch.setenv("LD3_BROKER_URL", "")
    assert get_settings().embedded
    monkeypatch.setenv("LD3_MAX_BODY_BYTES", "-1")
    with pytest.raises(ValueError):
        get_settings()


def test_bind_host_rule():
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0")
    assert check_bind_host("127.0.0.1", Settings(api_token=None)) == "127.0.0.1"
    with pytest.raises(ValueError, match="LD3_API_TOKEN"):
        check_bind_host("0.0.0.0", Settings(api_token=None))
    assert check_bind_host("0.0.0.0", Settings(api_token=TOKEN)) == "0.0.0.0"
