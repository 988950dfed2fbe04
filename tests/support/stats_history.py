"""Crafted job histories for the /stats tests: rows written as the service would have left them, never due."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.domain.status import AttemptOutcome, JobStatus

S, F, K = AttemptOutcome.SUCCEEDED, AttemptOutcome.FAILED, AttemptOutcome.KILLED
SPAWN_FAILED, LOST, RUNNING = AttemptOutcome.SPAWN_FAILED, AttemptOutcome.LOST, AttemptOutcome.RUNNING
CRAFTED_NODE = "crafted-node"  # not the node of an app under test, so its reconciler leaves these rows alone
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)  # a Thursday
DEFAULT_PROGRAM = "/bin/true"


@dataclass(frozen=True, slots=True)
class CraftedAttempt:
    outcome: AttemptOutcome
    duration_ms: int | None
    started_at: datetime = EPOCH
    exit_code: int | None = None
    """Defaults to 0 for a success and 1 for a failure; None otherwise."""
    node_id: str = CRAFTED_NODE


@dataclass(frozen=True, slots=True)
class CraftedJob:
    name: str
    arguments: list[str]
    status: JobStatus
    attempts: list[CraftedAttempt] = field(default_factory=list)
    """In order: the first is attempt number 1."""
    program: str = DEFAULT_PROGRAM
    max_attempts: int = 2

    @property
    def created_at(self) -> datetime:
        """A minute before its first attempt started (EPOCH when it has none)."""
        return self.attempts[0].started_at - timedelta(minutes=1) if self.attempts else EPOCH


async def use_utc(engine: AsyncEngine) -> None:
    """Hours and weekdays in attempt_facts follow the session's TimeZone: make it UTC for this database."""
    async with engine.begin() as connection:
        database = (await connection.execute(text("SELECT current_database()"))).scalar_one()
        await connection.exec_driver_sql(f"ALTER DATABASE \"{database}\" SET timezone TO 'UTC'")
    await engine.dispose()  # connections opened from now on take the setting


async def insert_jobs(engine: AsyncEngine, jobs: list[CraftedJob]) -> list[int]:
    """Write the jobs and their attempts; returns the job ids. No job is due: no supervisor picks them up."""
    job_ids = []
    async with engine.begin() as connection:
        for job in jobs:
            job_id = (
                await connection.execute(
                    text("""
                        INSERT INTO jobs (name, program, arguments, status, max_attempts, attempts_count,
                                          next_attempt_at, created_at)
                        VALUES (:name, :program, :arguments, :status, :max_attempts, :attempts_count, NULL,
                                :created_at)
                        RETURNING id
                    """),
                    {
                        "name": job.name,
                        "program": job.program,
                        "arguments": job.arguments,
                        "status": job.status.value,
                        "max_attempts": max(job.max_attempts, len(job.attempts)),
                        "attempts_count": len(job.attempts),
                        "created_at": job.created_at,
                    },
                )
            ).scalar_one()
            job_ids.append(job_id)
            for number, attempt in enumerate(job.attempts, start=1):
                await connection.execute(text(INSERT_ATTEMPT), attempt_parameters(job_id, number, attempt))
    return job_ids


INSERT_ATTEMPT = """
    INSERT INTO attempts (job_id, attempt_number, node_id, outcome, exit_code, signal, started_at, finished_at,
                          duration_ms)
    VALUES (:job_id, :number, :node_id, :outcome, :exit_code, :signal, :started_at, :finished_at, :duration_ms)
"""


def attempt_parameters(job_id: int, number: int, attempt: CraftedAttempt) -> dict[str, object]:
    finished = attempt.outcome is not RUNNING
    default_exit_code = {S: 0, F: 1}.get(attempt.outcome)
    return {
        "job_id": job_id,
        "number": number,
        "node_id": attempt.node_id,
        "outcome": attempt.outcome.value,
        "exit_code": attempt.exit_code if attempt.exit_code is not None else default_exit_code,
        "signal": 9 if attempt.outcome is K else None,
        "started_at": attempt.started_at,
        "finished_at": attempt.started_at + timedelta(milliseconds=attempt.duration_ms or 0) if finished else None,
        "duration_ms": attempt.duration_ms,
    }
