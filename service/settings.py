"""Configuration, read from the environment or a `.env` file. Built once at the entry point and passed down."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Annotated

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from service.db.engine import DEFAULT_CONNECT_TIMEOUT_SECONDS, DEFAULT_STATEMENT_TIMEOUT_SECONDS
from service.domain.programs import DEFAULT_PROGRAM_NAME, PROGRAM_NAME_PATTERN
from service.domain.shutdown import ShutdownMode
from service.runner.keeper import KeeperKind
from service.runner.program import BUNDLED_SAMPLE_JOB

MAX_TIMEOUT_SECONDS = 30 * 24 * 3600
MEBIBYTE = 1024 * 1024
DEFAULT_RETRY_BACKOFF_BASE_SECONDS = 1.0

# Names a child process may inherit from the service's environment; everything else (DATABASE_URL, tokens, ...)
# stays with the service. JOB_ENV_PASSTHROUGH adds more names.
DEFAULT_CHILD_ENVIRONMENT = (
    "PATH",
    "HOME",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "USER",
    "LOGNAME",
    # Windows cannot start most programs without these.
    "SYSTEMROOT",
    "SYSTEMDRIVE",
    "WINDIR",
    "COMSPEC",
    "PATHEXT",
    "TEMP",
    "TMP",
)


class Settings(BaseSettings):
    """Every setting of the service; see `.env.example` for each one with its default."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
        validate_default=True,
        # `JOB_SCRIPT_PATH=` in a .env file means "unset, use the default", as .env.example shows it.
        env_ignore_empty=True,
    )

    job_script_path: Path | None = Field(
        default=None, description="The program a job runs; unset runs the bundled sample job."
    )
    host: str = Field(default="127.0.0.1", min_length=1, description="Address the HTTP API binds to.")
    port: Annotated[int, Field(ge=1, le=65535)] = 3000
    database_url: str | None = Field(
        default=None,
        description="PostgreSQL URL; unset starts an embedded PostgreSQL under DATA_DIR/postgres.",
    )
    data_dir: Path = Path("data")
    log_file: Path = Path("logs/app.log")
    log_level: str = "INFO"
    node_id: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$",
        description="This node's name in the attempts table; unset keeps a generated one in DATA_DIR/node-id.",
    )
    max_concurrent_jobs: Annotated[int, Field(ge=1, le=100_000)] = 10
    max_attempts: Annotated[int, Field(ge=1, le=20)] = 2
    retry_backoff_base_seconds: float | None = Field(
        default=None,
        ge=0,
        le=3600,
        description="The longest wait before a first retry; each later one may wait up to twice as long.",
    )
    retry_backoff_seconds: float | None = Field(
        default=None,
        ge=0,
        le=3600,
        description="The older name of RETRY_BACKOFF_BASE_SECONDS, read when that one is unset.",
    )
    retry_backoff_cap_seconds: Annotated[float, Field(ge=0, le=86400)] = 300.0
    default_timeout_seconds: float | None = Field(
        default=None, gt=0, le=MAX_TIMEOUT_SECONDS, description="timeoutSeconds of a job that gives none; unset: none."
    )
    cancel_grace_seconds: Annotated[float, Field(ge=0, le=3600)] = 10.0
    allowed_programs: dict[str, Path] = Field(
        default_factory=dict,
        description="Programs a job may name besides `default` (JOB_SCRIPT_PATH), as a JSON object name -> path.",
    )
    output_limit_bytes: Annotated[int, Field(ge=1024, le=1024 * 1024 * MEBIBYTE)] = 10 * MEBIBYTE
    output_tail_bytes: Annotated[int, Field(ge=0, le=16 * MEBIBYTE)] = 64 * 1024
    poll_interval_seconds: Annotated[float, Field(gt=0, le=60)] = 1.0
    shutdown_grace_seconds: Annotated[float, Field(ge=0, le=3600)] = 10.0
    shutdown_mode: ShutdownMode = Field(
        default=ShutdownMode.LEAVE,
        description="What a graceful stop does with running jobs: leave (adopted on restart), drain, or kill.",
    )
    exit_keeper: KeeperKind = Field(
        default=KeeperKind.AUTO,
        description="What records each program's exit status durably: auto, native (C), python, or none.",
    )
    job_env_passthrough: tuple[str, ...] = ()
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
    outcome_sweep_interval_seconds: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description=(
            "Seconds between sweeps that record, from their exit-status files, attempts of this node still"
            " `running` in the database although nothing watches them any more; above 0, at most 3600."
        ),
    )

    @field_validator("log_level")
    @classmethod
    def _known_log_level(cls, value: str) -> str:
        level = value.upper()
        if level not in logging.getLevelNamesMapping():
            raise ValueError(f"unknown log level {value!r}; use DEBUG, INFO, WARNING or ERROR")
        return level

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("postgresql://", "postgres://", "postgresql+asyncpg://")):
            raise ValueError("must be a PostgreSQL URL such as postgresql://user:password@host:5432/dbname")
        return value

    @field_validator("job_script_path")
    @classmethod
    def _existing_program(cls, value: Path | None) -> Path | None:
        if value is None or str(value) == "":
            return None
        if not value.is_file():
            raise ValueError(f"{value} is not a file")
        return value.resolve()

    @field_validator("allowed_programs")
    @classmethod
    def _named_existing_programs(cls, value: dict[str, Path]) -> dict[str, Path]:
        resolved = {}
        for name, path in value.items():
            if re.fullmatch(PROGRAM_NAME_PATTERN, name) is None:
                raise ValueError(
                    f"program name {name!r}: use letters, digits, '.', '_', '-' (at most 63, starting with a "
                    "letter or a digit)"
                )
            if name == DEFAULT_PROGRAM_NAME:
                raise ValueError(f"{DEFAULT_PROGRAM_NAME!r} is JOB_SCRIPT_PATH's name; give this program another")
            if not path.is_file():
                raise ValueError(f"program {name!r}: {path} is not a file")
            resolved[name] = path.resolve()
        return resolved

    @property
    def retry_backoff_base(self) -> float:
        """RETRY_BACKOFF_BASE_SECONDS, else the older RETRY_BACKOFF_SECONDS, else 1 s."""
        for value in (self.retry_backoff_base_seconds, self.retry_backoff_seconds):
            if value is not None:
                return value
        return DEFAULT_RETRY_BACKOFF_BASE_SECONDS

    @property
    def programs(self) -> dict[str, Path]:
        """Every program a job may name, `default` first: JOB_SCRIPT_PATH (or the sample job), then the others."""
        return {DEFAULT_PROGRAM_NAME: self.job_script_path or BUNDLED_SAMPLE_JOB, **self.allowed_programs}

    @property
    def child_environment_names(self) -> tuple[str, ...]:
        return DEFAULT_CHILD_ENVIRONMENT + self.job_env_passthrough


# pydantic-settings names the field in its message when a value meant as JSON (a list) does not parse.
_SETTINGS_ERROR_FIELD = re.compile(r'field "(?P<name>\w+)"')


def describe_settings_error(error: ValidationError | SettingsError) -> str:
    """One line per bad value, naming the environment variable, for a start-up failure message."""
    if isinstance(error, SettingsError):
        match = _SETTINGS_ERROR_FIELD.search(str(error))
        variable = match.group("name").upper() if match else "settings"
        reason = error.__cause__ or error
        return f'invalid configuration:\n  {variable}: {reason} (a list is written as JSON, e.g. ["A", "B"])'
    lines = []
    for problem in error.errors():
        variable = "_".join(str(part) for part in problem["loc"][:1]).upper() or "settings"
        lines.append(f"{variable}: {problem['msg']} (got {problem.get('input')!r})")
    return "invalid configuration:\n  " + "\n  ".join(lines)
