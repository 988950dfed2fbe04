"""The dashboard's queries on a real PostgreSQL: jobs by status, and the last hour's activity per minute."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.domain.records import NewJob
from service.domain.status import AttemptOutcome, JobStatus
from tests.support.stores import Stores


def _job(name: str) -> NewJob:
    return NewJob(name=name, program="/usr/bin/true", arguments=[], max_attempts=3)


async def _attempt(
    engine: AsyncEngine, job_id: int, number: int, outcome: str, started: datetime, finished: datetime | None
) -> None:
    async with engine.begin() as connection:
        await connection.execute(
            text("""
                INSERT INTO attempts (job_id, attempt_number, node_id, outcome, started_at, finished_at)
                VALUES (:job_id, :number, 'node-a', :outcome, :started, :finished)
            """),
            {"job_id": job_id, "number": number, "outcome": outcome, "started": started, "finished": finished},
        )
        await connection.execute(
            text("UPDATE jobs SET attempts_count = :n WHERE id = :id"), {"n": number, "id": job_id}
        )


async def test_counts_by_status_name_every_status_and_count_each_job_once(stores: Stores) -> None:
    jobs = [await stores.jobs.submit_job(_job(f"count-{number}")) for number in range(3)]
    await stores.jobs.cancel_job(jobs[0].id)

    counts = await stores.jobs.count_by_status()

    assert counts == dict.fromkeys(JobStatus, 0) | {JobStatus.QUEUED: 2, JobStatus.CANCELLED: 1}


async def test_activity_counts_submissions_and_endings_by_minute_within_the_window(
    stores: Stores, engine: AsyncEngine
) -> None:
    now = datetime.now(UTC)
    jobs = [await stores.jobs.submit_job(_job(f"activity-{number}")) for number in range(3)]
    ended_at = now - timedelta(minutes=5)
    await _attempt(engine, jobs[0].id, 1, "failed", ended_at - timedelta(seconds=20), ended_at)
    await _attempt(engine, jobs[0].id, 2, "succeeded", ended_at - timedelta(seconds=10), ended_at)
    await _attempt(engine, jobs[1].id, 1, "running", now, None)  # not ended: not counted
    # Ended long before the window: not counted.
    await _attempt(engine, jobs[2].id, 1, "failed", now - timedelta(hours=3), now - timedelta(hours=2))

    activity = await stores.jobs.activity_per_minute(now - timedelta(hours=1))

    by_minute = {minute.minute: minute for minute in activity}
    assert sum(minute.submitted for minute in activity) == 3
    ended_minute = by_minute[ended_at.replace(second=0, microsecond=0)]
    assert dict(ended_minute.ended) == {AttemptOutcome.FAILED: 1, AttemptOutcome.SUCCEEDED: 1}
    assert sum(sum(minute.ended.values()) for minute in activity) == 2
    assert [minute.minute for minute in activity] == sorted(by_minute)
