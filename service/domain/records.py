"""The records the layers hand each other: what the stores return and take, apart from the code that stores them."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from service.domain.limits import NO_LIMITS, JobLimits
from service.domain.programs import DEFAULT_PROGRAM_NAME
from service.domain.status import AttemptOutcome, JobStatus


@dataclass(frozen=True, slots=True)
class JobRecord:
    id: int
    name: str
    program: str
    arguments: list[str]
    status: JobStatus
    max_attempts: int
    attempts_count: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    exit_code: int | None
    last_duration_ms: int | None
    program_name: str = DEFAULT_PROGRAM_NAME
    priority: int = 0
    run_at: datetime | None = None
    timeout_seconds: float | None = None
    cancel_requested_at: datetime | None = None
    submitted_by: str | None = None
    """The name of the API token that submitted the job; None without authentication."""
    memory_limit_bytes: int | None = None
    cpu_limit_seconds: int | None = None
    open_files_limit: int | None = None

    @property
    def limits(self) -> JobLimits:
        return JobLimits(self.memory_limit_bytes, self.cpu_limit_seconds, self.open_files_limit)


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    id: int
    job_id: int
    attempt_number: int
    node_id: str
    pid: int | None
    process_started_at: datetime | None
    outcome: AttemptOutcome
    exit_code: int | None
    signal: int | None
    started_at: datetime
    finished_at: datetime | None
    duration_ms: int | None
    error: str | None
    user_cpu_ms: int | None = None
    system_cpu_ms: int | None = None
    max_rss_kb: int | None = None
    stdout_bytes: int | None = None
    stderr_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class NewJob:
    """What POST /jobs asks for, with the defaults applied and the program resolved to its path."""

    name: str
    program: str
    arguments: Sequence[str]
    max_attempts: int
    program_name: str = DEFAULT_PROGRAM_NAME
    priority: int = 0
    run_at: datetime | None = None
    """Not before then; None (or a time already past) means as soon as a slot is free."""
    timeout_seconds: float | None = None
    submitted_by: str | None = None
    limits: JobLimits = NO_LIMITS


@dataclass(frozen=True, slots=True)
class IdempotentSubmission:
    job: JobRecord
    created: bool
    """False: the key was used before, and `job` is the job it created then."""
    same_request: bool
    """Whether the earlier request with this key had the same fingerprint (always True when `created`)."""


class CancelEffect(StrEnum):
    CANCELLED = "cancelled"
    """It was waiting (queued, or between attempts): it is cancelled now."""
    REQUESTED = "requested"
    """An attempt runs: the node running it will end it, and the job becomes cancelled then."""
    ALREADY_FINAL = "already_final"
    """Completed, crashed or cancelled already: nothing to cancel."""


@dataclass(frozen=True, slots=True)
class CancelResult:
    job: JobRecord
    effect: CancelEffect


@dataclass(frozen=True, slots=True)
class ReopenResult:
    job: JobRecord
    reopened: bool
    """False: the job's status may not be run again (only crashed and cancelled jobs may)."""


@dataclass(frozen=True, slots=True)
class JobFilter:
    """GET /jobs: which jobs, and where the page starts (keyset paging on the id, newest first)."""

    statuses: Collection[JobStatus] = ()
    name_prefix: str | None = None
    program_name: str | None = None
    created_after: datetime | None = None
    """Inclusive."""
    created_before: datetime | None = None
    """Exclusive."""
    before_id: int | None = None
    """Only jobs older than this one: the last job of the previous page."""


@dataclass(frozen=True, slots=True)
class ClaimedAttempt:
    """An attempt row just committed as `running` for this node; its process is not started yet."""

    attempt_id: int
    job_id: int
    attempt_number: int
    job_name: str
    program: str
    arguments: list[str]
    timeout_seconds: float | None = None
    program_name: str = DEFAULT_PROGRAM_NAME
    due_at: datetime | None = None
    """When the job became due for this attempt: its submission (or runAt), or the end of its retry backoff."""
    memory_limit_bytes: int | None = None
    cpu_limit_seconds: int | None = None
    open_files_limit: int | None = None

    @property
    def limits(self) -> JobLimits:
        return JobLimits(self.memory_limit_bytes, self.cpu_limit_seconds, self.open_files_limit)


@dataclass(frozen=True, slots=True)
class RunningAttempt:
    """An attempt the database says runs on a node, with what the supervisor must enforce on it."""

    attempt: AttemptRecord
    timeout_seconds: float | None
    cancel_requested: bool
    limits: JobLimits = NO_LIMITS
    """Set on its process when it started; needed to say which one an ending hit."""


@dataclass(frozen=True, slots=True)
class AttemptEnding:
    """How a process ended, as the supervisor observed it."""

    outcome: AttemptOutcome
    finished_at: datetime
    exit_code: int | None = None
    signal: int | None = None
    duration_ms: int | None = None
    error: str | None = None
    user_cpu_ms: int | None = None
    system_cpu_ms: int | None = None
    max_rss_kb: int | None = None
    stdout_bytes: int | None = None
    stderr_bytes: int | None = None
    stdout_tail: str | None = None
    stderr_tail: str | None = None


@dataclass(frozen=True, slots=True)
class RecordedOutcome:
    """What recording an ending did to the job."""

    job_id: int
    attempt_number: int
    job_status: JobStatus | None
    """The job's new status; None when the job had already left the in-flight statuses (e.g. cancelled)."""
    retry_in_seconds: float | None = None
    """When the job was retried: how long until its next attempt is due (the jittered backoff)."""


@dataclass(frozen=True, slots=True)
class ProcessStart:
    """Which OS process runs an attempt, and when the attempt started (its program is let go after this)."""

    attempt_id: int
    pid: int
    process_started_at: datetime
    """The OS's start time of `pid`: with it, the pid names this process even after pid reuse."""
    started_at: datetime


@dataclass(frozen=True, slots=True)
class MinuteActivity:
    """One minute of recent activity: the jobs submitted in it, and the attempts that ended in it by outcome."""

    minute: datetime
    submitted: int
    ended: Mapping[AttemptOutcome, int]
