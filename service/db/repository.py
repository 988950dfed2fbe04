"""Every query the service makes, one method per intent. Controllers and the supervisor never write SQL."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import asyncpg
from sqlalchemy import Row, exc, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from service.db.coalescing import Coalescer
from service.db.notifications import CANCEL_REQUESTED_CHANNEL, JOBS_DUE_CHANNEL
from service.domain.paths import OutputStream
from service.domain.programs import DEFAULT_PROGRAM_NAME
from service.domain.retry import RetryPolicy
from service.domain.status import (
    STATUS_WHEN_ATTEMPT_STARTS,
    STATUSES_WITH_ATTEMPT_IN_FLIGHT,
    AttemptOutcome,
    IllegalTransitionError,
    JobStatus,
    check_transition,
    status_after_attempt,
    status_when_reopened,
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
    program_name: str = DEFAULT_PROGRAM_NAME
    priority: int = 0
    run_at: datetime | None = None
    timeout_seconds: float | None = None
    cancel_requested_at: datetime | None = None


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


@dataclass(frozen=True, slots=True)
class RunningAttempt:
    """An attempt the database says runs on a node, with what the supervisor must enforce on it."""

    attempt: AttemptRecord
    timeout_seconds: float | None
    cancel_requested: bool


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
class _OutcomeToRecord:
    attempt_id: int
    ending: AttemptEnding
    retry_policy: RetryPolicy


_JOB_COLUMNS = """
    j.id, j.name, j.program, j.arguments, j.status, j.max_attempts, j.attempts_count,
    j.created_at, j.started_at, j.finished_at, j.exit_code,
    (SELECT a.duration_ms FROM attempts a
      WHERE a.job_id = j.id AND a.duration_ms IS NOT NULL
      ORDER BY a.attempt_number DESC LIMIT 1) AS last_duration_ms,
    j.program_name, j.priority, j.run_at, j.timeout_seconds, j.cancel_requested_at
"""

_ATTEMPT_COLUMNS = """
    id, job_id, attempt_number, node_id, pid, process_started_at, outcome, exit_code, signal,
    started_at, finished_at, duration_ms, error, user_cpu_ms, system_cpu_ms, max_rss_kb, stdout_bytes, stderr_bytes
"""


def _job(row: Row[Any]) -> JobRecord:
    return _job_from_mapping(dict(row._mapping))


def _job_from_mapping(mapping: dict[str, Any]) -> JobRecord:
    """A job row, from SQLAlchemy or straight from asyncpg; a pg_notify column riding along is dropped."""
    mapping.pop("pg_notify", None)
    mapping["status"] = JobStatus(mapping["status"])
    return JobRecord(**mapping)


def _attempt(row: Row[Any]) -> AttemptRecord:
    mapping = dict(row._mapping)
    mapping["outcome"] = AttemptOutcome(mapping["outcome"])
    return AttemptRecord(**mapping)


def _as_sqlalchemy_error(error: BaseException) -> BaseException:
    """The SQLAlchemy exception the same failure raises through the engine (callers catch those)."""
    if isinstance(error, OSError | TimeoutError):
        return error
    if isinstance(error, asyncpg.InterfaceError):
        return exc.InterfaceError(None, None, error)
    if isinstance(error, asyncpg.PostgresConnectionError | asyncpg.exceptions.OperatorInterventionError):
        return exc.OperationalError(None, None, error)  # the server went away, or is shutting down
    if isinstance(error, asyncpg.IntegrityConstraintViolationError):
        return exc.IntegrityError(None, None, error)
    return exc.DBAPIError(None, None, error)


def _like_prefix(prefix: str) -> str:
    """A LIKE pattern matching names that start with `prefix` taken literally (its % and _ are not wildcards)."""
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


class Repository:
    """The one place that knows the SQL. Each method is one transaction, committed before it returns."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        # Group commit for the writes made once or more per job: under load, one statement serves many callers.
        self._submissions = Coalescer(self.submit_jobs, name="job submission")
        self._process_starts = Coalescer(self.record_processes_started, name="process start")
        self._outcomes = Coalescer(self._record_outcomes, name="attempt outcome")

    @contextlib.asynccontextmanager
    async def _driver(self) -> AsyncIterator[asyncpg.Connection]:
        """A plain asyncpg connection from the engine's pool, for the per-job hot path.

        SQLAlchemy's layer costs about a millisecond of Python per statement; prepared statements on the driver
        connection cost a fraction of that. Outside `transaction()` each statement commits on its own (atomic
        alone), before its result is returned. Errors come out as SQLAlchemy's, as from every other method.
        """
        async with self._engine.connect() as connection:
            driver: asyncpg.Connection = (await connection.get_raw_connection()).driver_connection
            try:
                yield driver
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as error:
                # SQLAlchemy's reset on return does not know of a transaction begun on the driver: a connection
                # left in one, or broken, must not go back into the pool.
                if driver.is_closed() or driver.is_in_transaction() or not isinstance(error, asyncpg.PostgresError):
                    await connection.invalidate(error)
                raise _as_sqlalchemy_error(error) from error
            except BaseException:  # cancelled, say: the same holds
                if driver.is_closed() or driver.is_in_transaction():
                    await connection.invalidate()
                raise

    # --- the API's side -------------------------------------------------------------------------------------

    async def submit_job(
        self,
        *,
        name: str,
        program: str,
        arguments: Sequence[str],
        max_attempts: int,
        program_name: str = DEFAULT_PROGRAM_NAME,
        priority: int = 0,
        run_at: datetime | None = None,
        timeout_seconds: float | None = None,
    ) -> JobRecord:
        """Insert a queued job, due at `run_at` (or now), and commit it before returning.

        Concurrent submissions share one INSERT and one commit (group commit): see `Coalescer`.
        """
        new_job = NewJob(
            name=name,
            program=program,
            arguments=arguments,
            max_attempts=max_attempts,
            program_name=program_name,
            priority=priority,
            run_at=run_at,
            timeout_seconds=timeout_seconds,
        )
        return await self._submissions(new_job)

    async def submit_jobs(self, new_jobs: Sequence[NewJob]) -> list[JobRecord]:
        """Insert queued jobs in one statement and commit them; the records come back in the order given."""
        if not new_jobs:
            return []
        document = json.dumps(
            [
                {
                    "position": position,
                    "name": job.name,
                    "program": job.program,
                    "program_name": job.program_name,
                    "arguments": list(job.arguments),
                    "max_attempts": job.max_attempts,
                    "priority": job.priority,
                    "run_at": None if job.run_at is None else job.run_at.isoformat(),
                    "timeout_seconds": job.timeout_seconds,
                }
                for position, job in enumerate(new_jobs)
            ]
        )
        async with self._driver() as driver:
            rows = await driver.fetch(
                f"""
                WITH input AS MATERIALIZED (
                    -- Ids drawn here, so that each inserted row can be matched to its place in the input.
                    SELECT nextval(pg_get_serial_sequence('jobs', 'id')) AS id, x.*
                    FROM jsonb_to_recordset($1::jsonb) AS x(
                        position integer, name text, program text, program_name text, arguments text[],
                        max_attempts integer, priority integer, run_at timestamptz, timeout_seconds float8)
                ), j AS (
                    INSERT INTO jobs (id, name, program, program_name, arguments, status, max_attempts, priority,
                                      run_at, timeout_seconds, next_attempt_at)
                    OVERRIDING SYSTEM VALUE
                    SELECT id, name, program, program_name, arguments, $2, max_attempts, priority,
                           run_at, timeout_seconds, greatest(now(), run_at)
                    FROM input ORDER BY position
                    RETURNING *
                )
                SELECT {_JOB_COLUMNS}
                FROM j JOIN input ON input.id = j.id
                -- Delivered at commit, once, to every node's listener: the other nodes can claim the jobs at once.
                CROSS JOIN (SELECT pg_notify($3, '')) AS notified
                ORDER BY input.position
                """,
                document,
                JobStatus.QUEUED.value,
                JOBS_DUE_CHANNEL,
            )
        return [_job_from_mapping(dict(row)) for row in rows]

    async def submit_job_idempotently(
        self, new_job: NewJob, *, idempotency_key: str, fingerprint: str
    ) -> IdempotentSubmission:
        """Insert the job unless `idempotency_key` was used before; then return the job that key created.

        Safe under concurrent requests: the unique index decides, and ON CONFLICT DO NOTHING waits for a competing
        insert of the same key to commit (or roll back) before deciding.
        """
        async with self._engine.begin() as connection:
            job = await self._insert_job(connection, new_job, idempotency_key=idempotency_key, fingerprint=fingerprint)
            if job is not None:
                return IdempotentSubmission(job=job, created=True, same_request=True)
            # A new statement sees the competing insert, committed by now.
            row = (
                await connection.execute(
                    text(f"""
                        SELECT {_JOB_COLUMNS}, j.request_fingerprint
                        FROM jobs j WHERE j.idempotency_key = :key
                    """),
                    {"key": idempotency_key},
                )
            ).one()
            mapping = dict(row._mapping)
            earlier_fingerprint = mapping.pop("request_fingerprint")
            return IdempotentSubmission(
                job=_job_from_mapping(mapping), created=False, same_request=earlier_fingerprint == fingerprint
            )

    async def _insert_job(
        self, connection: AsyncConnection, new_job: NewJob, *, idempotency_key: str | None, fingerprint: str | None
    ) -> JobRecord | None:
        on_conflict = (
            "ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING" if idempotency_key else ""
        )
        result = await connection.execute(
            text(f"""
                WITH j AS (
                    INSERT INTO jobs (name, program, program_name, arguments, status, max_attempts, priority,
                                      run_at, timeout_seconds, next_attempt_at, idempotency_key, request_fingerprint)
                    VALUES (:name, :program, :program_name, :arguments, :status, :max_attempts, :priority,
                            CAST(:run_at AS timestamptz), CAST(:timeout_seconds AS double precision),
                            greatest(now(), CAST(:run_at AS timestamptz)), :idempotency_key, :fingerprint)
                    {on_conflict}
                    RETURNING *
                )
                -- The notice goes with the inserted row only (none on a conflict), delivered at commit to every
                -- node's listener: the other nodes can claim the job at once.
                SELECT {_JOB_COLUMNS}, pg_notify(:channel, '') FROM j
            """),
            {
                "name": new_job.name,
                "program": new_job.program,
                "program_name": new_job.program_name,
                "arguments": list(new_job.arguments),
                "status": JobStatus.QUEUED.value,
                "max_attempts": new_job.max_attempts,
                "priority": new_job.priority,
                "run_at": new_job.run_at,
                "timeout_seconds": new_job.timeout_seconds,
                "idempotency_key": idempotency_key,
                "fingerprint": fingerprint,
                "channel": JOBS_DUE_CHANNEL,
            },
        )
        row = result.one_or_none()
        if row is None:
            return None
        return _job(row)

    async def find_job(self, job_id: int) -> JobRecord | None:
        async with self._engine.connect() as connection:
            return await self._find_job(connection, job_id)

    async def _find_job(self, connection: AsyncConnection, job_id: int) -> JobRecord | None:
        result = await connection.execute(text(f"SELECT {_JOB_COLUMNS} FROM jobs j WHERE j.id = :id"), {"id": job_id})
        row = result.one_or_none()
        return None if row is None else _job(row)

    async def list_jobs(
        self, *, statuses: Collection[JobStatus] = (), limit: int, job_filter: JobFilter | None = None
    ) -> list[JobRecord]:
        """The newest jobs first (by id), at most `limit`, filtered; a page of keyset paging.

        Each page is an index scan that stops after `limit` rows: the primary key, (status, id) or
        (program_name, id), newest first. Several statuses are one such scan each, merged: the cost of a page does
        not grow with the table.
        """
        chosen = job_filter or JobFilter()
        wanted_statuses = list(dict.fromkeys([*statuses, *chosen.statuses]))
        conditions = []
        parameters: dict[str, Any] = {"limit": limit}
        if chosen.name_prefix:
            conditions.append("j.name LIKE :name_pattern ESCAPE '\\'")
            parameters["name_pattern"] = _like_prefix(chosen.name_prefix)
        if chosen.program_name is not None:
            conditions.append("j.program_name = :program_name")
            parameters["program_name"] = chosen.program_name
        if chosen.created_after is not None:
            conditions.append("j.created_at >= :created_after")
            parameters["created_after"] = chosen.created_after
        if chosen.created_before is not None:
            conditions.append("j.created_at < :created_before")
            parameters["created_before"] = chosen.created_before
        if chosen.before_id is not None:
            conditions.append("j.id < :before_id")
            parameters["before_id"] = chosen.before_id
        if wanted_statuses:
            branches = []
            for index, status in enumerate(wanted_statuses):
                parameters[f"status_{index}"] = status.value
                where = " AND ".join([f"j.status = :status_{index}", *conditions])
                branches.append(f"(SELECT * FROM jobs j WHERE {where} ORDER BY j.id DESC LIMIT :limit)")
            source = f"({' UNION ALL '.join(branches)}) AS j"
            where_clause = ""
        else:
            source = "jobs j"
            where_clause = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        async with self._engine.connect() as connection:
            result = await connection.execute(
                text(f"SELECT {_JOB_COLUMNS} FROM {source} {where_clause} ORDER BY j.id DESC LIMIT :limit"),
                parameters,
            )
            return [_job(row) for row in result]

    async def list_attempts(self, job_id: int) -> list[AttemptRecord]:
        async with self._engine.connect() as connection:
            result = await connection.execute(
                text(f"SELECT {_ATTEMPT_COLUMNS} FROM attempts WHERE job_id = :job_id ORDER BY attempt_number"),
                {"job_id": job_id},
            )
            return [_attempt(row) for row in result]

    async def find_attempt(self, job_id: int, attempt_number: int) -> AttemptRecord | None:
        async with self._engine.connect() as connection:
            result = await connection.execute(
                text(f"SELECT {_ATTEMPT_COLUMNS} FROM attempts WHERE job_id = :job_id AND attempt_number = :number"),
                {"job_id": job_id, "number": attempt_number},
            )
            row = result.one_or_none()
            return None if row is None else _attempt(row)

    async def attempt_output_tail(self, attempt_id: int, stream: OutputStream) -> str | None:
        """The tail of one output stream stored on the attempt row when it ended (None before that)."""
        column = "stdout_tail" if stream == "stdout" else "stderr_tail"
        async with self._engine.connect() as connection:
            result = await connection.execute(text(f"SELECT {column} FROM attempts WHERE id = :id"), {"id": attempt_id})
            value: str | None = result.scalar_one_or_none()
            return value

    async def cancel_job(self, job_id: int) -> CancelResult | None:
        """Cancel a job: at once if it waits; by asking the node that runs its attempt otherwise. None: no job.

        The job row is locked first, so a claim (which locks it too) either happened before — an attempt runs and
        the cancel is a request — or happens after and finds the job cancelled.
        """
        async with self._engine.begin() as connection:
            locked = (
                await connection.execute(text("SELECT status FROM jobs WHERE id = :id FOR UPDATE"), {"id": job_id})
            ).one_or_none()
            if locked is None:
                return None
            status = JobStatus(locked.status)
            if status.is_final:
                effect = CancelEffect.ALREADY_FINAL
            else:
                running_on = (
                    await connection.execute(
                        text("SELECT node_id FROM attempts WHERE job_id = :id AND outcome = :running LIMIT 1"),
                        {"id": job_id, "running": AttemptOutcome.RUNNING.value},
                    )
                ).scalar_one_or_none()
                if running_on is not None:
                    effect = CancelEffect.REQUESTED
                    await connection.execute(
                        text(
                            "UPDATE jobs SET cancel_requested_at = coalesce(cancel_requested_at, now()) WHERE id = :id"
                        ),
                        {"id": job_id},
                    )
                    # Delivered at commit to every node; the one running the attempt (`running_on`) ends it.
                    await connection.execute(
                        text("SELECT pg_notify(:channel, :node_id)"),
                        {"channel": CANCEL_REQUESTED_CHANNEL, "node_id": running_on},
                    )
                else:
                    effect = CancelEffect.CANCELLED
                    check_transition(status, JobStatus.CANCELLED)
                    await connection.execute(
                        text("""
                            UPDATE jobs
                            SET status = :cancelled, next_attempt_at = NULL, finished_at = now(), exit_code = NULL,
                                cancel_requested_at = coalesce(cancel_requested_at, now())
                            WHERE id = :id
                        """),
                        {"id": job_id, "cancelled": JobStatus.CANCELLED.value},
                    )
            job = await self._find_job(connection, job_id)
            assert job is not None  # locked above
            return CancelResult(job=job, effect=effect)

    async def reopen_job(self, job_id: int) -> ReopenResult | None:
        """Run a crashed or cancelled job again: due now, with at least one attempt left. None: no job.

        `max_attempts` is raised to attempts + 1 when none is left; a job cancelled with attempts to spare keeps
        them. The cancel request and the final exit code are cleared: they belonged to the previous run.
        """
        async with self._engine.begin() as connection:
            locked = (
                await connection.execute(
                    text("SELECT status, attempts_count FROM jobs WHERE id = :id FOR UPDATE"), {"id": job_id}
                )
            ).one_or_none()
            if locked is None:
                return None
            try:
                new_status = status_when_reopened(JobStatus(locked.status), locked.attempts_count)
            except IllegalTransitionError:
                job = await self._find_job(connection, job_id)
                assert job is not None
                return ReopenResult(job=job, reopened=False)
            await connection.execute(
                text("""
                    UPDATE jobs
                    SET status = :status, next_attempt_at = now(), finished_at = NULL, exit_code = NULL,
                        cancel_requested_at = NULL, max_attempts = greatest(max_attempts, attempts_count + 1)
                    WHERE id = :id
                """),
                {"id": job_id, "status": new_status.value},
            )
            await connection.execute(text("SELECT pg_notify(:channel, '')"), {"channel": JOBS_DUE_CHANNEL})
            job = await self._find_job(connection, job_id)
            assert job is not None
            return ReopenResult(job=job, reopened=True)

    # --- the supervisor's side ------------------------------------------------------------------------------

    async def claim_due_jobs(self, *, node_id: str, limit: int) -> list[ClaimedAttempt]:
        """Take up to `limit` due jobs for this node and commit a `running` attempt row for each.

        Highest priority first, then the job due longest (FIFO), then the oldest; the index ix_jobs_claim_order
        returns them in that order. SKIP LOCKED lets several nodes claim at once without ever taking the same job.
        """
        if limit <= 0:
            return []
        status_when_started = " ".join(
            f"WHEN '{before.value}' THEN '{after.value}'" for before, after in STATUS_WHEN_ATTEMPT_STARTS.items()
        )
        async with self._driver() as driver:
            rows = await driver.fetch(
                f"""
                    WITH due AS (
                        SELECT id, priority, next_attempt_at FROM jobs
                        WHERE next_attempt_at IS NOT NULL AND next_attempt_at <= now()
                          AND status = ANY($1::text[])
                        ORDER BY priority DESC, next_attempt_at, id
                        LIMIT $2
                        FOR UPDATE SKIP LOCKED
                    ), claimed AS (
                        UPDATE jobs j
                        SET status = CASE j.status {status_when_started} END,
                            attempts_count = j.attempts_count + 1,
                            started_at = coalesce(j.started_at, now()),
                            next_attempt_at = NULL
                        FROM due
                        WHERE j.id = due.id
                        RETURNING j.id, j.name, j.program, j.arguments, j.attempts_count, j.timeout_seconds
                    ), inserted AS (
                        INSERT INTO attempts (job_id, attempt_number, node_id, outcome)
                        SELECT id, attempts_count, $3, $4 FROM claimed
                        RETURNING id, job_id, attempt_number
                    )
                    SELECT i.id AS attempt_id, i.job_id, i.attempt_number,
                           c.name AS job_name, c.program, c.arguments, c.timeout_seconds
                    FROM inserted i JOIN claimed c ON c.id = i.job_id JOIN due d ON d.id = i.job_id
                    ORDER BY d.priority DESC, d.next_attempt_at, d.id
                """,
                [status.value for status in STATUS_WHEN_ATTEMPT_STARTS],
                limit,
                node_id,
                AttemptOutcome.RUNNING.value,
            )
        return [ClaimedAttempt(**dict(row)) for row in rows]

    async def record_process_started(
        self, *, attempt_id: int, pid: int, process_started_at: datetime, started_at: datetime
    ) -> None:
        """Remember which OS process runs the attempt (pid and the OS's start time together are its identity).

        Committed before returning; concurrent calls share one statement and commit (see `Coalescer`).
        """
        await self._process_starts(ProcessStart(attempt_id, pid, process_started_at, started_at))

    async def record_processes_started(self, starts: Sequence[ProcessStart]) -> list[None]:
        """`record_process_started` for several attempts, in one statement."""
        async with self._driver() as driver:
            await driver.execute(
                """
                UPDATE attempts a
                SET pid = s.pid, process_started_at = s.process_started_at, started_at = s.started_at
                FROM unnest($1::bigint[], $2::integer[], $3::timestamptz[], $4::timestamptz[])
                     AS s(id, pid, process_started_at, started_at)
                WHERE a.id = s.id AND a.outcome = $5
                """,
                [start.attempt_id for start in starts],
                [start.pid for start in starts],
                [start.process_started_at for start in starts],
                [start.started_at for start in starts],
                AttemptOutcome.RUNNING.value,
            )
        return [None] * len(starts)

    async def record_outcome(
        self, *, attempt_id: int, ending: AttemptEnding, retry_policy: RetryPolicy
    ) -> RecordedOutcome | None:
        """Write how the attempt ended and move its job on, in one transaction committed before returning.

        Fenced: nothing is written unless the attempt is still `running`, so a second writer for the same
        attempt (a late watcher, a reconciler) finds nothing to do and gets None. Concurrent calls share one
        transaction (see `Coalescer`); each job's next status is still decided by the state machine alone.
        """
        return await self._outcomes(_OutcomeToRecord(attempt_id, ending, retry_policy))

    async def _record_outcomes(self, outcomes: Sequence[_OutcomeToRecord]) -> list[RecordedOutcome | None]:
        # An attempt given twice is written once, with its first ending: UPDATE ... FROM would pick either of two
        # joined rows (by the plan), and the job's next status must follow the ending actually written.
        first_of_each = list({outcome.attempt_id: outcome for outcome in reversed(outcomes)}.values())
        endings = [outcome.ending for outcome in first_of_each]
        async with self._driver() as driver, driver.transaction():
            # The fenced attempt updates, and their jobs' rows locked (attempts first, then jobs in id order, as
            # every writer of both does) for the state machine to decide each job's next status.
            finished = await driver.fetch(
                """
                WITH ending AS (
                    SELECT * FROM unnest($1::bigint[], $2::text[], $3::integer[], $4::integer[],
                                         $5::timestamptz[], $6::bigint[], $7::text[], $8::bigint[], $9::bigint[],
                                         $10::bigint[], $11::bigint[], $12::bigint[], $13::text[], $14::text[])
                        AS e(id, outcome, exit_code, signal, finished_at, duration_ms, error, user_cpu_ms,
                             system_cpu_ms, max_rss_kb, stdout_bytes, stderr_bytes, stdout_tail, stderr_tail)
                ), finished AS (
                    UPDATE attempts a
                    SET outcome = e.outcome, exit_code = e.exit_code, signal = e.signal, finished_at = e.finished_at,
                        duration_ms = coalesce(e.duration_ms, greatest(0,
                            (extract(epoch FROM e.finished_at - a.started_at) * 1000)::bigint)),
                        error = e.error, user_cpu_ms = e.user_cpu_ms, system_cpu_ms = e.system_cpu_ms,
                        max_rss_kb = e.max_rss_kb, stdout_bytes = e.stdout_bytes, stderr_bytes = e.stderr_bytes,
                        stdout_tail = e.stdout_tail, stderr_tail = e.stderr_tail
                    FROM ending e
                    WHERE a.id = e.id AND a.outcome = $15
                    RETURNING a.id, a.job_id, a.attempt_number
                )
                SELECT f.id, f.job_id, f.attempt_number, j.status, j.max_attempts,
                       j.cancel_requested_at IS NOT NULL AS cancel_requested
                FROM finished f JOIN jobs j ON j.id = f.job_id
                ORDER BY j.id
                FOR UPDATE OF j
                """,
                [outcome.attempt_id for outcome in first_of_each],
                [ending.outcome.value for ending in endings],
                [ending.exit_code for ending in endings],
                [ending.signal for ending in endings],
                [ending.finished_at for ending in endings],
                [ending.duration_ms for ending in endings],
                [ending.error for ending in endings],
                [ending.user_cpu_ms for ending in endings],
                [ending.system_cpu_ms for ending in endings],
                [ending.max_rss_kb for ending in endings],
                [ending.stdout_bytes for ending in endings],
                [ending.stderr_bytes for ending in endings],
                [ending.stdout_tail for ending in endings],
                [ending.stderr_tail for ending in endings],
                AttemptOutcome.RUNNING.value,
            )
            by_attempt = {row["id"]: row for row in finished}
            recorded: list[RecordedOutcome | None] = []
            job_updates: list[tuple[int, JobStatus, float | None, AttemptEnding]] = []
            for outcome in outcomes:
                row = by_attempt.pop(outcome.attempt_id, None)  # an attempt given twice is written once
                if row is None:
                    recorded.append(None)
                    continue
                job_id: int = row["job_id"]
                attempt_number: int = row["attempt_number"]
                current = JobStatus(row["status"])
                if current not in STATUSES_WITH_ATTEMPT_IN_FLIGHT:
                    recorded.append(RecordedOutcome(job_id=job_id, attempt_number=attempt_number, job_status=None))
                    continue
                new_status = status_after_attempt(
                    current,
                    outcome.ending.outcome,
                    attempt_number,
                    row["max_attempts"],
                    cancel_requested=row["cancel_requested"],
                )
                retry_in = (
                    outcome.retry_policy.delay_seconds(attempt_number) if new_status is JobStatus.RETRIED else None
                )
                job_updates.append((job_id, new_status, retry_in, outcome.ending))
                recorded.append(
                    RecordedOutcome(
                        job_id=job_id, attempt_number=attempt_number, job_status=new_status, retry_in_seconds=retry_in
                    )
                )
            if job_updates:
                await driver.execute(
                    """
                    UPDATE jobs j
                    SET status = u.status,
                        next_attempt_at = CASE WHEN u.final THEN NULL
                                               ELSE now() + make_interval(secs => u.retry_in) END,
                        finished_at = CASE WHEN u.final THEN u.finished_at END,
                        exit_code = CASE WHEN u.final THEN u.exit_code END
                    FROM unnest($1::bigint[], $2::text[], $3::boolean[], $4::float8[], $5::timestamptz[],
                                $6::integer[]) AS u(id, status, final, retry_in, finished_at, exit_code)
                    WHERE j.id = u.id
                    """,
                    [job_id for job_id, _, _, _ in job_updates],
                    [status.value for _, status, _, _ in job_updates],
                    [status.is_final for _, status, _, _ in job_updates],
                    [retry_in or 0.0 for _, _, retry_in, _ in job_updates],
                    [ending.finished_at for _, _, _, ending in job_updates],
                    [ending.exit_code for _, _, _, ending in job_updates],
                )
            return recorded

    async def running_attempts_on_node(self, node_id: str) -> list[RunningAttempt]:
        """Attempts that the database says are running on `node_id` (reconciliation after a restart)."""
        columns = ", ".join(f"a.{column.strip()}" for column in _ATTEMPT_COLUMNS.split(","))
        async with self._engine.connect() as connection:
            result = await connection.execute(
                text(f"""
                    SELECT {columns}, j.timeout_seconds, j.cancel_requested_at IS NOT NULL AS cancel_requested
                    FROM attempts a JOIN jobs j ON j.id = a.job_id
                    WHERE a.node_id = :node_id AND a.outcome = :running ORDER BY a.id
                """),
                {"node_id": node_id, "running": AttemptOutcome.RUNNING.value},
            )
            running = []
            for row in result:
                mapping = dict(row._mapping)
                timeout_seconds = mapping.pop("timeout_seconds")
                cancel_requested = mapping.pop("cancel_requested")
                mapping["outcome"] = AttemptOutcome(mapping["outcome"])
                running.append(
                    RunningAttempt(
                        attempt=AttemptRecord(**mapping),
                        timeout_seconds=timeout_seconds,
                        cancel_requested=cancel_requested,
                    )
                )
            return running

    async def attempts_to_cancel(self, node_id: str) -> list[int]:
        """Ids of the attempts running on `node_id` whose job a user asked to cancel."""
        async with self._driver() as driver:
            rows = await driver.fetch(
                """
                SELECT a.id FROM attempts a JOIN jobs j ON j.id = a.job_id
                WHERE a.node_id = $1 AND a.outcome = $2 AND j.cancel_requested_at IS NOT NULL
                ORDER BY a.id
                """,
                node_id,
                AttemptOutcome.RUNNING.value,
            )
        return [row["id"] for row in rows]

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
