"""The queries the API makes of jobs: submit, find, list, cancel, reopen, and read a job's attempts."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from service.db.coalescing import Coalescer
from service.db.connections import Database
from service.db.notifications import CANCEL_REQUESTED_CHANNEL, JOBS_DUE_CHANNEL
from service.db.rows import ATTEMPT_COLUMNS, JOB_COLUMNS, attempt_from_row, job_from_row, like_prefix
from service.domain.paths import OutputStream
from service.domain.records import (
    AttemptRecord,
    CancelEffect,
    CancelResult,
    IdempotentSubmission,
    JobFilter,
    JobRecord,
    MinuteActivity,
    NewJob,
    ReopenResult,
)
from service.domain.status import (
    AttemptOutcome,
    IllegalTransitionError,
    JobStatus,
    check_transition,
    status_when_reopened,
)

# One INSERT for every submission, batched or keyed. Ids are drawn first, so that each inserted row can be matched
# to its place in the input. A keyed submission whose key was used before inserts nothing (ON CONFLICT waits for a
# competing insert of the same key to commit or roll back before deciding).
_INSERT_JOBS = f"""
    WITH input AS MATERIALIZED (
        SELECT nextval(pg_get_serial_sequence('jobs', 'id')) AS id, x.*
        FROM jsonb_to_recordset($1::jsonb) AS x(
            position integer, name text, program text, program_name text, arguments text[],
            max_attempts integer, priority integer, run_at timestamptz, timeout_seconds float8,
            idempotency_key text, request_fingerprint text, submitted_by text,
            memory_limit_bytes bigint, cpu_limit_seconds integer, open_files_limit integer)
    ), j AS (
        INSERT INTO jobs (id, name, program, program_name, arguments, status, max_attempts, priority,
                          run_at, timeout_seconds, next_attempt_at, idempotency_key, request_fingerprint,
                          submitted_by, memory_limit_bytes, cpu_limit_seconds, open_files_limit)
        OVERRIDING SYSTEM VALUE
        SELECT id, name, program, program_name, arguments, $2, max_attempts, priority,
               run_at, timeout_seconds, greatest(now(), run_at), idempotency_key, request_fingerprint,
               submitted_by, memory_limit_bytes, cpu_limit_seconds, open_files_limit
        FROM input ORDER BY position
        ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
        RETURNING *
    )
    SELECT {JOB_COLUMNS}
    FROM j JOIN input ON input.id = j.id
    -- Delivered at commit, once, to every node's listener, and only when a row was inserted: the other nodes can
    -- claim the jobs at once.
    CROSS JOIN (SELECT pg_notify($3, '') FROM (SELECT FROM j LIMIT 1) AS inserted) AS notified
    ORDER BY input.position
"""


def _insert_document(new_jobs: Sequence[NewJob], idempotency_key: str | None, fingerprint: str | None) -> str:
    return json.dumps(
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
                "idempotency_key": idempotency_key,
                "request_fingerprint": fingerprint,
                "submitted_by": job.submitted_by,
                "memory_limit_bytes": job.limits.memory_bytes,
                "cpu_limit_seconds": job.limits.cpu_seconds,
                "open_files_limit": job.limits.open_files,
            }
            for position, job in enumerate(new_jobs)
        ]
    )


async def _insert_jobs(
    driver: asyncpg.Connection,
    new_jobs: Sequence[NewJob],
    *,
    idempotency_key: str | None = None,
    fingerprint: str | None = None,
) -> list[JobRecord]:
    rows = await driver.fetch(
        _INSERT_JOBS,
        _insert_document(new_jobs, idempotency_key, fingerprint),
        JobStatus.QUEUED.value,
        JOBS_DUE_CHANNEL,
    )
    return [job_from_row(row) for row in rows]


# Attempts ended in a window are found through the index on their start: one that ran longer than this before
# ending is left out of the activity counts (and only of them).
ACTIVITY_LONGEST_ATTEMPT = timedelta(days=1)


class JobStore:
    """Jobs as the API sees them. Each method is one transaction, committed before it returns."""

    def __init__(self, database: Database) -> None:
        self._database = database
        # Group commit: under load, one INSERT and one commit serve many submissions.
        self._submissions = Coalescer(self.submit_jobs, name="job submission")

    async def submit_job(self, new_job: NewJob) -> JobRecord:
        """Insert a queued job, due at its `run_at` (or now), and commit it before returning.

        Concurrent submissions share one INSERT and one commit (group commit): see `Coalescer`.
        """
        return await self._submissions(new_job)

    async def submit_jobs(self, new_jobs: Sequence[NewJob]) -> list[JobRecord]:
        """Insert queued jobs in one statement and commit them; the records come back in the order given."""
        if not new_jobs:
            return []
        async with self._database.driver() as driver:
            return await _insert_jobs(driver, new_jobs)

    async def submit_job_idempotently(
        self, new_job: NewJob, *, idempotency_key: str, fingerprint: str
    ) -> IdempotentSubmission:
        """Insert the job unless `idempotency_key` was used before; then return the job that key created.

        Safe under concurrent requests: the unique index decides.
        """
        async with self._database.driver() as driver, driver.transaction():
            inserted = await _insert_jobs(driver, [new_job], idempotency_key=idempotency_key, fingerprint=fingerprint)
            if inserted:
                return IdempotentSubmission(job=inserted[0], created=True, same_request=True)
            # A new statement sees the competing insert, committed by now.
            row = await driver.fetchrow(
                f"SELECT {JOB_COLUMNS}, j.request_fingerprint FROM jobs j WHERE j.idempotency_key = $1",
                idempotency_key,
            )
            assert row is not None  # the conflict was on this key
            return IdempotentSubmission(
                job=job_from_row(row), created=False, same_request=row["request_fingerprint"] == fingerprint
            )

    async def count_queued_jobs(self, *, up_to: int) -> int:
        """Jobs waiting for their first attempt, counted up to `up_to` and no further.

        An index-only walk of (status, id) that stops at `up_to` rows: its cost is bounded by the limit it is
        checked against, never by the size of the table.
        """
        async with self._database.driver() as driver:
            count: int = await driver.fetchval(
                "SELECT count(*) FROM (SELECT 1 FROM jobs WHERE status = $1 LIMIT $2) AS waiting",
                JobStatus.QUEUED.value,
                up_to,
            )
            return count

    async def find_job(self, job_id: int) -> JobRecord | None:
        async with self._database.connect() as connection:
            return await _find_job(connection, job_id)

    async def list_jobs(self, *, limit: int, job_filter: JobFilter | None = None) -> list[JobRecord]:
        """The newest jobs first (by id), at most `limit`, filtered; a page of keyset paging.

        Each page is an index scan that stops after `limit` rows: the primary key, (status, id) or
        (program_name, id), newest first. Several statuses are one such scan each, merged: the cost of a page does
        not grow with the table.
        """
        chosen = job_filter or JobFilter()
        conditions = []
        parameters: dict[str, Any] = {"limit": limit}
        if chosen.name_prefix:
            conditions.append("j.name LIKE :name_pattern ESCAPE '\\'")
            parameters["name_pattern"] = like_prefix(chosen.name_prefix)
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
        if chosen.statuses:
            branches = []
            for index, status in enumerate(dict.fromkeys(chosen.statuses)):
                parameters[f"status_{index}"] = status.value
                where = " AND ".join([f"j.status = :status_{index}", *conditions])
                branches.append(f"(SELECT * FROM jobs j WHERE {where} ORDER BY j.id DESC LIMIT :limit)")
            source = f"({' UNION ALL '.join(branches)}) AS j"
            where_clause = ""
        else:
            source = "jobs j"
            where_clause = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        async with self._database.connect() as connection:
            result = await connection.execute(
                text(f"SELECT {JOB_COLUMNS} FROM {source} {where_clause} ORDER BY j.id DESC LIMIT :limit"),
                parameters,
            )
            return [job_from_row(row._mapping) for row in result]

    async def count_by_status(self) -> dict[JobStatus, int]:
        """How many jobs have each status (every status present, 0 where none has it)."""
        async with self._database.connect() as connection:
            result = await connection.execute(text("SELECT status, count(*) AS jobs FROM jobs GROUP BY status"))
            counted = {JobStatus(row.status): int(row.jobs) for row in result}
        return {status: counted.get(status, 0) for status in JobStatus}

    async def activity_per_minute(self, since: datetime) -> list[MinuteActivity]:
        """Per minute since `since`, oldest first: jobs created, and attempts ended by outcome (minutes with
        neither are left out)."""
        async with self._database.connect() as connection:
            submitted = await connection.execute(
                text("""
                    SELECT date_trunc('minute', created_at) AS minute, count(*) AS jobs
                    FROM jobs WHERE created_at >= :since GROUP BY 1
                """),
                {"since": since},
            )
            ended = await connection.execute(
                text("""
                    SELECT date_trunc('minute', finished_at) AS minute, outcome, count(*) AS attempts
                    FROM attempts
                    WHERE started_at >= :earliest_start AND finished_at >= :since AND outcome <> :running
                    GROUP BY 1, 2
                """),
                {
                    "since": since,
                    "earliest_start": since - ACTIVITY_LONGEST_ATTEMPT,
                    "running": AttemptOutcome.RUNNING.value,
                },
            )
            submitted_by_minute = {row.minute: int(row.jobs) for row in submitted}
            ended_by_minute: dict[datetime, dict[AttemptOutcome, int]] = {}
            for row in ended:
                ended_by_minute.setdefault(row.minute, {})[AttemptOutcome(row.outcome)] = int(row.attempts)
        return [
            MinuteActivity(
                minute=minute,
                submitted=submitted_by_minute.get(minute, 0),
                ended=ended_by_minute.get(minute, {}),
            )
            for minute in sorted(submitted_by_minute.keys() | ended_by_minute.keys())
        ]

    async def list_attempts(self, job_id: int) -> list[AttemptRecord]:
        async with self._database.connect() as connection:
            result = await connection.execute(
                text(f"SELECT {ATTEMPT_COLUMNS} FROM attempts a WHERE a.job_id = :job_id ORDER BY a.attempt_number"),
                {"job_id": job_id},
            )
            return [attempt_from_row(row._mapping) for row in result]

    async def find_attempt(self, job_id: int, attempt_number: int) -> AttemptRecord | None:
        async with self._database.connect() as connection:
            result = await connection.execute(
                text(f"SELECT {ATTEMPT_COLUMNS} FROM attempts a WHERE a.job_id = :job_id AND a.attempt_number = :n"),
                {"job_id": job_id, "n": attempt_number},
            )
            row = result.one_or_none()
            return None if row is None else attempt_from_row(row._mapping)

    async def attempt_output_tail(self, attempt_id: int, stream: OutputStream) -> str | None:
        """The tail of one output stream stored on the attempt row when it ended (None before that)."""
        column = "stdout_tail" if stream == "stdout" else "stderr_tail"
        async with self._database.connect() as connection:
            result = await connection.execute(text(f"SELECT {column} FROM attempts WHERE id = :id"), {"id": attempt_id})
            value: str | None = result.scalar_one_or_none()
            return value

    async def cancel_job(self, job_id: int) -> CancelResult | None:
        """Cancel a job: at once if it waits; by asking the node that runs its attempt otherwise. None: no job.

        The job row is locked first, so a claim (which locks it too) either happened before — an attempt runs and
        the cancel is a request — or happens after and finds the job cancelled.
        """
        async with self._database.begin() as connection:
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
            job = await _find_job(connection, job_id)
            assert job is not None  # locked above
            return CancelResult(job=job, effect=effect)

    async def reopen_job(self, job_id: int) -> ReopenResult | None:
        """Run a crashed or cancelled job again: due now, with at least one attempt left. None: no job.

        `max_attempts` is raised to attempts + 1 when none is left; a job cancelled with attempts to spare keeps
        them. The cancel request and the final exit code are cleared: they belonged to the previous run.
        """
        async with self._database.begin() as connection:
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
                job = await _find_job(connection, job_id)
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
            job = await _find_job(connection, job_id)
            assert job is not None
            return ReopenResult(job=job, reopened=True)

    async def count_due_jobs(self, *, at_most: int) -> int:
        """Jobs due and waiting for a slot on any node, counted up to `at_most`: the scan stops there, so a long
        queue costs no more than that (for the metrics, scraped often)."""
        async with self._database.connect() as connection:
            result = await connection.execute(
                text(
                    "SELECT count(*) FROM (SELECT 1 FROM jobs"
                    " WHERE next_attempt_at IS NOT NULL AND next_attempt_at <= now() LIMIT :at_most) AS due"
                ),
                {"at_most": at_most},
            )
            return int(result.scalar_one())


async def _find_job(connection: AsyncConnection, job_id: int) -> JobRecord | None:
    result = await connection.execute(text(f"SELECT {JOB_COLUMNS} FROM jobs j WHERE j.id = :id"), {"id": job_id})
    row = result.one_or_none()
    return None if row is None else job_from_row(row._mapping)
