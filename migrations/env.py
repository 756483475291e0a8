"""Alembic environment: the registry's SQLAlchemy metadata and the LD3 database URL.

The URL is, in order: a connection handed over in ``config.attributes["connection"]``
(``registry.db.init_db``), ``sqlalchemy.url`` set on the Config (``registry.db.alembic_config``),
else ``LD3_DATABASE_URL`` via ``registry.settings.get_settings()`` (the ``alembic`` CLI).
On PostgreSQL an advisory lock serializes concurrent upgrades (API and migrate step racing).
"""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection, text

from registry.db import create_engine_for, normalize_url
from registry.orm import Base
from registry.settings import get_settings

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata
MIGRATION_LOCK_ID = 0x1D3_5E4


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    return normalize_url(url or str(get_settings().database_url))


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        render_as_batch=connection.dialect.name == "sqlite",
    )


def _run(connection: Connection) -> None:
    _configure(connection)
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(text(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_ID})"))
        context.run_migrations()


def run_migrations_offline() -> None:
    """Emit SQL to stdout (``alembic upgrade head --sql``)."""
    context.configure(
        url=_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        compare_type=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run against a live database (a given connection, or a new engine for the URL)."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    settings = get_settings(database_url=_url())
    engine = create_engine_for(settings)
    try:
        with engine.connect() as conn:
            _run(conn)
            conn.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
