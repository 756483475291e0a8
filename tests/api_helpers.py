"""Helpers of the service-api tests (registry, API, migrations): databases of our own on both
backends, an in-memory dispatcher, and row counting.

PostgreSQL databases are named ``ld3_test_api_<hex>`` on the shared server (127.0.0.1:5432)
and dropped afterwards; nothing else on the server is touched.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fixtures.registry import temporary_pg_database
from sqlalchemy import text

from ld3_core.spec import JobSpec

BACKENDS = ("sqlite", "postgres")
TABLES_IN_DELETE_ORDER = ("artifacts", "schedules", "jobs", "models")


@contextmanager
def backend_url(backend: str, folder: Path, migrate: bool = True) -> Iterator[str]:
    """A database URL of ``backend`` ("sqlite" file in ``folder`` or a fresh PostgreSQL
    database), migrated to head when ``migrate``."""
    from registry import db
    from registry.settings import Settings

    if backend == "sqlite":
        url = f"sqlite:///{(folder / f'api-{uuid.uuid4().hex[:8]}.db').as_posix()}"
        if migrate:
            db.init_db(Settings(database_url=url))
        yield url
        return
    with temporary_pg_database("ld3_test_api") as url:
        if migrate:
            db.init_db(Settings(database_url=url))
        yield url


def database_fixtures(folder_prefix: str) -> tuple[Any, Any]:
    """Fixtures ``(module_url, url)``: a migrated database of each backend shared by a test
    module, emptied before each test. Use: ``module_url, url = database_fixtures("x")``.
    """

    @pytest.fixture(scope="module", params=BACKENDS)
    def module_url(request, tmp_path_factory) -> Iterator[str]:
        with backend_url(request.param, tmp_path_factory.mktemp(folder_prefix)) as db_url:
            yield db_url

    @pytest.fixture
    def url(module_url: str) -> str:
        clear_tables(module_url)
        return module_url

    return module_url, url


def settings_for(url: str, folder: Path, **overrides: Any):
    """Settings for ``url`` with home/artifacts under ``folder``, no broker, no token, no
    auto-migration (the database is migrated already)."""
    from registry.settings import Settings

    values: dict[str, Any] = {
        "database_url": url,
        "home": folder,
        "artifacts_dir": folder / "artifacts",
        "broker_url": None,
        "api_token": None,
        "auto_migrate": False,
    }
    values.update(overrides)
    return Settings(**values)


def clear_tables(url: str) -> None:
    """Delete every row of the registry tables (between tests sharing one database)."""
    from registry.db import get_engine
    from registry.settings import Settings

    engine = get_engine(Settings(database_url=url))
    with engine.begin() as conn:
        for table in TABLES_IN_DELETE_ORDER:
            conn.execute(text(f"DELETE FROM {table}"))


def count_rows(url: str) -> dict[str, int]:
    """Row count of each registry table: {"jobs": n, "schedules": n, ...}."""
    from registry.db import get_engine
    from registry.settings import Settings

    engine = get_engine(Settings(database_url=url))
    with engine.connect() as conn:
        return {
            t: int(conn.execute(text(f"SELECT COUNT(*) FROM {t}")).scalar_one())
            for t in TABLES_IN_DELETE_ORDER
        }


class RecordingDispatcher:
    """An in-memory dispatcher implementing the protocol of ``api.dispatch.Dispatcher``.

    ``submitted``/``cancelled`` record job ids; ``broker_up=False`` makes ``submit`` raise
    ``ConnectionError`` and ``ping`` return False; ``ping_raises`` makes ``ping`` raise.
    """

    def __init__(self) -> None:
        self.submitted: list[str] = []
        self.cancelled: list[str] = []
        self.broker_up = True
        self.ping_raises = False
        self.closed = False

    def submit(self, job_id: str) -> None:
        """Record the id, or raise ConnectionError when the broker is "down"."""
        if not self.broker_up:
            raise ConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused.")
        self.submitted.append(job_id)

    def cancel(self, job_id: str) -> None:
        """Record a cancel."""
        self.cancelled.append(job_id)

    def ping(self) -> bool:
        """``broker_up``, or raise when ``ping_raises``."""
        if self.ping_raises:
            raise OSError("ping exploded")
        return self.broker_up

    def close(self) -> None:
        """Record the shutdown."""
        self.closed = True


def vp_config() -> dict[str, Any]:
    """``NoiseSchedule.config()`` of the default continuous VP-linear schedule."""
    from ld3_core.schedules import VPLinear

    return VPLinear().config()


def logsnr_times(nfe: int, config: dict[str, Any] | None = None) -> list[float]:
    """``nfe + 1`` decreasing solver times (uniform in lambda) for a schedule config."""
    from ld3_core.heuristics import discretize
    from ld3_core.schedules import from_config

    sched = from_config(config or vp_config())
    return discretize("logsnr", nfe, sched).tolist()


def publish_fake_result(
    url: str,
    *,
    model: str = "builtin:gmm-digits",
    solver: str = "unipc",
    order: int = 2,
    nfe: int = 6,
    score: float | None = 1.0,
    kind: str = "trust_region",
    noise_schedule: dict[str, Any] | None = None,
    artifacts: dict[str, str] | None = None,
    jitter: float = 0.0,
    decoupled: bool = False,
):
    """Create + claim + publish one job through the registry (what a worker does); returns
    the Schedule row. ``jitter`` moves the interior times a little (distinct schedules)."""
    from registry import db
    from registry.jobs import claim_job, create_job
    from registry.schedules import publish_result
    from registry.settings import Settings

    cfg = noise_schedule or vp_config()
    times = logsnr_times(nfe, cfg)
    for i in range(1, nfe):
        times[i] += jitter * (times[i - 1] - times[i]) * 0.1
    model_times = [t * 0.999 for t in times] if decoupled else None
    settings = Settings(database_url=url)
    with db.session_scope(settings) as s:
        job, _ = create_job(s, JobSpec.parse(kind, model, solver, nfe, order))
        claim_job(s, job.id, "test-worker")
        return publish_result(
            s, job.id, timesteps=times, model_timesteps=model_times, score=score, metric="fd",
            extractor="digits", noise_schedule=cfg, artifacts=artifacts,
        )


def assert_problem(response, status: int, slug: str | None = None) -> dict[str, Any]:
    """The response is an RFC 9457 problem with ``status``; returns its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status
    assert {"type", "title", "status", "detail", "instance"} <= set(body)
    assert body["instance"] == response.request.url.path
    if slug is not None:
        assert body["type"] == f"urn:ld3:problem:{slug}"
    return body
