"""Model registration policy through HTTP on SQLite and PostgreSQL: local sources
only under LD3_MODEL_ROOTS and only diffusers folders, one message for missing / not allowed,
loader options checked, DELETE /models/{id}, GET /models never 500 on a bad row."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from api_helpers import (
    RecordingDispatcher,
    assert_problem,
    count_rows,
    database_fixtures,
    settings_for,
)
from fastapi.testclient import TestClient
from sqlalchemy import text

from api.app import create_app
from registry.db import get_engine
from registry.model_policy import LOCAL_SOURCE_REJECTED
from registry.settings import Settings

TOKEN = "policy-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

module_url, url = database_fixtures("policy")


def make_app(url: str, tmp_path: Path, **overrides: Any) -> TestClient:
    """A client of an app on ``url`` with a token (and ``overrides`` of the settings)."""
    app = create_app(settings_for(url, tmp_path, api_token=TOKEN, **overrides),
                     RecordingDispatcher())
    return TestClient(app, raise_server_exceptions=False)


def model_folder(parent: Path, name: str = "unet") -> Path:
    """A minimal diffusers UNet folder (a parseable config.json)."""
    folder = parent / name
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel"}))
    return folder


def test_local_sources_only_under_the_model_roots(url, tmp_path):
    roots = tmp_path / "roots"
    good = model_folder(roots)
    not_a_model = roots / "empty"
    not_a_model.mkdir()
    broken = roots / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    outside = model_folder(tmp_path / "elsewhere")
    (roots / "escape").symlink_to(outside)
    client = make_app(url, tmp_path, model_roots=str(roots))
    rejected = [str(p) for p in (
        Path("/etc/passwd"), Path("/etc"), Path("/definitely/not/here"), outside, not_a_model,
        broken, roots / "escape", roots / ".." / "elsewhere" / "unet", roots / "missing",
    )]
    for source in rejected:
        body = assert_problem(client.post("/models", headers=AUTH, json={
            "id": "x/y", "source": source, "kind": "pixel"}), 422, "validation-error")
        assert body["detail"] == LOCAL_SOURCE_REJECTED, (source, body)
    assert count_rows(url)["models"] == 0
    created = client.post("/models", headers=AUTH,
                          json={"id": "local/unet", "source": str(good), "kind": "pixel"})
    assert created.status_code == 201, created.text
    assert created.json()["source"] == str(good.resolve())


def test_service_default_allows_no_local_folder_embedded_allows_cwd(url, tmp_path,
                                                                    monkeypatch):
    folder = model_folder(tmp_path / "cwd")
    monkeypatch.chdir(tmp_path / "cwd")
    service = make_app(url, tmp_path, broker_url="redis://127.0.0.1:1/0")
    assert Settings(broker_url="redis://x").model_root_paths == []
    body = assert_problem(service.post("/models", headers=AUTH, json={
        "id": "a/b", "source": str(folder), "kind": "pixel"}), 422)
    assert body["detail"] == LOCAL_SOURCE_REJECTED
    embedded = make_app(url, tmp_path)
    created = embedded.post("/models", headers=AUTH, json={
        "id": "a/b", "source": str(folder), "kind": "pixel"})
    assert created.status_code == 201, created.text


def test_loader_options_are_validated(url, tmp_path):
    client = make_app(url, tmp_path)
    for options in ({"cache_dir": "/etc"}, {"scheduler": "/etc/passwd"}, {"dtype": "int8"},
                    {"device": "cuda; rm -rf /"}, {"guidance_scale": -1},
                    {"prompts": []}, {"prompts": ["x" * 2001]}, {"revision": "../../x"},
                    {"local_files_only": "yes"}, "not an object"):
        assert_problem(client.post("/models", headers=AUTH, json={
            "source": "org/m", "kind": "pixel", "options": options}), 422)
    assert count_rows(url)["models"] == 0
    ok = client.post("/models", headers=AUTH, json={
        "source": "org/m", "kind": "text2img",
        "options": {"device": "cuda:1", "dtype": "fp16", "guidance_scale": 7.5,
                    "prompts": ["a cat"], "revision": "main", "local_files_only": True}})
    assert ok.status_code == 201, ok.text


def test_delete_models(url, tmp_path):
    client = make_app(url, tmp_path)
    assert client.post("/models", headers=AUTH,
                       json={"source": "org/unused", "kind": "pixel"}).status_code == 201
    assert client.post("/models", headers=AUTH,
                       json={"source": "org/used", "kind": "pixel"}).status_code == 201
    job = client.post("/jobs", headers=AUTH, json={
        "kind": "trust_region", "model": "org/used", "solver": "unipc", "nfe": 5})
    assert job.status_code == 202, job.text
    assert_problem(client.delete("/models/org/unused"), 401)
    assert_problem(client.delete("/models/org/used", headers=AUTH), 409, "model-not-deletable")
    assert_problem(client.delete("/models/builtin:gmm-digits", headers=AUTH), 409)
    assert_problem(client.delete("/models/org/nothing", headers=AUTH), 404)
    gone = client.delete("/models/org/unused", headers=AUTH)
    assert gone.status_code == 204 and gone.content == b""
    assert_problem(client.get("/models/org/unused"), 404)
    assert count_rows(url)["models"] == 1
    # the id can be registered again afterwards
    assert client.post("/models", headers=AUTH,
                       json={"source": "org/unused", "kind": "latent"}).status_code == 201


@pytest.mark.parametrize("stored", ["deep", "not-object", "nul"])
def test_a_bad_stored_row_never_breaks_the_catalog(url, tmp_path, stored):
    value: Any = {}
    if stored == "deep":
        for _ in range(900):
            value = {"a": value}
    elif stored == "not-object":
        value = [1, "two"]
    else:
        value = {"k": "a\u0001b"}  # stored as the JSON escape \\u0001
    engine = get_engine(Settings(database_url=url))
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO models (id, source, kind, options, noise_schedule, created_at) "
            "VALUES ('org/bad', 'org/bad', 'pixel', :opts, :opts, CURRENT_TIMESTAMP)"),
            {"opts": json.dumps(value)})
    client = make_app(url, tmp_path)
    listing = client.get("/models")
    assert listing.status_code == 200, listing.text
    bad = [m for m in listing.json()["items"] if m["id"] == "org/bad"]
    assert bad and bad[0]["options"] == {} and bad[0]["noise_schedule"] is None
    assert client.get("/models/org/bad").status_code == 200
    assert client.delete("/models/org/bad", headers=AUTH).status_code == 204
    assert client.get("/models").status_code == 200
