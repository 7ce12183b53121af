"""Settings: nested pydantic-settings groups read from ``TACTFUL_*`` environment variables.

``TACTFUL_DATABASE_URL`` sets ``database.url``, ``TACTFUL_JOBS_LEASE_SECONDS`` sets
``jobs.lease_seconds`` and so on: the first underscore after the prefix separates the group.
With nothing set, everything lives in ``./tactful-data`` (SQLite + DuckDB).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class DatabaseSettings(BaseModel):
    """The transactional database (SQLAlchemy URL)."""

    url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; empty means a SQLite file in the data folder. "
        "postgresql://user:password@host:5432/db uses PostgreSQL through psycopg 3.",
    )
    pool_size: int = Field(default=10, ge=1, le=200)
    echo: bool = False


class WarehouseSettings(BaseModel):
    """The analytical warehouse (an Ibis backend)."""

    url: str | None = Field(
        default=None,
        description="Empty means a DuckDB file in the data folder. Also: duckdb:///path, "
        "postgres://user:password@host/db, spark://local[2] (local mode) or "
        "spark://host:7077 (a Spark master).",
    )
    spark_shuffle_partitions: int = Field(default=4, ge=1)
    duckdb_memory_limit: str | None = Field(default=None, description="e.g. '4GB'")
    duckdb_threads: int | None = Field(default=None, ge=1)


class ServerSettings(BaseModel):
    """The HTTP server started by ``tactful serve``."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    public_url: str | None = Field(
        default=None,
        description="Base URL customers reach (tracking links, unsubscribe); "
        "defaults to http://host:port.",
    )
    run_worker: bool = Field(
        default=True,
        description="Run the job worker loops inside the server process "
        "(always true on the embedded SQLite default).",
    )


class JobSettings(BaseModel):
    """The job runner."""

    concurrency: int = Field(default=4, ge=1, le=64)
    poll_seconds: float = Field(default=0.5, gt=0)
    lease_seconds: float = Field(default=120.0, gt=0)
    max_attempts: int = Field(default=8, ge=1)
    backoff_seconds: float = Field(default=2.0, gt=0)
    backoff_max_seconds: float = Field(default=3600.0, gt=0)
    keep_done_days: float = Field(default=7.0, ge=0)
    own_process: bool = Field(
        default=True,
        description="On the embedded SQLite default, `serve` runs the sending jobs "
        "(rendering and submitting messages) in a second process it starts and watches, "
        "so they do not compete with the API and the triggers for one Python interpreter",
    )


class LogSettings(BaseModel):
    """Structured logging."""

    level: str = "INFO"
    json_output: bool = Field(default=False, description="JSON lines instead of console text")


class SecuritySettings(BaseModel):
    """Secrets. When unset, a random secret is created once and kept in the database."""

    secret_key: str | None = None


class Settings(BaseSettings):
    """All of Tactful's configuration."""

    model_config = SettingsConfigDict(
        env_prefix="TACTFUL_",
        env_nested_delimiter="_",
        env_nested_max_split=1,
        extra="ignore",
    )

    data_dir: Path = Field(default=Path("tactful-data"), description="Local data folder")
    default_region: str = Field(
        default="RU", description="Phone number region for new workspaces (ISO 3166 alpha-2)"
    )
    default_timezone: str = Field(default="Europe/Moscow")
    database: DatabaseSettings = DatabaseSettings()
    warehouse: WarehouseSettings = WarehouseSettings()
    server: ServerSettings = ServerSettings()
    jobs: JobSettings = JobSettings()
    log: LogSettings = LogSettings()
    security: SecuritySettings = SecuritySettings()

    @property
    def database_url(self) -> str:
        """The effective database URL."""
        if self.database.url:
            return self.database.url
        return f"sqlite:///{(self.data_dir / 'tactful.sqlite3').resolve()}"

    @property
    def warehouse_url(self) -> str:
        """The effective warehouse URL."""
        if self.warehouse.url:
            return self.warehouse.url
        return f"duckdb://{(self.data_dir / 'warehouse.duckdb').resolve()}"

    @property
    def public_url(self) -> str:
        """Base URL for links customers follow."""
        if self.server.public_url:
            return self.server.public_url.rstrip("/")
        return f"http://{self.server.host}:{self.server.port}"
