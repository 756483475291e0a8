"""Alembic migrations and the SQLAlchemy models agree, on SQLite and the real PostgreSQL;
``alembic upgrade head`` works from the command line with LD3_DATABASE_URL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from api_helpers import BACKENDS, backend_url
from sqlalchemy import create_engine, inspect

from registry import db
from registry.orm import Base
from registry.settings import Settings

REPO = Path(__file__).resolve().parent.parent
TABLES = {"jobs", "schedules", "models", "artifacts"}


def _diff(url: str) -> list:
    engine = create_engine(db.normalize_url(url))
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            return compare_metadata(ctx, Base.metadata)
    finally:
        engine.dispose()


def _tables(url: str) -> set[str]:
    engine = create_engine(db.normalize_url(url))
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


@pytest.mark.parametrize("backend", BACKENDS)
def test_models_and_migrations_agree(backend: str, tmp_path: Path):
    with backend_url(backend, tmp_path, migrate=False) as url:
        assert _tables(url) == set()
        db.init_db(Settings(database_url=url))
        assert _tables(url) == TABLES
        assert _diff(url) == []
        db.init_db(Settings(database_url=url))  # idempotent at head
        cfg = db.alembic_config(url)
        command.downgrade(cfg, "base")
        assert _tables(url) == set()
        command.upgrade(cfg, "head")
        assert _diff(url) == []


def test_a_model_change_without_migration_is_detected(tmp_path: Path):
    """The comparison is not vacuous: an extra column in the metadata shows up as a diff."""
    from sqlalchemy import Column, Integer, MetaData

    url = f"sqlite:///{tmp_path / 'x.db'}"
    db.init_db(Settings(database_url=url))
    meta = MetaData(naming_convention=Base.metadata.naming_convention)
    for table in Base.metadata.tables.values():
        table.to_metadata(meta)
    meta.tables["jobs"].append_column(Column("priority", Integer, nullable=True))
    engine = create_engine(url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), meta)
    engine.dispose()
    assert [d[0] for d in diff] == ["add_column"] and diff[0][3].name == "priority"


def test_alembic_cli_uses_ld3_database_url(tmp_path: Path):
    path = tmp_path / "cli.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LD3_")}
    env["LD3_DATABASE_URL"] = f"sqlite:///{path}"
    env["OMP_NUM_THREADS"] = "1"
    done = subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(REPO / "alembic.ini"), "upgrade", "head"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert _tables(f"sqlite:///{path}") == TABLES
    assert _diff(f"sqlite:///{path}") == []


def test_migrate_module_entry_point(tmp_path: Path, monkeypatch, capsys):
    from registry.migrate import main

    monkeypatch.setenv("LD3_DATABASE_URL", f"sqlite:///{tmp_path / 'm.db'}")
    assert main([]) == 0
    assert _tables(f"sqlite:///{tmp_path / 'm.db'}") == TABLES
    monkeypatch.setenv("LD3_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:1/none")
    assert main([]) == 1
    assert "database not reachable" in capsys.readouterr().err
