"""The repository against a real PostgreSQL: submitting, claiming, fencing, idempotent inserts."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.db.repository import AttemptEnding, NewJob, Repository
from service.domain.retry import NO_WAIT
from service.domain.status import AttemptOutcome, JobStatus
from tests.support.processes import wait_until


async def test_submitted_job_is_queued_and_committed(repository: Repository) -> None:
    job = await repository.submit_job(name="task-1", program="/bin/true", arguments=["a", "b"], max_attempts=2)

    assert job.status is JobStatus.QUEUED
    assert await repository.find_job(job.id) == job


async def test_claim_writes_running_attempt_and_outcome_is_fenced(repository: Repository) -> None:
    job = await repository.submit_job(name="task-1", program="/bin/true", arguments=[], max_attempts=2)

    [claimed] = await repository.claim_due_jobs(node_id="n1", limit=5)
    assert claimed.job_id == job.id
    assert claimed.attempt_number == 1
    assert await repository.claim_due_jobs(node_id="n2", limit=5) == []

    ending = AttemptEnding(outcome=AttemptOutcome.FAILED, finished_at=datetime.now(UTC), exit_code=3, duration_ms=5)
    first = await repository.record_outcome(attempt_id=claimed.attempt_id, ending=ending, retry_policy=NO_WAIT)
    second = await repository.record_outcome(attempt_id=claimed.attempt_id, ending=ending, retry_policy=NO_WAIT)

    assert first is not None
    assert first.job_status is JobStatus.RETRIED
    assert second is None


async def _wait_until_blocked_on_a_lock(engine: AsyncEngine) -> None:
    """Until some other session of this database waits for a lock (the competing insert's)."""

    async def some_session_waits() -> bool:
        async with engine.connect() as connection:
            waiting = await connection.scalar(
                text("""
                    SELECT count(*) FROM pg_stat_activity
                    WHERE datname = current_database() AND wait_event_type = 'Lock'
                """)
            )
        return bool(waiting)

    await wait_until(some_session_waits, "the second insert never waited for the first")


@pytest.mark.parametrize("first_commits", [True, False], ids=["first-commits", "first-rolls-back"])
async def test_a_key_being_inserted_elsewhere_waits_for_that_insert_to_decide(
    repository: Repository, engine: AsyncEngine, first_commits: bool
) -> None:
    new_job = NewJob(name="second", program="/bin/true", arguments=[], max_attempts=1)
    async with engine.connect() as first:
        transaction = await first.begin()
        await first.execute(
            text("""
                INSERT INTO jobs (name, program, status, max_attempts, idempotency_key, request_fingerprint)
                VALUES ('first', '/bin/true', 'queued', 1, 'the-key', 'the-fingerprint')
            """)
        )
        second = asyncio.create_task(
            repository.submit_job_idempotently(new_job, idempotency_key="the-key", fingerprint="the-fingerprint")
        )
        await _wait_until_blocked_on_a_lock(engine)
        assert not second.done()
        await (transaction.commit() if first_commits else transaction.rollback())
    result = await asyncio.wait_for(second, 10)

    assert result.created is not first_commits
    assert result.same_request
    assert result.job.name == ("first" if first_commits else "second")
    async with engine.connect() as connection:
        assert await connection.scalar(text("SELECT count(*) FROM jobs WHERE idempotency_key = 'the-key'")) == 1
