"""Request and response shapes. camelCase lives here and only here; the database says snake_case."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, TypedDict

import msgspec

from service.db.repository import AttemptRecord, JobRecord
from service.domain.identifiers import format_job_id
from service.domain.status import AttemptOutcome, JobStatus

MAX_JOB_NAME_LENGTH = 200
MAX_ARGUMENTS = 256
MAX_ARGUMENT_LENGTH = 4096

# No C0 control characters and no DEL in a name: it is shown in logs, terminals and psql.
JobName = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_JOB_NAME_LENGTH, pattern=r"^[^\x00-\x1f\x7f]+$")]
# Arguments reach execve(), where a NUL would silently cut the string.
Argument = Annotated[str, msgspec.Meta(max_length=MAX_ARGUMENT_LENGTH, pattern=r"^[^\x00]*$")]


class JobCreate(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    """Body of POST /jobs."""

    job_name: JobName
    arguments: Annotated[list[Argument], msgspec.Meta(max_length=MAX_ARGUMENTS)] = msgspec.field(default_factory=list)


class AttemptRead(msgspec.Struct, rename="camel"):
    attempt: int
    node_id: str
    pid: int | None
    outcome: AttemptOutcome
    exit_code: int | None
    signal: int | None
    started_at: datetime
    finished_at: datetime | None
    duration: int | None
    """Milliseconds."""
    error: str | None

    @classmethod
    def from_record(cls, record: AttemptRecord) -> AttemptRead:
        return cls(
            attempt=record.attempt_number,
            node_id=record.node_id,
            pid=record.pid,
            outcome=record.outcome,
            exit_code=record.exit_code,
            signal=record.signal,
            started_at=record.started_at,
            finished_at=record.finished_at,
            duration=record.duration_ms,
            error=record.error,
        )


class JobRead(msgspec.Struct, rename="camel"):
    """A job as the Node.js service showed it, plus the fields a user of a persistent service expects."""

    job_id: str
    job_name: str
    program: str
    args: list[str]
    status: JobStatus
    attempts: int
    retries: int
    max_attempts: int
    exit_code: int | None
    duration: int | None
    """Milliseconds of the last finished attempt."""
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def from_record(cls, record: JobRecord) -> JobRead:
        return cls(**_job_fields(record))


class JobDetail(JobRead, rename="camel"):
    """GET /jobs/{jobId}: the job and every attempt of it, oldest first."""

    attempt_history: list[AttemptRead] = msgspec.field(default_factory=list)

    @classmethod
    def from_records(cls, record: JobRecord, attempts: list[AttemptRecord]) -> JobDetail:
        return cls(**_job_fields(record), attempt_history=[AttemptRead.from_record(a) for a in attempts])


class _JobFields(TypedDict):
    job_id: str
    job_name: str
    program: str
    args: list[str]
    status: JobStatus
    attempts: int
    retries: int
    max_attempts: int
    exit_code: int | None
    duration: int | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


def _job_fields(record: JobRecord) -> _JobFields:
    return {
        "job_id": format_job_id(record.id),
        "job_name": record.name,
        "program": record.program,
        "args": record.arguments,
        "status": record.status,
        "attempts": record.attempts_count,
        "retries": max(0, record.attempts_count - 1),
        "max_attempts": record.max_attempts,
        "exit_code": record.exit_code,
        "duration": record.last_duration_ms,
        "created_at": record.created_at,
        "started_at": record.started_at,
        "finished_at": record.finished_at,
    }


class PatternRead(msgspec.Struct, rename="camel"):
    pattern: str
    match_count: int
    success_rate: float
    difference_from_average: str


class StatsRead(msgspec.Struct, rename="camel"):
    total_jobs: int
    total_attempts: int
    """Finished attempts: the population every rate here is computed over."""
    overall_success_rate: float
    patterns: list[PatternRead]


class HealthRead(msgspec.Struct, rename="camel"):
    status: str
    node_id: str
    database: str
    running_jobs: int
