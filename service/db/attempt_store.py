"""The queries the supervisor makes of attempts: claim due jobs, record which process runs each, record how each
ended, and find the attempts running on a node."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg
from sqlalchemy import text

from service.db.coalescing import Coalescer
from service.db.connections import Database
from service.db.fencing import FENCED, LIMIT_TRANSACTION_IDLE, Fenced, LeaseLapsedError, lease_held
from service.db.notifications import JOBS_DUE_CHANNEL
from service.db.rows import ATTEMPT_COLUMNS, attempt_from_row
from service.domain.limits import JobLimits
from service.domain.records import (
    AttemptEnding,
    ClaimedAttempt,
    ProcessStart,
    RecordedOutcome,
    RunningAttempt,
)
from service.domain.retry import RetryPolicy
from service.domain.status import (
    STATUS_WHEN_ATTEMPT_STARTS,
    STATUSES_WITH_ATTEMPT_IN_FLIGHT,
    AttemptOutcome,
    JobStatus,
    status_after_attempt,
    status_when_withdrawn,
)


@dataclass(frozen=True, slots=True)
class OutcomeToRecord:
    attempt_id: int
    ending: AttemptEnding
    retry_policy: RetryPolicy


class AttemptStore:
    """Attempts as the supervisor sees them. Each method is one transaction, committed before it returns."""

    def __init__(self, database: Database) -> None:
        self._database = database
        # Group commit for the writes made once or more per job: under load, one statement serves many callers.
        self._process_starts = Coalescer(self.record_processes_started, name="process start")
        self._outcomes = Coalescer(self._record_outcomes, name="attempt outcome")

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
        async with self._database.driver() as driver:
            rows = await driver.fetch(
                f"""
                    WITH due AS (
                        SELECT id, priority, next_attempt_at FROM jobs
                        WHERE next_attempt_at IS NOT NULL AND next_attempt_at <= now()
                          AND status = ANY($1::text[]) AND {lease_held("$3")}
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
                        RETURNING j.id, j.name, j.program, j.arguments, j.attempts_count, j.timeout_seconds,
                                  j.program_name, j.memory_limit_bytes, j.cpu_limit_seconds, j.open_files_limit
                    ), inserted AS (
                        INSERT INTO attempts (job_id, attempt_number, node_id, outcome)
                        SELECT id, attempts_count, $3, $4 FROM claimed
                        RETURNING id, job_id, attempt_number
                    )
                    SELECT i.id AS attempt_id, i.job_id, i.attempt_number,
                           c.name AS job_name, c.program, c.arguments, c.timeout_seconds,
                           c.program_name, d.next_attempt_at AS due_at,
                           c.memory_limit_bytes, c.cpu_limit_seconds, c.open_files_limit
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
    ) -> bool:
        """Remember which OS process runs the attempt (pid and the OS's start time together are its identity).

        Committed before returning; concurrent calls share one statement and commit (see `Coalescer`). False: the
        attempt is no longer running (another node took it over), so its program must not start. Raises
        `LeaseLapsedError` while this node's lease has lapsed (it may be renewed yet: try again).
        """
        recorded = await self._process_starts(ProcessStart(attempt_id, pid, process_started_at, started_at))
        if isinstance(recorded, Fenced):
            raise LeaseLapsedError(f"attempt {attempt_id}: this node's lease has lapsed; its process is not let go")
        return recorded

    async def record_processes_started(self, starts: Sequence[ProcessStart]) -> list[bool | Fenced]:
        """`record_process_started` for several attempts, in one statement."""
        ids = [start.attempt_id for start in starts]
        async with self._database.driver() as driver:
            rows = await driver.fetch(
                f"""
                UPDATE attempts a
                SET pid = s.pid, process_started_at = s.process_started_at, started_at = s.started_at
                FROM unnest($1::bigint[], $2::integer[], $3::timestamptz[], $4::timestamptz[])
                     AS s(id, pid, process_started_at, started_at)
                WHERE a.id = s.id AND a.outcome = $5 AND {lease_held("a.node_id")}
                RETURNING a.id
                """,
                ids,
                [start.pid for start in starts],
                [start.process_started_at for start in starts],
                [start.started_at for start in starts],
                AttemptOutcome.RUNNING.value,
            )
            written = {row["id"] for row in rows}
            fenced = (
                await _still_running(driver, [i for i in ids if i not in written]) if len(written) < len(ids) else set()
            )
        return [FENCED if i in fenced else i in written for i in ids]

    async def record_outcome(
        self, *, attempt_id: int, ending: AttemptEnding, retry_policy: RetryPolicy
    ) -> RecordedOutcome | None:
        """Write how the attempt ended and move its job on, in one transaction committed before returning.

        Fenced: nothing is written unless the attempt is still `running`, so a second writer for the same
        attempt (a late watcher, a reconciler, a node that took it over) finds nothing to do and gets None; and
        nothing is written while the attempt's node does not hold its lease: that raises `LeaseLapsedError`, to be
        tried again (the lease may be renewed, or the attempt taken over). Concurrent calls share one transaction
        (see `Coalescer`); each job's next status is still decided by the state machine alone.
        """
        recorded = await self._outcomes(OutcomeToRecord(attempt_id, ending, retry_policy))
        if isinstance(recorded, Fenced):
            raise LeaseLapsedError(f"attempt {attempt_id}: this node's lease has lapsed; its outcome waits")
        return recorded

    async def _record_outcomes(self, outcomes: Sequence[OutcomeToRecord]) -> list[RecordedOutcome | Fenced | None]:
        async with self._database.driver() as driver, driver.transaction():
            await driver.execute(LIMIT_TRANSACTION_IDLE)
            return await apply_outcomes(driver, outcomes, fence_on_lease=True)

    async def running_attempts_on_node(self, node_id: str) -> list[RunningAttempt]:
        """Attempts that the database says are running on `node_id` (reconciliation after a restart)."""
        async with self._database.connect() as connection:
            result = await connection.execute(
                text(f"""
                    SELECT {ATTEMPT_COLUMNS}, j.timeout_seconds, j.cancel_requested_at IS NOT NULL AS cancel_requested,
                           j.memory_limit_bytes, j.cpu_limit_seconds, j.open_files_limit
                    FROM attempts a JOIN jobs j ON j.id = a.job_id
                    WHERE a.node_id = :node_id AND a.outcome = :running ORDER BY a.id
                """),
                {"node_id": node_id, "running": AttemptOutcome.RUNNING.value},
            )
            return [
                RunningAttempt(
                    attempt=attempt_from_row(row._mapping),
                    timeout_seconds=row.timeout_seconds,
                    cancel_requested=row.cancel_requested,
                    limits=JobLimits(row.memory_limit_bytes, row.cpu_limit_seconds, row.open_files_limit),
                )
                for row in result
            ]

    async def attempts_to_cancel(self, node_id: str) -> list[int]:
        """Ids of the attempts running on `node_id` whose job a user asked to cancel."""
        async with self._database.driver() as driver:
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

    async def withdraw_unstarted(self, *, attempt_id: int, unstarted_pid: int | None = None) -> RecordedOutcome | None:
        """Take back an attempt whose program never ran, as if it had never been claimed: one transaction.

        The attempt row is deleted (it holds nothing: no process ran, no output, no exit), the job's attempt is
        given back, its status returns to what the claim found (the state machine decides: `status_when_withdrawn`)
        and it is due now, announced on the jobs-due channel. Fenced: only while the attempt is still `running` and
        no program can have started, that is its pid is NULL (the pid is committed before any go-ahead) or is
        `unstarted_pid`, a keeper known to have exited, or been abandoned, without its go-ahead. None: fenced out.
        """
        async with self._database.driver() as driver, driver.transaction():
            # The attempt first, then its job, as every writer of both does.
            withdrawn = await driver.fetchrow(
                """
                DELETE FROM attempts
                WHERE id = $1 AND outcome = $2 AND (pid IS NULL OR pid = $3)
                RETURNING job_id, attempt_number
                """,
                attempt_id,
                AttemptOutcome.RUNNING.value,
                unstarted_pid,
            )
            if withdrawn is None:
                return None
            job_id: int = withdrawn["job_id"]
            attempt_number: int = withdrawn["attempt_number"]
            job = await driver.fetchrow(
                "SELECT status, cancel_requested_at IS NOT NULL AS cancel_requested FROM jobs WHERE id = $1 FOR UPDATE",
                job_id,
            )
            assert job is not None  # the attempt's foreign key
            current = JobStatus(job["status"])
            # A job that already left its attempt behind (cancelled meanwhile) only gets the attempt back.
            left_behind = current not in STATUSES_WITH_ATTEMPT_IN_FLIGHT
            new_status = (
                current
                if left_behind
                else status_when_withdrawn(current, attempt_number, cancel_requested=job["cancel_requested"])
            )
            # Only the latest attempt of a job can be running: the next claim numbers its attempt as this one.
            await driver.execute(
                """
                UPDATE jobs
                SET status = $2, attempts_count = attempts_count - 1,
                    started_at = CASE WHEN attempts_count <= 1 THEN NULL ELSE started_at END,
                    next_attempt_at = CASE WHEN $3 THEN next_attempt_at WHEN $4 THEN NULL ELSE now() END,
                    finished_at = CASE WHEN $3 THEN finished_at WHEN $4 THEN now() ELSE NULL END
                WHERE id = $1
                """,
                job_id,
                new_status.value,
                left_behind,
                new_status.is_final,
            )
            if not new_status.is_final:
                await driver.execute("SELECT pg_notify($1, '')", JOBS_DUE_CHANNEL)
        return RecordedOutcome(
            job_id=job_id, attempt_number=attempt_number, job_status=None if left_behind else new_status
        )


async def apply_outcomes(
    driver: asyncpg.Connection, outcomes: Sequence[OutcomeToRecord], *, fence_on_lease: bool
) -> list[RecordedOutcome | Fenced | None]:
    """Write the endings of still-running attempts and move their jobs on, inside the caller's transaction.

    With `fence_on_lease`, an attempt whose node does not hold its lease is not written (FENCED); the rescuer, which
    settles a dead node's attempts, writes without that fence.
    """
    # An attempt given twice is written once, with its first ending: UPDATE ... FROM would pick either of two
    # joined rows (by the plan), and the job's next status must follow the ending actually written.
    first_of_each = list({outcome.attempt_id: outcome for outcome in reversed(outcomes)}.values())
    endings = [outcome.ending for outcome in first_of_each]
    # The fenced attempt updates, and their jobs' rows locked (attempts first, then jobs in id order, as
    # every writer of both does) for the state machine to decide each job's next status.
    finished = await driver.fetch(
        f"""
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
            WHERE a.id = e.id AND a.outcome = $15 AND ($16 = false OR {lease_held("a.node_id")})
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
        fence_on_lease,
    )
    by_attempt = {row["id"]: row for row in finished}
    # Not written yet still running: its node does not hold its lease (the rarer path costs one more query).
    missing = [outcome.attempt_id for outcome in first_of_each if outcome.attempt_id not in by_attempt]
    fenced = await _still_running(driver, missing) if fence_on_lease and missing else set()
    recorded: list[RecordedOutcome | Fenced | None] = []
    job_updates: list[tuple[int, JobStatus, float | None, AttemptEnding]] = []
    for outcome in outcomes:
        row = by_attempt.pop(outcome.attempt_id, None)  # an attempt given twice is written once
        if row is None:
            recorded.append(FENCED if outcome.attempt_id in fenced else None)
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
        retry_in = outcome.retry_policy.delay_seconds(attempt_number) if new_status is JobStatus.RETRIED else None
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


async def _still_running(driver: asyncpg.Connection, attempt_ids: Sequence[int]) -> set[int]:
    rows = await driver.fetch(
        "SELECT id FROM attempts WHERE id = ANY($1::bigint[]) AND outcome = $2",
        list(attempt_ids),
        AttemptOutcome.RUNNING.value,
    )
    return {row["id"] for row in rows}
