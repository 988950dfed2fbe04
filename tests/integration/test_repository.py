"""The repository against a real PostgreSQL: submitting, claiming, fencing."""

from __future__ import annotations

from datetime import UTC, datetime

from service.db.repository import AttemptEnding, Repository
from service.domain.status import AttemptOutcome, JobStatus


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
    first = await repository.record_outcome(attempt_id=claimed.attempt_id, ending=ending, retry_backoff_seconds=0)
    second = await repository.record_outcome(attempt_id=claimed.attempt_id, ending=ending, retry_backoff_seconds=0)

    assert first is not None
    assert first.job_status is JobStatus.RETRIED
    assert second is None
