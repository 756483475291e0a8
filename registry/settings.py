"""Service settings, read from ``LD3_*`` environment variables (and a ``.env`` file).

With no variable set everything is embedded: a SQLite file under ``./.ld3/``, artifacts in
``./.ld3/artifacts``, no broker (jobs run in an in-process runner), no API token.

Used by ``registry`` (database URL), ``api`` (token, limits, caching) and ``worker`` (broker,
artifacts, device). Every field is documented in ``docs/api.md`` (settings table).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_HOME = Path(".ld3")


class Settings(BaseSettings):
    """All service settings; environment variable = ``LD3_`` + field name in upper case.

    ``database_url`` and ``artifacts_dir`` default to paths under ``home`` (``LD3_HOME``,
    default ``./.ld3``): ``sqlite:///<home>/ld3.db`` and ``<home>/artifacts``.
    """

    model_config = SettingsConfigDict(
        env_prefix="LD3_", env_file=".env", extra="ignore", validate_default=True
    )

    home: Path = Field(DEFAULT_HOME, description="Folder for the embedded database/artifacts.")
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL: sqlite:///path.db or postgresql+psycopg://user@host/db. "
        "Default: sqlite:///<home>/ld3.db.",
    )
    broker_url: str | None = Field(
        None, description="Celery broker (redis://host:6379/0). None: embedded in-process runner."
    )
    result_backend: str | None = Field(None, description="Celery result backend (optional).")
    celery_queue: str = Field("ld3", description="Celery queue the job tasks go to.")
    broker_timeout_s: float = Field(
        3.0, gt=0, description="Seconds a broker ping / task publish may take before failing."
    )
    api_token: str | None = Field(
        None, repr=False, description="Bearer token required for writes (and reads if set so)."
    )
    reads_require_token: bool = Field(False, description="Require the token for GETs too.")
    artifacts_dir: Path | None = Field(
        None, description="Folder for reports, checkpoints, teacher data. Default <home>/artifacts."
    )
    max_body_bytes: int = Field(1_048_576, gt=0, description="Largest accepted request body.")
    max_nfe: int = Field(50, ge=1, description="Largest NFE a job may ask for (1..max_nfe).")
    default_page_size: int = Field(20, ge=1, description="Page size when ?limit= is absent.")
    max_page_size: int = Field(100, ge=1, description="Largest ?limit= accepted.")
    schedule_max_age_s: int = Field(
        300, ge=0, description="Cache-Control max-age of GET /schedules/{model}/{solver}/{nfe}."
    )
    interpolated_max_age_s: int = Field(
        30, ge=0, description="Cache-Control max-age of an interpolated schedule."
    )
    schedule_cache_check_s: float = Field(
        1.0, ge=0, description="Seconds between two checks for schedules published by another "
        "process (the lookup cache's version check; 0: every request).",
    )
    ready_timeout_s: float = Field(3.0, gt=0, description="Time limit of each /readyz check.")
    db_connect_timeout_s: int = Field(5, ge=1, description="PostgreSQL connect timeout.")
    db_pool_size: int = Field(5, ge=1, description="PostgreSQL connection pool size.")
    sqlite_busy_timeout_ms: int = Field(15000, ge=0, description="SQLite busy_timeout pragma.")
    auto_migrate: bool | None = Field(
        None,
        description="Run 'alembic upgrade head' when the API starts. Default: yes for SQLite, "
        "no for other databases (compose runs a migrate step).",
    )
    device: str | None = Field(None, description="Torch device for workers (None: auto).")
    job_time_limit_s: int | None = Field(None, ge=1, description="Hard time limit of one job.")
    log_level: str = Field("INFO", description="Python logging level name.")
    model_roots: str | None = Field(
        None,
        description="Folders (separated by os.pathsep, ':' on Linux) under which local model "
        "folders may be registered. Unset: none in the service (broker set), the working "
        "folder in embedded mode.",
    )

    @field_validator("database_url", "broker_url", "api_token", "result_backend", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        """Treat an empty environment variable as unset."""
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @model_validator(mode="after")
    def _fill_defaults(self) -> Settings:
        """Derive ``database_url`` and ``artifacts_dir`` from ``home`` when they are unset."""
        if self.database_url is None:
            self.database_url = f"sqlite:///{(self.home / 'ld3.db').as_posix()}"
        if self.artifacts_dir is None:
            self.artifacts_dir = self.home / "artifacts"
        return self

    @property
    def embedded(self) -> bool:
        """True when no broker URL is set: jobs run in the in-process runner."""
        return not self.broker_url

    @property
    def is_sqlite(self) -> bool:
        """True when the database is SQLite."""
        return str(self.database_url).startswith("sqlite")

    @property
    def should_auto_migrate(self) -> bool:
        """Whether the API runs migrations at start (``auto_migrate``, default: SQLite only)."""
        return self.is_sqlite if self.auto_migrate is None else bool(self.auto_migrate)

    @property
    def model_root_paths(self) -> list[Path]:
        """Resolved ``model_roots``; unset: ``[cwd]`` when embedded, ``[]`` in the service."""
        if self.model_roots is None:
            return [Path.cwd().resolve()] if self.embedded else []
        from registry.model_policy import parse_roots

        return parse_roots(self.model_roots)

    @property
    def artifacts_path(self) -> Path:
        """``artifacts_dir`` as a Path (never None after validation)."""
        assert self.artifacts_dir is not None
        return Path(self.artifacts_dir)


def get_settings(**overrides: Any) -> Settings:
    """Read the settings from the environment now (not cached); ``overrides`` win over env."""
    return Settings(**overrides)
