"""The stores against a real PostgreSQL: submitting, claiming, fencing, idempotent inserts, group commit."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import exc, text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.domain.records import AttemptEnding, CancelEffect, NewJob, RecordedOutcome
from service.domain.retry import NO_WAIT, RetryPolicy
from service.domain.status import AttemptOutcome, JobStatus
from tests.support.processes import wait_until
from tests.support.stores import Stores


async def test_submitted_job_is_queued_and_committed(stores: Stores) -> None:
    job = await stores.jobs.submit_job(NewJob(name="task-1", program="/bin/true", arguments=["a", "b"], max_attempts=2))

    assert job.status is JobStatus.QUEUED
    assert await stores.jobs.find_job(job.id) == job


async def test_claim_writes_running_attempt_and_outcome_is_fenced(stores: Stores) -> None:
    job = await stores.jobs.submit_job(NewJob(name="task-1", program="/bin/true", arguments=[], max_attempts=2))

    [claimed] = await stores.attempts.claim_due_jobs(node_id="n1", limit=5)
    assert claimed.job_id == job.id
    assert claimed.attempt_number == 1
    assert await stores.attempts.claim_due_jobs(node_id="n2", limit=5) == []

    ending = AttemptEnding(outcome=AttemptOutcome.FAILED, finished_at=datetime.now(UTC), exit_code=3, duration_ms=5)
    first = await stores.attempts.record_outcome(attempt_id=claimed.attempt_id, ending=ending, retry_policy=NO_WAIT)
    second = await stores.attempts.record_outcome(attempt_id=claimed.attempt_id, ending=ending, retry_policy=NO_WAIT)

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
    stores: Stores, engine: AsyncEngine, first_commits: bool
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
            stores.jobs.submit_job_idempotently(new_job, idempotency_key="the-key", fingerprint="the-fingerprint")
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


# --- group commit: concurrent writes share statements, and each caller still gets its own result -------------

CONCURRENT_CALLS = 50

# Arguments that a careless JSON or array encoding would mangle: separators, quotes, escapes, array syntax.
AWKWARD_ARGUMENTS = [
    "with space",
    "  padded  ",
    'double "quoted"',
    "single 'quoted'",
    "back\\slash",
    "ünïcødé ✓ 日本語 🚀",
    "",
    "{a,b}",
    "NULL",
    "tab\there\nnew line",
    "$1",
]


async def test_concurrent_submissions_each_return_their_own_committed_job(stores: Stores, engine: AsyncEngine) -> None:
    asked = [(f"concurrent-{index}", index % 3 + 1) for index in range(CONCURRENT_CALLS)]

    jobs = await asyncio.gather(
        *(
            stores.jobs.submit_job(
                NewJob(name=name, program="/bin/true", arguments=[name, "x y"], max_attempts=max_attempts)
            )
            for name, max_attempts in asked
        )
    )

    assert [(job.name, job.max_attempts) for job in jobs] == asked
    assert [job.arguments for job in jobs] == [[name, "x y"] for name, _ in asked]
    assert all(job.status is JobStatus.QUEUED for job in jobs)
    assert len({job.id for job in jobs}) == CONCURRENT_CALLS
    # now() is the transaction's start: jobs sharing a created_at were committed together (group commit).
    assert len({job.created_at for job in jobs}) < CONCURRENT_CALLS
    async with engine.connect() as connection:  # another session: only what was committed
        rows = (await connection.execute(text("SELECT id, name, max_attempts FROM jobs"))).all()
    assert {row.id: (row.name, row.max_attempts) for row in rows} == {
        job.id: (job.name, job.max_attempts) for job in jobs
    }
    assert [await stores.jobs.find_job(job.id) for job in jobs] == jobs


async def test_a_submission_the_database_refuses_fails_alone_and_those_sent_with_it_are_committed(
    stores: Stores, engine: AsyncEngine
) -> None:
    refused_index = 3
    outcomes = await asyncio.gather(
        *(
            stores.jobs.submit_job(
                NewJob(
                    name=f"job-{index}",
                    program="/bin/true",
                    arguments=[],
                    max_attempts=0 if index == refused_index else 1,  # breaks ck_jobs_max_attempts_positive
                )
            )
            for index in range(8)
        ),
        return_exceptions=True,
    )

    refused = outcomes[refused_index]
    assert isinstance(refused, exc.IntegrityError)
    assert "ck_jobs_max_attempts_positive" in str(refused)
    accepted = [outcome for outcome in outcomes if not isinstance(outcome, BaseException)]
    assert [job.name for job in accepted] == [f"job-{index}" for index in range(8) if index != refused_index]
    async with engine.connect() as connection:
        names = (await connection.scalars(text("SELECT name FROM jobs ORDER BY id"))).all()
    assert sorted(names) == sorted(job.name for job in accepted)


async def test_submit_jobs_returns_the_records_in_the_order_given_with_every_field(stores: Stores) -> None:
    india = timezone(timedelta(hours=5, minutes=30))
    later = datetime.now(india).replace(microsecond=123456) + timedelta(hours=1)
    earlier = datetime.now(UTC) - timedelta(hours=1)
    new_jobs = [
        NewJob(name="plain", program="/bin/true", arguments=[], max_attempts=1),
        NewJob(
            name='quoted "name" — ünïcødé',
            program="/bin/echo",
            arguments=AWKWARD_ARGUMENTS,
            max_attempts=3,
            program_name="echo",
            priority=7,
            timeout_seconds=2.5,
        ),
        NewJob(
            name="later",
            program="/bin/true",
            arguments=[""],
            max_attempts=2,
            priority=-3,
            run_at=later,
            timeout_seconds=0.001,
        ),
        NewJob(name="due already", program="/bin/false", arguments=("a", "b"), max_attempts=5, run_at=earlier),
        NewJob(name="plain", program="/bin/true", arguments=[], max_attempts=1),  # names need not be unique
    ]

    records = await stores.jobs.submit_jobs(new_jobs)

    assert len(records) == len(new_jobs)
    for new_job, record in zip(new_jobs, records, strict=True):
        assert (
            record.name,
            record.program,
            record.program_name,
            record.arguments,
            record.max_attempts,
            record.priority,
            record.run_at,
            record.timeout_seconds,
        ) == (
            new_job.name,
            new_job.program,
            new_job.program_name,
            list(new_job.arguments),
            new_job.max_attempts,
            new_job.priority,
            new_job.run_at,
            new_job.timeout_seconds,
        )
        assert record.status is JobStatus.QUEUED
        assert record.attempts_count == 0
        assert await stores.jobs.find_job(record.id) == record
    assert len({record.id for record in records}) == len(records)
    assert await stores.jobs.submit_jobs([]) == []

    # Due now unless run_at is still ahead; the highest priority first, arguments as given.
    claimed = await stores.attempts.claim_due_jobs(node_id="n1", limit=10)
    assert [claim.job_id for claim in claimed] == [records[index].id for index in (1, 0, 3, 4)]
    assert claimed[0].arguments == AWKWARD_ARGUMENTS


async def test_concurrent_outcomes_each_move_their_own_job_on(stores: Stores, engine: AsyncEngine) -> None:
    retried, completed, crashed, cancelled = await stores.jobs.submit_jobs(
        [
            NewJob(name="fails with an attempt left", program="/bin/false", arguments=[], max_attempts=2),
            NewJob(name="succeeds", program="/bin/true", arguments=[], max_attempts=1),
            NewJob(name="fails its last attempt", program="/bin/false", arguments=[], max_attempts=1),
            NewJob(name="fails after a cancel", program="/bin/false", arguments=[], max_attempts=3),
        ]
    )
    attempt_of = {
        claim.job_id: claim.attempt_id for claim in await stores.attempts.claim_due_jobs(node_id="n1", limit=10)
    }
    assert attempt_of.keys() == {retried.id, completed.id, crashed.id, cancelled.id}
    cancel = await stores.jobs.cancel_job(cancelled.id)
    assert cancel is not None
    assert cancel.effect is CancelEffect.REQUESTED
    now = datetime.now(UTC)
    failed = AttemptEnding(outcome=AttemptOutcome.FAILED, finished_at=now, exit_code=3, duration_ms=5)
    succeeded = AttemptEnding(outcome=AttemptOutcome.SUCCEEDED, finished_at=now, exit_code=0, duration_ms=7)
    policy = RetryPolicy(base_seconds=30.0, cap_seconds=30.0)
    # Given in an order unlike the jobs' ids, which order the statement's rows.
    endings = {cancelled.id: failed, crashed.id: failed, retried.id: failed, completed.id: succeeded}

    recorded = await asyncio.gather(
        *(
            stores.attempts.record_outcome(attempt_id=attempt_of[job_id], ending=ending, retry_policy=policy)
            for job_id, ending in endings.items()
        )
    )

    by_job = dict(zip(endings, recorded, strict=True))
    retried_outcome = by_job[retried.id]
    assert retried_outcome is not None
    assert retried_outcome.retry_in_seconds is not None
    assert 0.0 <= retried_outcome.retry_in_seconds <= 30.0
    assert by_job == {
        retried.id: RecordedOutcome(retried.id, 1, JobStatus.RETRIED, retried_outcome.retry_in_seconds),
        completed.id: RecordedOutcome(completed.id, 1, JobStatus.COMPLETED),
        crashed.id: RecordedOutcome(crashed.id, 1, JobStatus.CRASHED),
        cancelled.id: RecordedOutcome(cancelled.id, 1, JobStatus.CANCELLED),
    }
    for job_id, ending in endings.items():
        job = await stores.jobs.find_job(job_id)
        assert job is not None
        outcome = by_job[job_id]
        assert outcome is not None
        assert job.status is outcome.job_status
        [attempt] = await stores.jobs.list_attempts(job_id)
        assert (attempt.outcome, attempt.exit_code, attempt.duration_ms) == (
            ending.outcome,
            ending.exit_code,
            ending.duration_ms,
        )
        if job.status.is_final:
            assert (job.finished_at, job.exit_code) == (ending.finished_at, ending.exit_code)
        else:
            assert (job.finished_at, job.exit_code) == (None, None)
    async with engine.connect() as connection:
        due_in = await connection.scalar(
            text("SELECT extract(epoch FROM next_attempt_at - now())::float8 FROM jobs WHERE id = :id"),
            {"id": retried.id},
        )
    assert due_in == pytest.approx(retried_outcome.retry_in_seconds, abs=2.0)


async def _plan_joins_by_hashing(engine: AsyncEngine) -> None:
    """Make this test's database plan joins as hash joins, on every connection opened from now on."""
    async with engine.connect() as connection:
        await connection.execute(
            text("""
                DO $$ BEGIN
                    EXECUTE format('ALTER DATABASE %I SET enable_nestloop = off', current_database());
                    EXECUTE format('ALTER DATABASE %I SET enable_mergejoin = off', current_database());
                END $$
            """)
        )
        await connection.commit()
    await engine.dispose()  # the pooled connections were opened with the old settings


@pytest.mark.parametrize("join_plan", ["default", "hash"])
async def test_the_same_attempt_recorded_twice_at_once_is_written_once(
    stores: Stores, engine: AsyncEngine, join_plan: str
) -> None:
    # Which of two joined rows an UPDATE ... FROM uses depends on the plan; the result must not.
    if join_plan == "hash":
        await _plan_joins_by_hashing(engine)
    job = await stores.jobs.submit_job(NewJob(name="watched twice", program="/bin/false", arguments=[], max_attempts=2))
    [claimed] = await stores.attempts.claim_due_jobs(node_id="n1", limit=5)
    now = datetime.now(UTC)
    failed = AttemptEnding(outcome=AttemptOutcome.FAILED, finished_at=now, exit_code=3, duration_ms=5)
    succeeded = AttemptEnding(outcome=AttemptOutcome.SUCCEEDED, finished_at=now, exit_code=0, duration_ms=7)

    first, second = await asyncio.gather(
        stores.attempts.record_outcome(attempt_id=claimed.attempt_id, ending=failed, retry_policy=NO_WAIT),
        stores.attempts.record_outcome(attempt_id=claimed.attempt_id, ending=succeeded, retry_policy=NO_WAIT),
    )

    assert (first is None) != (second is None), (first, second)
    recorded, written = (first, failed) if first is not None else (second, succeeded)
    assert recorded is not None
    assert recorded.job_status is (JobStatus.RETRIED if written is failed else JobStatus.COMPLETED)
    # The attempt row and the job agree on which of the two endings was the one written.
    [attempt] = await stores.jobs.list_attempts(job.id)
    assert (attempt.outcome, attempt.exit_code) == (written.outcome, written.exit_code)
    after = await stores.jobs.find_job(job.id)
    assert after is not None
    assert after.status is recorded.job_status
    assert after.attempts_count == 1


async def test_concurrent_process_starts_each_mark_their_own_attempt_and_leave_ended_ones_alone(
    stores: Stores,
) -> None:
    await stores.jobs.submit_jobs(
        [NewJob(name=f"started-{index}", program="/bin/true", arguments=[], max_attempts=1) for index in range(4)]
    )
    claimed = await stores.attempts.claim_due_jobs(node_id="n1", limit=10)
    assert len(claimed) == 4
    ended = claimed[0]
    ending = AttemptEnding(outcome=AttemptOutcome.SPAWN_FAILED, finished_at=datetime.now(UTC), error="no such file")
    assert await stores.attempts.record_outcome(attempt_id=ended.attempt_id, ending=ending, retry_policy=NO_WAIT)
    base = datetime.now(UTC).replace(microsecond=0)

    await asyncio.gather(
        *(
            stores.attempts.record_process_started(
                attempt_id=claim.attempt_id,
                pid=10_000 + position,
                process_started_at=base + timedelta(seconds=position),
                started_at=base + timedelta(seconds=position, milliseconds=500),
            )
            for position, claim in enumerate(claimed)
        )
    )

    for position, claim in enumerate(claimed):
        [attempt] = await stores.jobs.list_attempts(claim.job_id)
        if claim is ended:  # fenced: no longer running, so no process to remember
            assert (attempt.pid, attempt.process_started_at) == (None, None)
            continue
        assert (attempt.pid, attempt.process_started_at, attempt.started_at) == (
            10_000 + position,
            base + timedelta(seconds=position),
            base + timedelta(seconds=position, milliseconds=500),
        )
