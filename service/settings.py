"""Configuration, read from the environment or a `.env` file. Built once at the entry point and passed down."""

from __future__ import annotations

import logging
import re
import socket
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from service.db.engine import DEFAULT_CONNECT_TIMEOUT_SECONDS, DEFAULT_STATEMENT_TIMEOUT_SECONDS
from service.domain.lease import MIN_LEASE_SECONDS
from service.domain.limits import (
    MAX_CPU_LIMIT_SECONDS,
    MAX_MEMORY_LIMIT_BYTES,
    MAX_OPEN_FILES_LIMIT,
    MAX_TIMEOUT_SECONDS,
    MIN_MEMORY_LIMIT_BYTES,
    JobLimits,
)
from service.domain.programs import DEFAULT_PROGRAM_NAME, PROGRAM_NAME_PATTERN
from service.domain.shutdown import ShutdownMode
from service.logs import LogFormat
from service.runner.keeper import KeeperKind
from service.runner.program import BUNDLED_SAMPLE_JOB

MEBIBYTE = 1024 * 1024
DEFAULT_RETRY_BACKOFF_BASE_SECONDS = 1.0
MAX_LEASE_SECONDS = 3600.0
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})  # noqa: S104  (names, not a bind)

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


ENV_FILE = Path(".env")


class Settings(BaseSettings):
    """Every setting of the service; see `.env.example` for each one with its default."""

    model_config = SettingsConfigDict(
        env_file=ENV_FILE,
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
        validate_default=True,
        # `JOB_SCRIPT_PATH=` in a .env file means "unset, use the default", as .env.example shows it.
        env_ignore_empty=True,
    )

    job_script_path: Path | None = Field(
        default=None,
        description=(
            "The default program, named `default`: what a job runs, as `[program, *arguments]`, unless it names"
            " another of `ALLOWED_PROGRAMS`. Must be an existing file. A `.py` file runs with the service's own"
            " Python interpreter; anything else is executed directly (on Linux it needs its exec bit and a shebang)."
            " Each job stores the program it was accepted with, so a change affects new jobs only."
            " Unset: the bundled sample job, `service/samples/sample_job.py`."
        ),
    )
    host: str = Field(
        default="127.0.0.1",
        min_length=1,
        description=(
            "Address the API binds to. Any address but a loopback one needs `API_TOKEN` or `API_TOKENS_FILE`"
            " (start-up is refused otherwise, unless `ALLOW_UNAUTHENTICATED=true`)."
        ),
    )
    port: Annotated[int, Field(ge=1, le=65535, description="TCP port of the API, 1 to 65535.")] = 3000
    database_url: str | None = Field(
        default=None,
        description=(
            "PostgreSQL URL: `postgresql://`, `postgres://` or `postgresql+asyncpg://`. The database must exist;"
            " the service creates its tables. Unset: the service starts an embedded PostgreSQL under"
            " `DATA_DIR/postgres`. Jobs never see this variable."
        ),
    )
    data_dir: Path = Field(
        default=Path("data"),
        description=(
            "This node's folder: the embedded PostgreSQL (`postgres/`), the node id (`node-id`), every attempt's"
            " output and exit status (`output/`), the compiled exit keeper (`bin/`). One folder per node."
        ),
    )
    log_file: Path = Field(
        default=Path("logs/app.log"),
        description="The log file (also written to the console), rotated at 10 MiB, 5 old files kept.",
    )
    log_level: str = Field(default="INFO", description="`DEBUG`, `INFO`, `WARNING` or `ERROR`, any case.")
    log_format: LogFormat = Field(
        default=LogFormat.TEXT,
        description=(
            "`text`: readable lines (time, level, logger, message). `json`: one JSON object per line (`time`, `level`,"
            " `logger`, `message`, and `requestId` on every line a request caused). Both go to the console and"
            " `LOG_FILE`."
        ),
    )
    node_id: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$",
        description=(
            "This node's name in the `attempts` table. Must stay the same across restarts and differ between"
            " nodes. Letters, digits, `.`, `_`, `-`; at most 63 characters, starting with a letter or a digit."
            " Unset: generated once as `<hostname>-<8 hex digits>` and kept in `DATA_DIR/node-id`."
        ),
    )
    max_concurrent_jobs: Annotated[
        int, Field(ge=1, le=100_000, description="How many jobs this node runs at once, 1 to 100000.")
    ] = 10
    max_attempts: Annotated[
        int,
        Field(
            ge=1,
            le=20,
            description=(
                "Attempts a job may have in all, 1 to 20: `2` retries a failed job once. Stored with each job when it"
                " is accepted."
            ),
        ),
    ] = 2
    retry_backoff_base_seconds: float | None = Field(
        default=None,
        ge=0,
        le=3600,
        description=(
            "The longest wait before a first retry, 0 to 3600. After attempt n fails, the next waits a random time"
            " between 0 and `min(cap, base * 2^(n-1))` (exponential backoff with full jitter)."
            " Unset: 1.0."
        ),
    )
    retry_backoff_cap_seconds: Annotated[
        float, Field(ge=0, le=86400, description="No wait before a retry is longer, 0 to 86400.")
    ] = 300.0
    default_timeout_seconds: float | None = Field(
        default=None,
        gt=0,
        le=MAX_TIMEOUT_SECONDS,
        description=(
            "`timeoutSeconds` of a job that gives none: an attempt running longer is ended and recorded"
            " `timed_out`. Above 0, at most 2592000 (30 days). Unset: no timeout."
        ),
    )
    cancel_grace_seconds: Annotated[
        float,
        Field(
            ge=0,
            le=3600,
            description=(
                "A cancelled or timed-out attempt's process group gets `SIGTERM`, then `SIGKILL` this long after if"
                " any of it still runs, 0 to 3600."
            ),
        ),
    ] = 10.0
    allowed_programs: dict[str, Path] = Field(
        default_factory=dict,
        description=(
            'More programs a job may name (`"program": "report"`), as a JSON object name → path:'
            ' `ALLOWED_PROGRAMS=\'{"report": "/opt/jobs/report.sh"}\'`. Each path must be an existing file'
            " (checked at start-up); names are letters, digits, `.`, `_`, `-`; `default` is `JOB_SCRIPT_PATH`'s."
            " A client only ever gives a name."
        ),
    )
    output_limit_bytes: Annotated[
        int,
        Field(
            ge=1024,
            le=1024 * 1024 * MEBIBYTE,
            description=(
                "Bytes of each output stream (stdout, stderr) kept in its file, 1024 to 1 TiB (default 10 MiB);"
                " past it, a truncation marker and the stream's last `OUTPUT_TAIL_BYTES`. Without an exit keeper"
                " the files are not bounded."
            ),
        ),
    ] = 10 * MEBIBYTE
    output_tail_bytes: Annotated[
        int,
        Field(
            ge=0,
            le=16 * MEBIBYTE,
            description=(
                "The end of each stream kept past the limit, and stored on the attempt row when it ends"
                " (`attempts.stdout_tail`, `stderr_tail`), 0 to 16 MiB (default 64 KiB)."
            ),
        ),
    ] = 64 * 1024
    job_memory_limit_bytes: int | None = Field(
        default=None,
        ge=MIN_MEMORY_LIMIT_BYTES,
        le=MAX_MEMORY_LIMIT_BYTES,
        description=(
            "The most memory a job's program may allocate (RLIMIT_DATA: heap and private writable mappings, not"
            " mapped files), at least 1 MiB; an allocation past it fails. A job may ask for less"
            " (`memoryLimitBytes`), never more. Set by the exit keeper. Unset: no limit."
        ),
    )
    job_cpu_limit_seconds: int | None = Field(
        default=None,
        ge=1,
        le=MAX_CPU_LIMIT_SECONDS,
        description=(
            "CPU seconds a job's program may use (RLIMIT_CPU): `SIGXCPU` then, `SIGKILL` a second later; the"
            " attempt is `killed` with the error `exceeded its CPU limit of N s`. 1 to 2592000. A job may ask for"
            " less (`cpuLimitSeconds`), never more. Set by the exit keeper. Unset: no limit."
        ),
    )
    job_open_files_limit: int | None = Field(
        default=None,
        ge=1,
        le=MAX_OPEN_FILES_LIMIT,
        description=(
            "Open file descriptors a job's program may hold (RLIMIT_NOFILE; stdin, stdout and stderr count): one"
            " more fails with EMFILE. 1 to 1048576. A job may ask for less (`openFilesLimit`), never more. Set by"
            " the exit keeper. Unset: no limit."
        ),
    )
    output_retention_days: Annotated[
        float,
        Field(
            gt=0,
            le=36500,
            description=(
                "An attempt's output files are removed this many days after it ended (its tails stay on the"
                " attempt row, and GET .../output serves them from there). Above 0, at most 36500."
            ),
        ),
    ] = 14.0
    job_retention_days: float | None = Field(
        default=None,
        gt=0,
        le=36500,
        description=(
            "Finished jobs (completed, crashed, cancelled) are deleted with their attempts this many days after"
            " they finished, once their output files are gone. Above 0, at most 36500. Unset: jobs are kept."
        ),
    )
    prune_interval_seconds: Annotated[
        float,
        Field(
            gt=0,
            le=86400,
            description="How often the pruner removes what the retention settings let go. Above 0, at most 86400.",
        ),
    ] = 600.0
    stats_drain_interval_seconds: Annotated[
        float,
        Field(
            gt=0,
            le=3600,
            description=(
                "How often the /stats queues (attempts finished, jobs changed) are folded into the rollup in the"
                " background, so that they stay short when nobody asks for /stats. Above 0, at most 3600."
            ),
        ),
    ] = 10.0
    poll_interval_seconds: Annotated[
        float,
        Field(
            gt=0,
            le=60,
            description=(
                "How often the supervisor looks for due jobs when nothing woke it (jobs submitted through another"
                " node). A job submitted to this node wakes it at once. Above 0, at most 60."
            ),
        ),
    ] = 1.0
    shutdown_grace_seconds: Annotated[
        float,
        Field(
            ge=0,
            le=3600,
            description="For `drain` and `kill`: how long a graceful stop waits for running jobs, 0 to 3600.",
        ),
    ] = 10.0
    shutdown_mode: ShutdownMode = Field(
        default=ShutdownMode.LEAVE,
        description=(
            "What a graceful stop does with running jobs: `leave` them for the next start to adopt, `drain`"
            " (wait up to `SHUTDOWN_GRACE_SECONDS` for them) or `kill` them."
        ),
    )
    exit_keeper: KeeperKind = Field(
        default=KeeperKind.AUTO,
        description=(
            "What records each program's exit status in a file, so that it survives the service: `auto` (the"
            " compiled keeper if a C compiler is found, else the Python one), `native` (start-up fails without a"
            " C compiler), `python` or `none`. Ignored on Windows, which has no keeper."
        ),
    )
    keeper_fork_server: bool = Field(
        default=True,
        description=(
            "With the compiled exit keeper: start keepers through one long-lived fork server (`exit_keeper"
            " --serve`), which forks them many at a time and reports their exits, instead of spawning each from"
            " the service. `false`: spawn each keeper directly (slower; the same records). Keepers outlive either"
            " way (see The exit keeper in docs/operations.md)."
        ),
    )
    node_lease_seconds: float = Field(
        default=30.0,
        description=(
            "With `DATABASE_URL`: how long a node's lease lasts, 0 or 3 to 3600. The node renews it every third of"
            " it; one whose lease ran out is declared dead by another node, which reruns its jobs, and its own exit"
            " keepers end its programs first (see Nodes in docs/operations.md). 0: no lease, no rescue. Ignored with"
            " the embedded PostgreSQL (one node)."
        ),
    )
    shutdown_lease_seconds: Annotated[
        float,
        Field(
            ge=0,
            le=30 * 86400,
            description=(
                "The lease a node keeps after a graceful stop, 0 to 2592000: its running jobs keep running that long"
                " for its return (a planned restart), before another node may declare it dead."
            ),
        ),
    ] = 600.0
    node_api_url: str | None = Field(
        default=None,
        pattern=r"^https?://[^\s/]+(/\S*)?$",
        description=(
            "Where the other nodes reach this node's API (to read the output of an attempt running here)."
            " Unset: `http://HOST:PORT`, with the machine's host name when `HOST` is a wildcard address."
        ),
    )
    job_env_passthrough: tuple[str, ...] = Field(
        default=(),
        description=(
            "Extra environment variable names a job may inherit, as a JSON list:"
            ' `JOB_ENV_PASSTHROUGH=\'["HTTP_PROXY", "HTTPS_PROXY"]\'`.'
        ),
    )
    max_queued_jobs: int = Field(
        default=100_000,
        ge=0,
        le=1_000_000_000,
        description=(
            "Queued jobs (no attempt started yet) the database may hold; past it POST /jobs answers 429. 0: no limit."
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
    outcome_sweep_interval_seconds: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description=(
            "Seconds between sweeps that record, from their exit-status files, attempts of this node still"
            " `running` in the database although nothing watches them any more; above 0, at most 3600."
        ),
    )

    api_token: SecretStr | None = Field(
        default=None,
        min_length=16,
        description=(
            "A bearer token every request but `/health` and `/ready` must carry (`Authorization: Bearer <token>`),"
            " at least 16 characters. Jobs it submits are recorded as submitted by `default`. Unset, with"
            " `API_TOKENS_FILE` unset too: no authentication (loopback only)."
        ),
    )
    api_tokens_file: Path | None = Field(
        default=None,
        description=(
            "A file of several tokens, one `name:token` a line (`#` starts a comment), each token at least 16"
            " characters; the name is recorded on the jobs it submits. Read at start-up and again on `SIGHUP`"
            " (a file that no longer reads keeps the tokens already loaded). Works alongside `API_TOKEN`."
        ),
    )
    allow_unauthenticated: bool = Field(
        default=False,
        description=(
            "`true` lets the service serve a non-loopback `HOST` with no token (something in front of it must"
            " authenticate); otherwise such a start is refused."
        ),
    )
    job_user: str | None = Field(
        default=None,
        min_length=1,
        description=(
            "The user jobs run as when the service runs as root: the exit keeper switches each job to this user"
            " (its group and supplementary groups too) before exec, and a job it cannot switch does not run"
            " (`spawn_failed`). Needs an exit keeper. Unset while root: jobs run as root, with a warning at start."
        ),
    )

    @field_validator("log_level")
    @classmethod
    def _known_log_level(cls, value: str) -> str:
        level = value.upper()
        if level not in logging.getLevelNamesMapping():
            raise ValueError(f"unknown log level {value!r}; use DEBUG, INFO, WARNING or ERROR")
        return level

    @field_validator("node_lease_seconds")
    @classmethod
    def _lease_off_or_long_enough(cls, value: float) -> float:
        if value != 0 and not MIN_LEASE_SECONDS <= value <= MAX_LEASE_SECONDS:
            raise ValueError(
                f"is {value:g} s; use 0 (no lease) or {MIN_LEASE_SECONDS:g} to {MAX_LEASE_SECONDS:g} seconds"
            )
        return value

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
        """RETRY_BACKOFF_BASE_SECONDS, else 1 s."""
        if self.retry_backoff_base_seconds is not None:
            return self.retry_backoff_base_seconds
        return DEFAULT_RETRY_BACKOFF_BASE_SECONDS

    @property
    def programs(self) -> dict[str, Path]:
        """Every program a job may name, `default` first: JOB_SCRIPT_PATH (or the sample job), then the others."""
        return {DEFAULT_PROGRAM_NAME: self.job_script_path or BUNDLED_SAMPLE_JOB, **self.allowed_programs}

    @property
    def advertised_api_url(self) -> str:
        """NODE_API_URL, else this node's HOST and PORT as another node would reach them."""
        if self.node_api_url:
            return self.node_api_url.rstrip("/")
        host = socket.gethostname() if self.host in WILDCARD_HOSTS else self.host
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    @property
    def job_limits(self) -> JobLimits:
        """The limits of a job that asks for none, and the most a job may ask for."""
        return JobLimits(self.job_memory_limit_bytes, self.job_cpu_limit_seconds, self.job_open_files_limit)

    @property
    def child_environment_names(self) -> tuple[str, ...]:
        return DEFAULT_CHILD_ENVIRONMENT + self.job_env_passthrough


# Settings whose value is a secret: a start-up error names them but never shows what was given.
SECRET_SETTINGS = frozenset({"API_TOKEN"})
# `scheme://user:password@`: the password of a URL, masked wherever a URL is shown.
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^/:@\s]*:)[^/@\s]*@")


def mask_url_password(text: str) -> str:
    """Any `scheme://user:password@` in the text with the password replaced by `***` (works on URLs that do not
    parse, unlike SQLAlchemy's redaction)."""
    return _URL_PASSWORD.sub(r"\g<head>***@", text)


def _shown_input(variable: str, value: object) -> str:
    if variable in SECRET_SETTINGS:
        return "a value, hidden"
    return mask_url_password(repr(value))


# pydantic-settings names the field in its message when a value meant as JSON (a list) does not parse.
_SETTINGS_ERROR_FIELD = re.compile(r'field "(?P<name>\w+)"')


def describe_settings_error(error: ValidationError | SettingsError) -> str:
    """One line per bad value, naming the environment variable, for a start-up failure message."""
    if isinstance(error, SettingsError):
        match = _SETTINGS_ERROR_FIELD.search(str(error))
        variable = match.group("name").upper() if match else "settings"
        reason = mask_url_password(str(error.__cause__ or error))
        return f'invalid configuration:\n  {variable}: {reason} (a list is written as JSON, e.g. ["A", "B"])'
    lines = []
    for problem in error.errors():
        variable = "_".join(str(part) for part in problem["loc"][:1]).upper() or "settings"
        lines.append(f"{variable}: {problem['msg']} (got {_shown_input(variable, problem.get('input'))})")
    return "invalid configuration:\n  " + "\n  ".join(lines)
