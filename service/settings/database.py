"""Settings of the database: which one, and how long the service waits for it."""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings

from service.db.engine import DEFAULT_CONNECT_TIMEOUT_SECONDS, DEFAULT_STATEMENT_TIMEOUT_SECONDS


class DatabaseSettings(BaseSettings):
    """The database and the bounds on waiting for it."""

    database_url: str | None = Field(
        default=None,
        description=(
            "PostgreSQL URL: `postgresql://`, `postgres://` or `postgresql+asyncpg://`. The database must exist;"
            " the service creates its tables. Unset: the service starts an embedded PostgreSQL under"
            " `DATA_DIR/postgres`. Jobs never see this variable."
        ),
    )
    database_connect_timeout_seconds: float = Field(
        default=DEFAULT_CONNECT_TIMEOUT_SECONDS,
        gt=0,
        le=300,
        description=(
            "Seconds to wait for a new database connection (and for a free pooled one) before answering 503;"
            " above 0, at most 300."
        ),
    )
    database_statement_timeout_seconds: float = Field(
        default=DEFAULT_STATEMENT_TIMEOUT_SECONDS,
        gt=0,
        le=3600,
        description=(
            "Seconds one statement of the API or the supervisor may run (the server's statement_timeout; the"
            " client gives up a second later if the server stops answering); above 0, at most 3600."
            " Migrations have no bound; /stats has DATABASE_STATS_TIMEOUT_SECONDS."
        ),
    )
    database_stats_timeout_seconds: float = Field(
        default=120.0,
        gt=0,
        le=86400,
        description=(
            "Seconds one /stats statement may run: a rebuild of the rollup scans every attempt. Above 0, at most 86400."
        ),
    )

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("postgresql://", "postgres://", "postgresql+asyncpg://")):
            raise ValueError("must be a PostgreSQL URL such as postgresql://user:password@host:5432/dbname")
        return value
