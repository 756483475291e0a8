"""Hostile client input through HTTP on SQLite and PostgreSQL: control characters in every
body field, option, path and query parameter, out-of-range integers, deep JSON -> 422
problem+json, nothing stored, never a 500."""

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
    publish_fake_result,
    settings_for,
)
from fastapi.testclient import TestClient

from api.app import create_app

JOB = {"kind": "trust_region", "model": "builtin:gmm-digits", "solver": "unipc", "order": 2,
       "nfe": 6}
NO_ROWS = {"artifacts": 0, "schedules": 0, "jobs": 0, "models": 0}

module_url, url = database_fixtures("hostile")


@pytest.fixture
def client(url: str, tmp_path: Path) -> TestClient:
    """A client of an app without token, with tmp_path as the only model root."""
    models = tmp_path / "models"
    models.mkdir()
    app = create_app(settings_for(url, tmp_path, model_roots=str(models)),
                     RecordingDispatcher())
    return TestClient(app, raise_server_exceptions=False)


def deep(levels: int) -> dict[str, Any]:
    """``{"a": {"a": ... {}}}`` nested ``levels`` deep."""
    value: dict[str, Any] = {}
    for _ in range(levels):
        value = {"a": value}
    return value


BAD_BODIES = [
    ("model NUL", "/jobs", {**JOB, "model": "builtin:gmm\u0000-digits"}),
    ("solver NUL", "/jobs", {**JOB, "solver": "uni\u0000pc"}),
    ("prompt NUL", "/jobs", {**JOB, "options": {"prompts": ["a\u0000b"]}}),
    ("extractor NUL", "/jobs", {**JOB, "options": {"extractor": "digits\u0000"}}),
    ("option key NUL", "/jobs", {**JOB, "options": {"se\u0000ed": 1}}),
    ("escape char", "/jobs", {**JOB, "options": {"extractor": "dig\u001bits"}}),
    ("C1 control", "/jobs", {**JOB, "options": {"reference": "x\u0085y"}}),
    ("lone surrogate", "/jobs", {**JOB, "options": {"extractor": "\ud800"}}),
    ("deep options", "/jobs", {**JOB, "options": deep(900)}),
    ("seed too big", "/jobs", {**JOB, "options": {"seed": 10**25}}),
    ("nfe too big", "/jobs", {**JOB, "nfe": 10**25}),
    ("order too big", "/jobs", {**JOB, "order": 10**25}),
    ("model id NUL", "/models", {"id": "org/a\u0000b", "source": "org/m", "kind": "pixel"}),
    ("model source NUL", "/models", {"source": "org/m\u0000", "kind": "pixel"}),
    ("description NUL", "/models", {"source": "org/m", "kind": "pixel",
                                    "description": "x\u0000"}),
    ("loader option NUL", "/models", {"source": "org/m", "kind": "pixel",
                                      "options": {"dtype": "float\u000016"}}),
    ("schedule NUL", "/models", {"source": "org/m", "kind": "pixel",
                                 "schedule": {"name": "vp_linear\u0000"}}),
    ("deep loader options", "/models", {"source": "org/m", "kind": "pixel",
                                        "options": deep(900)}),
    ("deep schedule", "/models", {"source": "org/m", "kind": "pixel", "schedule": deep(40)}),
    ("unknown loader option", "/models", {"source": "org/m", "kind": "pixel",
                                          "options": {"weights": "/etc/passwd"}}),
    ("bad loader dtype", "/models", {"source": "org/m", "kind": "pixel",
                                     "options": {"dtype": "int8"}}),
]


@pytest.mark.parametrize("name,path,body", BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
def test_bad_bodies_are_422_and_store_nothing(client, url, name, path, body):
    raw = json.dumps(body).encode()  # ASCII with \u escapes (also for lone surrogates)
    assert_problem(client.post(path, content=raw, headers={"content-type": "application/json"}),
                   422)
    assert count_rows(url) == NO_ROWS


BAD_GETS = [
    ("/jobs", {"model": "a\u0000b"}),
    ("/jobs", {"model": "a\u0007b"}),
    ("/jobs", {"offset": str(10**25)}),
    ("/jobs", {"limit": str(10**25)}),
    ("/jobs", {"offset": "-1"}),
    ("/jobs", {"x\u0000": "1"}),
    ("/schedules", {"model": "a\u0000b"}),
    ("/schedules", {"solver": "a\u0000b"}),
    ("/schedules", {"order": str(10**25)}),
    ("/schedules", {"nfe": str(10**25)}),
    ("/schedules", {"offset": str(10**25)}),
    ("/models", {"offset": str(10**25)}),
    ("/jobs/a%00b", {}),
    ("/jobs/a%01b/report", {}),
    ("/models/a%00b", {}),
    ("/schedules/a%00b/unipc/6", {}),
    ("/schedules/builtin:gmm-digits/unipc/6", {"order": str(10**25)}),
    ("/schedules/builtin:gmm-digits/unipc/6", {"format": "native\u0000"}),
    ("/schedules/builtin:gmm-digits/unipc/" + str(10**25), {}),
    ("/schedules/id/" + str(10**25), {}),
]


@pytest.mark.parametrize("path,params", BAD_GETS, ids=[f"{p} {q}" for p, q in BAD_GETS])
def test_bad_queries_and_paths_are_422(client, url, path, params):
    publish_fake_result(url)  # a published schedule, so lookups reach the database
    assert_problem(client.get(path, params=params), 422)


def test_bad_paths_on_writes_are_422_and_store_nothing(client, url):
    assert_problem(client.post("/jobs/a%00b/cancel"), 422)
    assert_problem(client.delete("/models/a%00b"), 422)
    assert_problem(client.post("/jobs", json=JOB, params={"x": "\u0000"}), 422)
    assert count_rows(url) == NO_ROWS


def test_texts_with_tabs_and_newlines_are_accepted(client, url):
    body = {"source": "org/m", "kind": "pixel", "description": "line one\n\tline two\r\n"}
    created = client.post("/models", json=body)
    assert created.status_code == 201, created.text
    assert client.get("/models/org/m").json()["description"] == body["description"]


def test_no_500_for_a_spread_of_hostile_inputs(client, url):
    publish_fake_result(url)
    probes = [
        ("GET", "/jobs", {"state": "\u0000"}), ("GET", "/jobs", {"kind": "x" * 5000}),
        ("GET", "/jobs", {"model": "x" * 5000}), ("GET", "/schedules", {"solver": "é" * 40}),
        ("GET", "/jobs/" + "x" * 5000, None), ("GET", "/models/" + "é" * 600, None),
        ("GET", "/schedules/" + "m" * 600 + "/unipc/6", None),
        ("GET", "/schedules/builtin:gmm-digits/%F0%9F%98%80/6", None),
        ("GET", "/schedules/id/0", None), ("GET", "/schedules/id/-1", None),
        ("POST", "/jobs/" + "x" * 5000 + "/cancel", None),
        ("DELETE", "/models/" + "x" * 600, None),
    ]
    for method, path, params in probes:
        response = client.request(method, path, params=params)
        assert response.status_code < 500, (method, path, response.text)
        assert response.headers["content-type"].startswith(
            ("application/json", "application/problem+json")), response.headers
    for body in ({**JOB, "model": "x" * 255}, {**JOB, "options": {"prompts": ["é" * 2000]}},
                 {**JOB, "options": {"reference": "/" + "x" * 1000}}, {"kind": None}, [1, 2],
                 "text", {**JOB, "options": []}):
        response = client.post("/jobs", json=body)
        assert response.status_code < 500, (body, response.text)
    for raw in (b"\xff\xfe", b'{"kind": "ld3"', b"[" * 5000, b'{"a": "\\ud800"}'):
        response = client.post("/jobs", content=raw,
                               headers={"content-type": "application/json"})
        assert response.status_code in (400, 422), (raw[:20], response.text)
