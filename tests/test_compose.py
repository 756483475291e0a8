"""docker-compose.yml: valid against the Compose specification, wired as documented, and its
migrate / api / worker commands run here as local processes (no Docker engine needed).

The schema is the Compose specification's ``schema/compose-spec.json`` (compose-spec
repository, Apache-2.0), vendored as ``tests/data/compose-spec.json``.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from fixtures import REPO
from fixtures.compose import ServiceStack, compose_service, interpolate, load_compose

SCHEMA = Path(__file__).parent / "data" / "compose-spec.json"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def test_compose_file_matches_the_compose_specification(compose, validator):
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.path))
    assert not errors, "; ".join(f"{list(e.path)}: {e.message}" for e in errors)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda c: c["services"]["api"].update(ports="8000:8000"),  # must be a list
        lambda c: c["services"]["worker"].update(depends_on={"migrate": {"condition": "done"}}),
        lambda c: c["services"]["worker"]["deploy"]["resources"]["reservations"]["devices"][0]
        .update(capabilities="gpu"),
        lambda c: c["services"]["postgres"].update(healthcheck={"test": 5}),
        lambda c: c["services"]["redis"].update(no_such_key=1),
    ],
    ids=["ports-not-list", "bad-condition", "capabilities-not-list", "bad-healthcheck",
         "unknown-key"],
)
def test_schema_rejects_broken_variants(compose, validator, mutate):
    broken = copy.deepcopy(compose)
    mutate(broken)
    assert list(validator.iter_errors(broken)), "the schema should reject this variant"


def test_services_are_wired_as_documented(compose):
    services = compose["services"]
    assert {"postgres", "redis", "migrate", "api", "worker"} <= set(services)
    for name in ("postgres", "redis", "api", "worker"):
        assert "test" in services[name]["healthcheck"], f"{name} needs a healthcheck"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("api", "worker"):
        deps = services[name]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully"
        assert deps["redis"]["condition"] == "service_healthy"
    assert services["migrate"]["restart"] == "no"
    devices = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    volumes = set(compose["volumes"])
    assert {"pgdata", "artifacts"} <= volumes
    assert any(v.startswith("pgdata:") for v in services["postgres"]["volumes"])
    for name in ("api", "worker"):
        assert any(v.startswith("artifacts:") for v in services[name]["volumes"])
    assert services["migrate"]["command"] == ["ld3", "migrate"]
    assert services["api"]["command"][:2] == ["ld3", "serve"]
    assert services["worker"]["command"][:2] == ["ld3", "worker"]


def test_dockerfiles_exist_and_use_the_cli(compose):
    for name in ("migrate", "api", "worker"):
        build = compose["services"][name]["build"]
        dockerfile = REPO / build["context"] / build["dockerfile"]
        assert dockerfile.is_file(), dockerfile
    worker = (REPO / "docker" / "Dockerfile.worker").read_text()
    assert re.search(r"pytorch/pytorch:[^\s]*cuda", worker), "worker image must be CUDA PyTorch"
    for path in ("docker/Dockerfile.api", "docker/Dockerfile.worker"):
        text = (REPO / path).read_text()
        for copied in re.findall(r"^COPY (\S+) \./", text, flags=re.M):
            assert (REPO / copied).exists(), f"{path} copies missing {copied}"


def test_interpolation_follows_compose_rules():
    env = {"SET": "x"}
    assert interpolate("${SET}-${UNSET:-d}-$$HOME", env) == "x-d-$HOME"
    with pytest.raises(ValueError, match="REQUIRED"):
        interpolate("${REQUIRED:?give it}", env)
    command, environment = compose_service("api", {"LD3_API_TOKEN": "t"})
    assert environment["LD3_API_TOKEN"] == "t"
    assert environment["LD3_BROKER_URL"].startswith("redis://redis:")
    with pytest.raises(ValueError):
        compose_service("api", {})  # the token is required by the compose file


@pytest.mark.services
def test_compose_commands_run_as_local_processes(service_stack: ServiceStack):
    """migrate ran (schema at head), api answers /readyz, the worker is up and consuming."""
    import sqlalchemy as sa

    engine = sa.create_engine(service_stack.database_url)
    try:
        with engine.connect() as conn:
            tables = set(sa.inspect(conn).get_table_names())
            version = conn.execute(sa.text("select version_num from alembic_version")).scalar()
    finally:
        engine.dispose()
    assert {"jobs", "schedules", "models", "artifacts"} <= tables
    assert version
    with service_stack.client() as http:
        ready = http.get("/readyz")
        assert ready.status_code == 200, ready.text
    assert service_stack.worker is not None
    assert "ld3.run_job" in service_stack.worker.log()
    assert service_stack.worker.popen.poll() is None
