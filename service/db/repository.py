"""Every query the service makes, one method per intent. Controllers and the supervisor never write SQL."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from service.db.notifications import JOBS_DUE_CHANNEL
from service.domain.status import (
    STATUS_WHEN_ATTEMPT_STARTS,
    STATUSES_WITH_ATTEMPT_IN_FLIGHT,
    AttemptOutcome,
    JobStatus,
    status_after_attempt,
)


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


@dataclass(frozen=True, slots=True)
class ClaimedAttempt:
    """An attempt row just committed as `running` for this node; its process is not started yet."""

    attempt_id: int
    job_id: int
    attempt_number: int
    job_name: str
    program: str
    arguments: list[str]


@dataclass(frozen=True, slots=True)
class AttemptEnding:
    """How a process ended, as the supervisor observed it."""

    outcome: AttemptOutcome
    finished_at: datetime
    exit_code: int | None = None
    signal: int | None = None
    duration_ms: int | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class RecordedOutcome:
    """What recording an ending did to the job."""

    job_id: int
    attempt_number: int
    job_status: JobStatus | None
    """The job's new status; None when the job had already left the in-flight statuses (e.g. cancelled)."""


_JOB_COLUMNS = """
    j.id, j.name, j.program, j.arguments, j.status, j.max_attempts, j.attempts_count,
    j.created_at, j.started_at, j.finished_at, j.exit_code,
    (SELECT a.duration_ms FROM attempts a
      WHERE a.job_id = j.id AND a.duration_ms IS NOT NULL
      ORDER BY a.attempt_number DESC LIMIT 1) AS last_duration_ms
"""

_ATTEMPT_COLUMNS = """
    id, job_id, attempt_number, node_id, pid, process_started_at, outcome, exit_code, signal,
    started_at, finished_at, duration_ms, error
"""


def _job(row: Row[Any]) -> JobRecord:
    mapping = dict(row._mapping)
    mapping["status"] = JobStatus(mapping["status"])
    return JobRecord(**mapping)


def _attempt(row: Row[Any]) -> AttemptRecord:
    mapping = dict(row._mapping)
    mapping["outcome"] = AttemptOutcome(mapping["outcome"])
    return AttemptRecord(**mapping)


class Repository:
    """The one place that knows the SQL. Each method is one transaction, committed before it returns."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    # --- the API's side -------------------------------------------------------------------------------------

    async def submit_job(self, *, name: str, program: str, arguments: Sequence[str], max_attempts: int) -> JobRecord:
        """Insert a queued job, due now, and commit it."""
        async with self._engine.begin() as connection:
            result = await connection.execute(
                text(f"""
                    WITH j AS (
                        INSERT INTO jobs (name, program, arguments, status, max_attempts)
                        VALUES (:name, :program, :arguments, :status, :max_attempts)
                        RETURNING *
                    )
                    SELECT {_JOB_COLUMNS} FROM j
                """),
                {
                    "name": name,
                    "program": program,
                    "arguments": list(arguments),
                    "status": JobStatus.QUEUED.value,
                    "max_attempts": max_attempts,
                },
            )
            job = _job(result.one())
            # Delivered at commit, to every node's listener: the other nodes can claim it at once.
            await connection.execute(text("SELECT pg_notify(:channel, '')"), {"channel": JOBS_DUE_CHANNEL})
            return job

    async def find_job(self, job_id: int) -> JobRecord | None:
        async with self._engine.connect() as connection:
            result = await connection.execute(
                text(f"SELECT {_JOB_COLUMNS} FROM jobs j WHERE j.id = :id"), {"id": job_id}
            )
            row = result.one_or_none()
            return None if row is None else _job(row)

    async def list_jobs(self, *, statuses: Collection[JobStatus], limit: int) -> list[JobRecord]:
        """The newest jobs first, optionally only those with one of `statuses`."""
        condition = "WHERE j.status = ANY(:statuses)" if statuses else ""
        async with self._engine.connect() as connection:
            result = await connection.execute(
                text(f"SELECT {_JOB_COLUMNS} FROM jobs j {condition} ORDER BY j.id DESC LIMIT :limit"),
                {"statuses": [status.value for status in statuses], "limit": limit},
            )
            return [_job(row) for row in result]

    async def list_attempts(self, job_id: int) -> list[AttemptRecord]:
        async with self._engine.connect() as connection:
            result = await connection.execute(
                text(f"SELECT {_ATTEMPT_COLUMNS} FROM attempts WHERE job_id = :job_id ORDER BY attempt_number"),
                {"job_id": job_id},
            )
            return [_attempt(row) for row in result]

    # --- the supervisor's side ------------------------------------------------------------------------------

    async def claim_due_jobs(self, *, node_id: str, limit: int) -> list[ClaimedAttempt]:
        """Take up to `limit` due jobs for this node and commit a `running` attempt row for each.

        SKIP LOCKED lets several nodes claim at once without ever taking the same job.
        """
        if limit <= 0:
            return []
        status_when_started = " ".join(
            f"WHEN '{before.value}' THEN '{after.value}'" for before, after in STATUS_WHEN_ATTEMPT_STARTS.items()
        )
        async with self._engine.begin() as connection:
            result = await connection.execute(
                text(f"""
                    WITH due AS (
                        SELECT id FROM jobs
                        WHERE next_attempt_at <= now() AND status = ANY(:claimable)
                        ORDER BY next_attempt_at, id
                        LIMIT :limit
                        FOR UPDATE SKIP LOCKED
                    ), claimed AS (
                        UPDATE jobs j
                        SET status = CASE j.status {status_when_started} END,
                            attempts_count = j.attempts_count + 1,
                            started_at = coalesce(j.started_at, now()),
                            next_attempt_at = NULL
                        FROM due
                        WHERE j.id = due.id
                        RETURNING j.id, j.name, j.program, j.arguments, j.attempts_count
                    ), inserted AS (
                        INSERT INTO attempts (job_id, attempt_number, node_id, outcome)
                        SELECT id, attempts_count, :node_id, :running FROM claimed
                        RETURNING id, job_id, attempt_number
                    )
                    SELECT i.id AS attempt_id, i.job_id, i.attempt_number,
                           c.name AS job_name, c.program, c.arguments
                    FROM inserted i JOIN claimed c ON c.id = i.job_id
                    ORDER BY i.job_id
                """),
                {
                    "claimable": [status.value for status in STATUS_WHEN_ATTEMPT_STARTS],
                    "limit": limit,
                    "node_id": node_id,
                    "running": AttemptOutcome.RUNNING.value,
                },
            )
            return [ClaimedAttempt(**row._mapping) for row in result]

    async def record_process_started(
        self, *, attempt_id: int, pid: int, process_started_at: datetime, started_at: datetime
    ) -> None:
        """Remember which OS process runs the attempt (pid and the OS's start time together are its identity)."""
        async with self._engine.begin() as connection:
            await connection.execute(
                text("""
                    UPDATE attempts SET pid = :pid, process_started_at = :process_started_at,
                                        started_at = :started_at
                    WHERE id = :attempt_id AND outcome = :running
                """),
                {
                    "attempt_id": attempt_id,
                    "pid": pid,
                    "process_started_at": process_started_at,
                    "started_at": started_at,
                    "running": AttemptOutcome.RUNNING.value,
                },
            )

    async def record_outcome(
        self, *, attempt_id: int, ending: AttemptEnding, retry_backoff_seconds: float
    ) -> RecordedOutcome | None:
        """Write how the attempt ended and move its job on, in one transaction.

        Fenced: nothing is written unless the attempt is still `running`, so a second writer for the same
        attempt (a late watcher, a reconciler) finds nothing to do and gets None.
        """
        async with self._engine.begin() as connection:
            finished = await connection.execute(
                text("""
                    UPDATE attempts
                    SET outcome = :outcome, exit_code = :exit_code, signal = :signal,
                        finished_at = CAST(:finished_at AS timestamptz),
                        duration_ms = coalesce(CAST(:duration_ms AS bigint), greatest(0,
                            (extract(epoch FROM CAST(:finished_at AS timestamptz) - started_at) * 1000)::bigint)),
                        error = :error
                    WHERE id = :attempt_id AND outcome = :running
                    RETURNING job_id, attempt_number
                """),
                {
                    "attempt_id": attempt_id,
                    "outcome": ending.outcome.value,
                    "exit_code": ending.exit_code,
                    "signal": ending.signal,
                    "finished_at": ending.finished_at,
                    "duration_ms": ending.duration_ms,
                    "error": ending.error,
                    "running": AttemptOutcome.RUNNING.value,
                },
            )
            attempt_row = finished.one_or_none()
            if attempt_row is None:
                return None
            job_id, attempt_number = attempt_row
            return await self._apply_outcome_to_job(
                connection, job_id, attempt_number, ending, retry_backoff_seconds=retry_backoff_seconds
            )

    async def _apply_outcome_to_job(
        self,
        connection: AsyncConnection,
        job_id: int,
        attempt_number: int,
        ending: AttemptEnding,
        *,
        retry_backoff_seconds: float,
    ) -> RecordedOutcome:
        job = (
            await connection.execute(
                text("SELECT status, max_attempts FROM jobs WHERE id = :job_id FOR UPDATE"),
                {"job_id": job_id},
            )
        ).one()
        current = JobStatus(job.status)
        if current not in STATUSES_WITH_ATTEMPT_IN_FLIGHT:
            return RecordedOutcome(job_id=job_id, attempt_number=attempt_number, job_status=None)
        new_status = status_after_attempt(current, ending.outcome, attempt_number, job.max_attempts)
        await connection.execute(
            text("""
                UPDATE jobs
                SET status = :status,
                    next_attempt_at = CASE WHEN CAST(:is_final AS boolean) THEN NULL
                                           ELSE now() + make_interval(secs => :backoff) END,
                    finished_at = CASE WHEN CAST(:is_final AS boolean) THEN CAST(:finished_at AS timestamptz) END,
                    exit_code = CASE WHEN CAST(:is_final AS boolean) THEN CAST(:exit_code AS integer) END
                WHERE id = :job_id
            """),
            {
                "status": new_status.value,
                "is_final": new_status.is_final,
                "backoff": retry_backoff_seconds,
                "finished_at": ending.finished_at,
                "exit_code": ending.exit_code,
                "job_id": job_id,
            },
        )
        return RecordedOutcome(job_id=job_id, attempt_number=attempt_number, job_status=new_status)

    async def running_attempts_on_node(self, node_id: str) -> list[AttemptRecord]:
        """Attempts that the database says are running on `node_id` (reconciliation after a restart)."""
        async with self._engine.connect() as connection:
            result = await connection.execute(
                text(f"""
                    SELECT {_ATTEMPT_COLUMNS} FROM attempts
                    WHERE node_id = :node_id AND outcome = :running ORDER BY id
                """),
                {"node_id": node_id, "running": AttemptOutcome.RUNNING.value},
            )
            return [_attempt(row) for row in result]

    async def seconds_until_next_due_job(self) -> float | None:
        """How long until the earliest waiting job is due (0 if one is due now); None when nothing waits."""
        async with self._engine.connect() as connection:
            result = await connection.execute(
                text("""
                    SELECT greatest(0, extract(epoch FROM min(next_attempt_at) - now()))::float8
                    FROM jobs WHERE next_attempt_at IS NOT NULL
                """)
            )
            value = result.scalar_one()
            return None if value is None else float(value)
