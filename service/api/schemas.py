"""Request and response shapes. camelCase lives here and only here; the database says snake_case."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Self

import msgspec

from service.domain.identifiers import format_job_id
from service.domain.limits import (
    MAX_CPU_LIMIT_SECONDS,
    MAX_MEMORY_LIMIT_BYTES,
    MAX_OPEN_FILES_LIMIT,
    MAX_TIMEOUT_SECONDS,
    MIN_MEMORY_LIMIT_BYTES,
)
from service.domain.programs import PROGRAM_NAME_PATTERN
from service.domain.records import AttemptRecord, JobRecord
from service.domain.status import AttemptOutcome, JobStatus

MAX_JOB_NAME_LENGTH = 200
MAX_ARGUMENTS = 256
MAX_ARGUMENT_LENGTH = 4096
PRIORITY_LIMIT = 1000
MAX_ATTEMPTS_LIMIT = 20

# No C0 or C1 control characters, no DEL and no bidirectional override or isolate in a name: it is shown in logs,
# terminals and psql, where those would hide or disguise text.
JobName = Annotated[
    str,
    msgspec.Meta(
        min_length=1, max_length=MAX_JOB_NAME_LENGTH, pattern=r"^[^\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]+$"
    ),
]
# Arguments reach execve(), where a NUL would silently cut the string; C1 controls and bidirectional formatting
# would disguise them in logs. Tabs and newlines are fine.
Argument = Annotated[
    str, msgspec.Meta(max_length=MAX_ARGUMENT_LENGTH, pattern=r"^[^\x00\x80-\x9f\u202a-\u202e\u2066-\u2069]*$")
]


class JobCreate(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    """Body of POST /jobs."""

    job_name: JobName
    arguments: Annotated[list[Argument], msgspec.Meta(max_length=MAX_ARGUMENTS)] = msgspec.field(default_factory=list)
    program: Annotated[str, msgspec.Meta(pattern=PROGRAM_NAME_PATTERN)] | None = None
    """A name from ALLOWED_PROGRAMS, or `default` (JOB_SCRIPT_PATH), which is what leaving it out means."""
    priority: Annotated[int, msgspec.Meta(ge=-PRIORITY_LIMIT, le=PRIORITY_LIMIT)] = 0
    """Higher runs first; FIFO among equals."""
    run_at: Annotated[datetime, msgspec.Meta(tz=True)] | None = None
    """Not started before this time (ISO 8601 with an offset); a time already past means now."""
    timeout_seconds: Annotated[float, msgspec.Meta(gt=0, le=MAX_TIMEOUT_SECONDS)] | None = None
    """An attempt running longer is ended and recorded as timed_out; DEFAULT_TIMEOUT_SECONDS when left out."""
    max_attempts: Annotated[int, msgspec.Meta(ge=1, le=MAX_ATTEMPTS_LIMIT)] | None = None
    """Attempts allowed in all; MAX_ATTEMPTS when left out."""
    memory_limit_bytes: Annotated[int, msgspec.Meta(ge=MIN_MEMORY_LIMIT_BYTES, le=MAX_MEMORY_LIMIT_BYTES)] | None = None
    """At most JOB_MEMORY_LIMIT_BYTES, which is what leaving it out means (RLIMIT_DATA of each attempt)."""
    cpu_limit_seconds: Annotated[int, msgspec.Meta(ge=1, le=MAX_CPU_LIMIT_SECONDS)] | None = None
    """At most JOB_CPU_LIMIT_SECONDS, which is what leaving it out means (RLIMIT_CPU of each attempt)."""
    open_files_limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_OPEN_FILES_LIMIT)] | None = None
    """At most JOB_OPEN_FILES_LIMIT, which is what leaving it out means (RLIMIT_NOFILE of each attempt)."""


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
    user_cpu_ms: int | None = None
    """CPU time in user mode (rusage of the reaped program); null where the platform does not report it."""
    system_cpu_ms: int | None = None
    max_rss_kb: int | None = None
    """Peak resident memory, KiB."""
    stdout_bytes: int | None = None
    """Bytes the program wrote to stdout, kept or not (the file keeps at most OUTPUT_LIMIT_BYTES of them)."""
    stderr_bytes: int | None = None

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
            user_cpu_ms=record.user_cpu_ms,
            system_cpu_ms=record.system_cpu_ms,
            max_rss_kb=record.max_rss_kb,
            stdout_bytes=record.stdout_bytes,
            stderr_bytes=record.stderr_bytes,
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
    program_name: str
    """The name the program was chosen by (`program` is its path)."""
    priority: int
    run_at: datetime | None
    timeout_seconds: float | None
    cancel_requested_at: datetime | None
    """Set when a cancel was asked for while an attempt ran; the job is `cancelled` once that attempt has ended."""
    submitted_by: str | None = None
    """The name of the API token that submitted the job; null when the service runs without authentication."""
    memory_limit_bytes: int | None = None
    """What each attempt may allocate (null: no limit), as set when the job was accepted."""
    cpu_limit_seconds: int | None = None
    open_files_limit: int | None = None

    @classmethod
    def from_record(cls, record: JobRecord) -> Self:
        return cls(
            job_id=format_job_id(record.id),
            job_name=record.name,
            program=record.program,
            args=record.arguments,
            status=record.status,
            attempts=record.attempts_count,
            retries=max(0, record.attempts_count - 1),
            max_attempts=record.max_attempts,
            exit_code=record.exit_code,
            duration=record.last_duration_ms,
            created_at=record.created_at,
            started_at=record.started_at,
            finished_at=record.finished_at,
            program_name=record.program_name,
            priority=record.priority,
            run_at=record.run_at,
            timeout_seconds=record.timeout_seconds,
            cancel_requested_at=record.cancel_requested_at,
            submitted_by=record.submitted_by,
            memory_limit_bytes=record.memory_limit_bytes,
            cpu_limit_seconds=record.cpu_limit_seconds,
            open_files_limit=record.open_files_limit,
        )


class JobDetail(JobRead, rename="camel"):
    """GET /jobs/{jobId}: the job and every attempt of it, oldest first."""

    attempt_history: list[AttemptRead] = msgspec.field(default_factory=list)

    @classmethod
    def from_records(cls, record: JobRecord, attempts: list[AttemptRecord]) -> JobDetail:
        return msgspec.structs.replace(
            cls.from_record(record), attempt_history=[AttemptRead.from_record(attempt) for attempt in attempts]
        )


class IntervalRead(msgspec.Struct, rename="camel"):
    low: float
    high: float


class PatternRead(msgspec.Struct, rename="camel"):
    """One pattern: the Node.js contract's four fields first, then the evidence behind them."""

    pattern: str
    match_count: int
    success_rate: float
    """Successes among the matching finished attempts; 0.0 when none matches (`note` then says so)."""
    difference_from_average: str
    id: str
    success_count: int
    success_rate_others: float | None
    """The same rate over the finished attempts that do not match; null when every attempt matches."""
    confidence_interval: IntervalRead | None
    """95 % Wilson score interval of `successRate`; null when nothing matches."""
    p_value: float | None
    """Chance of a gap at least this large if matching and other attempts succeeded equally often."""
    test: str | None
    """How `pValue` was computed: two-proportion z-test, or Fisher's exact test for small counts."""
    adjusted_p_value: float | None
    """`pValue` after the Benjamini-Hochberg correction over every pattern tested."""
    significant: bool
    """`adjustedPValue` <= 0.05."""
    note: str | None


class GroupRead(msgspec.Struct, rename="camel"):
    """Finished attempts sharing one value of a breakdown."""

    value: str | int | None
    attempts: int
    successes: int
    success_rate: float


class OutcomeRead(msgspec.Struct, rename="camel"):
    outcome: str
    exit_code: int | None
    signal: int | None
    attempts: int
    share: float
    """Of all finished attempts."""


class BreakdownsRead(msgspec.Struct, rename="camel"):
    outcomes: list[OutcomeRead]
    name_families: list[GroupRead]
    programs: list[GroupRead]
    nodes: list[GroupRead]
    hours_of_day: list[GroupRead]
    duration_buckets: list[GroupRead]
    attempt_numbers: list[GroupRead]


class WhatIfRead(msgspec.Struct, rename="camel"):
    max_attempts: int
    job_success_rate: float | None
    extrapolated: bool
    """True when the history has no attempt with some number up to `maxAttempts` (the last known rate stood in)."""


class StatsFiltersRead(msgspec.Struct, rename="camel"):
    since: datetime | None
    until: datetime | None
    program: str | None
    name_prefix: str | None


class FindingRead(msgspec.Struct, rename="camel"):
    """A group of finished attempts against the others: a pattern's fields first, then what ranks and explains it."""

    pattern: str
    match_count: int
    success_rate: float
    difference_from_average: str
    id: str
    success_count: int
    success_rate_others: float | None
    confidence_interval: IntervalRead | None
    p_value: float | None
    test: str | None
    adjusted_p_value: float | None
    """Benjamini-Hochberg over every pattern, value and recent window tested in this answer."""
    significant: bool
    """`adjustedPValue` <= 0.05 and not `explainedBy` another finding."""
    kind: str
    """pattern, value (one value of `dimension`) or change (the recent window against the time before)."""
    dimension: str | None
    value: str | int | None
    others_count: int
    difference_points: float
    """successRate - successRateOthers, in percentage points."""
    difference_interval: IntervalRead | None
    """Newcombe's 95 % interval of that difference, in points; the end nearest zero ranks the findings."""
    same_attempts: list[str]
    """Other findings selecting the same attempts (or exactly the others), merged into this one."""
    explained_by: str | None
    """The stronger finding within whose strata this one's effect vanishes."""
    stratified_p_value: float | None
    """Cochran-Mantel-Haenszel p-value within a stronger finding's strata (the largest, or the one that explains)."""


class StatsRead(msgspec.Struct, rename="camel"):
    total_jobs: int
    total_attempts: int
    """Finished attempts: the population every per-attempt rate here is computed over."""
    overall_success_rate: float
    """Per finished attempt."""
    job_success_rate: float
    """Per decided job (succeeded, or failed its last allowed attempt), after its retries."""
    decided_jobs: int
    retry_rescue_rate: float
    """Of the decided jobs whose first attempt failed and that were retried, the share a retry made succeed."""
    rescued_jobs: int
    retried_failures: int
    patterns: list[PatternRead]
    breakdowns: BreakdownsRead
    what_if: list[WhatIfRead]
    flaky_names: list[GroupRead]
    filters: StatsFiltersRead
    computed_from: str
    """How the counts were made: `rollup` (kept up to date as attempts finish), `rollup-minus-outside` (a window
    that holds most attempts: the rollup less those outside it), `rollup-by-family` (a name prefix that is a
    union of name families), or `scan` (any other window or prefix, counted from its attempts)."""
    findings: list[FindingRead] = msgspec.field(default_factory=list)
    """Patterns, values and recent windows that go with success or failure, merged and strongest first."""
    summary: list[str] = msgspec.field(default_factory=list)
    """The significant findings as sentences, in order: what to read first."""
    hypotheses_tested: int = 0
    """Every pattern, value and recent window tested (the Benjamini-Hochberg family)."""
    recent_since: datetime | None = None
    """Where the recent window of the change findings starts."""
    overlap_attempts: int = 0
    overlap_sampled: bool = False
    """The overlaps of findings were counted over a sample of `overlapAttempts` attempts, not all of them."""
    overlap_based_on_attempts: int = 0
    """Finished attempts there were when the overlaps were counted (a sample is reused until they grow by 1 %)."""
    value_attempts: int = 0
    """Finished attempts the value findings were counted over: all of them, or a sample of a large window's."""
    value_sampled: bool = False
    """The value findings of this scan come from a sample of `valueAttempts` of the window's attempts."""


class HealthRead(msgspec.Struct, rename="camel"):
    status: str
    node_id: str
    database: str
    running_jobs: int
    reason: str | None = None
    """Why the status is not `ok`: what the database probe ran into."""


class ReadyRead(msgspec.Struct, rename="camel"):
    status: str
    """`ready` or `not ready`."""
    node_id: str
    database: str
    """`ok`, `unreachable`, or `schema behind` (a migration is not applied)."""
    claim_loop: str
    """`running` or `stopped`."""
    lease: str = "none"
    """`held`, `lapsed` (this node's programs are being ended, another node may take its jobs), or `none` (the
    node runs without a lease: the embedded database, NODE_LEASE_SECONDS=0)."""
    reason: str | None = None
