"""Engines, sessions and schema setup for the registry database (SQLite or PostgreSQL).

- :func:`get_engine` / :func:`get_sessionmaker`: one engine per database URL per process
  (SQLite: WAL journal, foreign keys on, busy timeout; PostgreSQL via psycopg 3 with
  ``pool_pre_ping`` so a process recovers by itself once a restarted server is back).
- :func:`session_scope`: ``with session_scope(settings) as s: ...`` (rolls back on error,
  always closes; repository write functions commit by themselves).
- :func:`init_db`: ``alembic upgrade head`` run programmatically (embedded mode, tests).
- :func:`ping`: ``SELECT 1`` (for readiness checks).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from registry.settings import Settings, get_settings

_lock = threading.Lock()
_engines: dict[tuple[str, int, int, int], Engine] = {}
_makers: dict[int, sessionmaker[Session]] = {}



def migrations_dir() -> Path:
    """Folder of the Alembic scripts (the ``migrations`` package, installed or in the tree)."""
    import importlib.util

    spec = importlib.util.find_spec("migrations")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            if (Path(location) / "env.py").is_file():
                return Path(location)
    return Path(__file__).resolve().parent.parent / "migrations"


def normalize_url(url: str) -> str:
    """Map ``postgres://`` / ``postgresql://`` URLs to the psycopg 3 driver; others unchanged."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def _sqlite_pragmas(busy_timeout_ms: int):
    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        try:
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
        finally:
            cur.close()

    return on_connect


def create_engine_for(settings: Settings) -> Engine:
    """Build a new engine for ``settings.database_url`` (not cached; see :func:`get_engine`).

    SQLite files get their parent folder created; ``sqlite://`` (in-memory) uses one shared
    connection. PostgreSQL URLs are mapped to ``postgresql+psycopg``.
    """
    url = make_url(normalize_url(str(settings.database_url)))
    if url.get_backend_name() == "sqlite":
        kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False, "timeout": 30}}
        if url.database in (None, "", ":memory:"):
            kwargs["poolclass"] = StaticPool
        else:
            Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas(settings.sqlite_busy_timeout_ms))
        return engine
    kwargs = {"pool_pre_ping": True, "pool_size": settings.db_pool_size, "max_overflow": 10}
    if url.get_backend_name() == "postgresql":
        kwargs["connect_args"] = {"connect_timeout": settings.db_connect_timeout_s}
    return create_engine(url, **kwargs)


def get_engine(settings: Settings | None = None) -> Engine:
    """The process-wide engine for ``settings`` (default: :func:`get_settings`), created once."""
    settings = settings or get_settings()
    key = (
        normalize_url(str(settings.database_url)),
        settings.sqlite_busy_timeout_ms,
        settings.db_pool_size,
        settings.db_connect_timeout_s,
    )
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            engine = create_engine_for(settings)
            _engines[key] = engine
        return engine


def get_sessionmaker(settings: Settings | None = None) -> sessionmaker[Session]:
    """Session factory bound to :func:`get_engine` (``expire_on_commit=False``)."""
    engine = get_engine(settings)
    with _lock:
        maker = _makers.get(id(engine))
        if maker is None:
            maker = sessionmaker(bind=engine, expire_on_commit=False)
            _makers[id(engine)] = maker
        return maker


@contextmanager
def session_scope(settings: Settings | None = None) -> Iterator[Session]:
    """Yield a Session; roll back if the block raises; always close it.

    Repository write functions commit by themselves, so nothing is committed here.
    """
    session = get_sessionmaker(settings)()
    try:
        yield session
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def dispose_engines() -> None:
    """Dispose every cached engine (tests, forked worker processes)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
        _makers.clear()


def ping(engine: Engine) -> None:
    """Run ``SELECT 1``; raises ``sqlalchemy.exc.OperationalError`` when the DB is down."""
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))


def alembic_config(database_url: str | None = None):
    """An Alembic ``Config`` for the packaged migrations, targeting ``database_url``.

    ``database_url`` defaults to the settings' URL. Works without ``alembic.ini`` (installed
    package) by pointing ``script_location`` at the ``migrations`` folder.
    """
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    url = normalize_url(database_url or str(get_settings().database_url))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def init_db(settings: Settings | None = None, revision: str = "head") -> None:
    """Bring the database of ``settings`` to ``revision`` with Alembic (``upgrade head``).

    Idempotent: a database already at head is left as it is. Creates the SQLite file (and
    its folder) when needed.
    """
    from alembic import command

    settings = settings or get_settings()
    engine = get_engine(settings)
    cfg = alembic_config(str(settings.database_url))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
