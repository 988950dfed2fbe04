"""Settings of what a job may be: its programs, attempts, retries, timeouts, limits, environment and user."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings

from service.domain.limits import (
    MAX_CPU_LIMIT_SECONDS,
    MAX_MEMORY_LIMIT_BYTES,
    MAX_OPEN_FILES_LIMIT,
    MAX_TIMEOUT_SECONDS,
    MIN_MEMORY_LIMIT_BYTES,
    JobLimits,
)
from service.domain.programs import DEFAULT_PROGRAM_NAME, PROGRAM_NAME_PATTERN
from service.runner.program import BUNDLED_SAMPLE_JOB

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


class JobSettings(BaseSettings):
    """What a job may run and ask for, and what it gets when it does not say."""

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
    allowed_programs: dict[str, Path] = Field(
        default_factory=dict,
        description=(
            'More programs a job may name (`"program": "report"`), as a JSON object name → path:'
            ' `ALLOWED_PROGRAMS=\'{"report": "/opt/jobs/report.sh"}\'`. Each path must be an existing file'
            " (checked at start-up); names are letters, digits, `.`, `_`, `-`; `default` is `JOB_SCRIPT_PATH`'s."
            " A client only ever gives a name."
        ),
    )
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
    job_user: str | None = Field(
        default=None,
        min_length=1,
        description=(
            "The user jobs run as when the service runs as root: the exit keeper switches each job to this user"
            " (its group and supplementary groups too) before exec, and a job it cannot switch does not run"
            " (`spawn_failed`). Needs an exit keeper. Unset while root: jobs run as root, with a warning at start."
        ),
    )

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
    def job_limits(self) -> JobLimits:
        """The limits of a job that asks for none, and the most a job may ask for."""
        return JobLimits(self.job_memory_limit_bytes, self.job_cpu_limit_seconds, self.job_open_files_limit)

    @property
    def child_environment_names(self) -> tuple[str, ...]:
        return DEFAULT_CHILD_ENVIRONMENT + self.job_env_passthrough
