"""The tests' PostgreSQL server (127.0.0.1:5432, trust auth, user postgres by default) and the
throw-away databases they create on it; nothing else on the server is touched."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

PG_HOST = os.environ.get("LD3_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("LD3_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("LD3_TEST_PG_USER", "postgres")


def unavailable(reason: str) -> None:
    """Skip the test, or fail it under CI=true (CI must have every service up)."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(reason)
    pytest.skip(reason)


def pg_dsn(dbname: str, host: str = PG_HOST, port: int = PG_PORT) -> str:
    """SQLAlchemy URL (psycopg 3) of database ``dbname`` as the test user."""
    return f"postgresql+psycopg://{PG_USER}@{host}:{port}/{dbname}"


def pg_admin(sql: str, host: str = PG_HOST, port: int = PG_PORT) -> None:
    """Run one statement (CREATE/DROP DATABASE) on the ``postgres`` database, autocommit."""
    import psycopg

    with psycopg.connect(
        host=host, port=port, user=PG_USER, dbname="postgres", autocommit=True, connect_timeout=5
    ) as conn:
        conn.execute(sql)


@contextmanager
def temporary_pg_database(prefix: str = "ld3_test") -> Iterator[str]:
    """Create ``<prefix>_<hex>``, yield its URL, then drop it (engines disposed first).

    Skips (fails under CI=true) when the server is unreachable.
    """
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        pg_admin(f'CREATE DATABASE "{name}"')
    except Exception as exc:  # noqa: BLE001
        unavailable(f"PostgreSQL not reachable on {PG_HOST}:{PG_PORT}: {exc}")
    try:
        yield pg_dsn(name)
    finally:
        from registry.db import dispose_engines

        dispose_engines()
        try:
            pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except Exception as exc:  # noqa: BLE001
            print(f"warning: could not drop test database {name}: {exc}", file=sys.stderr)
