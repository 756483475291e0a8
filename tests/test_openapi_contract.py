"""schemathesis against the live server (``ld3 serve``, real database + Redis broker) on
SQLite and PostgreSQL: zero server errors, zero schema violations (status codes,
content types, headers and bodies as /openapi.json documents them).

The run is bounded (a few examples per operation, fixed seed) to keep it under a minute or
two per backend. Jobs it submits are only queued (no worker consumes the test queue).
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
from api_helpers import backend_url, publish_fake_result

pytestmark = pytest.mark.services

TOKEN = "contract-token"
CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,"
          "response_headers_conformance,response_schema_conformance")


def schemathesis_cli() -> list[str]:
    """The schemathesis command (skip when it is not installed: ``pip install -e .[dev]``)."""
    exe = shutil.which("schemathesis") or shutil.which("st")
    if exe is None:
        pytest.skip("schemathesis is not installed (pip install -e '.[dev]')")
    return [exe]


def test_openapi_schema_documents_the_contract(tmp_path):
    from api.app import create_app
    from registry.settings import Settings

    settings = Settings(database_url=f"sqlite:///{tmp_path / 'o.db'}", home=tmp_path)
    schema = create_app(settings).openapi()
    jobs = schema["paths"]["/jobs"]
    limit = next(p for p in jobs["get"]["parameters"] if p["name"] == "limit")
    offset = next(p for p in jobs["get"]["parameters"] if p["name"] == "offset")
    assert limit["schema"]["anyOf"][0]["maximum"] == 1000
    assert offset["schema"]["maximum"] == 2**31 - 1 and offset["schema"]["minimum"] == 0
    body = schema["components"]["schemas"]["JobCreate"]["properties"]
    assert body["solver"]["enum"] == ["euler", "dpm++", "unipc", "ipndm"]
    assert body["nfe"]["minimum"] == 1 and body["model"]["pattern"]
    assert set(jobs["post"]["responses"]) >= {"202", "401", "413", "422", "503"}
    problem = jobs["post"]["responses"]["422"]["content"]
    assert list(problem) == ["application/problem+json"]
    assert "head" in schema["paths"]["/schedules/{key}"]
    assert "409" in schema["paths"]["/models/{model_id}"]["delete"]["responses"]
    assert "HTTPValidationError" not in schema["components"]["schemas"]


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    backend, tmp_path, redis_url, service_env, start_process, free_port, wait_http
):
    cli = schemathesis_cli()
    with backend_url(backend, tmp_path) as url:
        publish_fake_result(url, nfe=6)
        port = free_port()
        models = tmp_path / "models"
        models.mkdir()
        env = service_env(url, redis_url, LD3_API_TOKEN=TOKEN, LD3_AUTO_MIGRATE="0",
                          LD3_MODEL_ROOTS=str(models), LD3_LOG_LEVEL="WARNING")
        server = start_process([sys.executable, "-m", "ld3_cli", "serve", "--port", str(port)],
                               env, f"serve-{backend}")
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/healthz", timeout=90)
        report = tmp_path / "report"
        done = subprocess.run(
            [*cli, "run", f"{base}/openapi.json", "--checks", CHECKS, "--max-examples", "8",
             "--seed", "15", "--phases", "examples,coverage,fuzzing", "--workers", "1",
             "--generation-database", "none", "--no-color", "--request-timeout", "30",
             "-H", f"Authorization: Bearer {TOKEN}", "--report", "junit",
             "--report-dir", str(report), "--suppress-health-check", "all"],
            capture_output=True, text=True, timeout=540, cwd=tmp_path,
        )
        output = done.stdout[-12000:] + done.stderr[-3000:]
        print(output)
        assert done.returncode == 0, f"{output}\n--- server log:\n{server.log()[-4000:]}"
        assert "Traceback" not in server.log(), server.log()[-4000:]
