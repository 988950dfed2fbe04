"""Nodes on one database, through the real stores: concurrent claims never take a job twice, one NOTIFY per
committing transaction, writes fenced by the lease, a dead node's attempts settled once by one live node, and a node
forgotten."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from service.db.connections import Database
from service.db.engine import create_engine, libpq_url
from service.db.fencing import LeaseLapsedError
from service.db.node_store import NodeNotFoundError, NodeRegistration, NodeStillAliveError, NodeStore
from service.db.notifications import JOBS_DUE_CHANNEL
from service.domain.records import AttemptEnding, NewJob
from service.domain.retry import NO_WAIT
from service.domain.status import AttemptOutcome
from tests.support.processes import wait_until
from tests.support.stores import Stores

LEASE_SECONDS = 30.0
MARGIN_SECONDS = 0.5
CLAIMERS = 8
CLAIM_LIMIT = 25
JOBS = 400


def _new_job(index: int, max_attempts: int = 2) -> NewJob:
    return NewJob(name=f"task-{index}", program="/bin/true", arguments=[], max_attempts=max_attempts)


def _registration(node_id: str) -> NodeRegistration:
    return NodeRegistration(id=node_id, hostname="host", pid=1, version="test", api_url=None, slots=10)


async def _execute(database_url: str, query: str, *arguments: object) -> None:
    connection = await asyncpg.connect(libpq_url(database_url))
    try:
        await connection.execute(query, *arguments)
    finally:
        await connection.close()


async def _lapse(database_url: str, node_id: str, seconds_ago: float) -> None:
    await _execute(
        database_url,
        "UPDATE nodes SET lease_until = now() - make_interval(secs => $2::float8) WHERE id = $1",
        node_id,
        seconds_ago,
    )


async def test_concurrent_claimers_on_separate_connections_never_claim_a_job_twice(database_url: str) -> None:
    engines = [create_engine(database_url, pool_size=1) for _ in range(CLAIMERS)]
    try:
        claimers = [Stores.over(engine) for engine in engines]
        await claimers[0].jobs.submit_jobs([_new_job(index) for index in range(JOBS)])
        claimed: Counter[int] = Counter()
        while True:
            rounds = await asyncio.gather(
                *(
                    stores.attempts.claim_due_jobs(node_id=f"node-{index}", limit=CLAIM_LIMIT)
                    for index, stores in enumerate(claimers)
                )
            )
            batch = [attempt.job_id for claimed_now in rounds for attempt in claimed_now]
            if not batch:
                break
            claimed.update(batch)
        twice = sorted(job_id for job_id, count in claimed.items() if count > 1)
        assert not twice, f"{len(twice)} jobs claimed more than once"
        assert len(claimed) == JOBS
    finally:
        for engine in engines:
            await engine.dispose()


async def test_one_notification_per_committing_transaction_not_per_job(database_url: str, stores: Stores) -> None:
    received: list[str] = []
    listener = await asyncpg.connect(libpq_url(database_url))
    await listener.add_listener(JOBS_DUE_CHANNEL, lambda *_: received.append("due"))
    try:
        await stores.jobs.submit_jobs([_new_job(index) for index in range(100)])
        await wait_until(lambda: len(received) >= 1, "the batch's notification arrives")
        await asyncio.sleep(0.5)  # any further notification would have arrived by now
        assert len(received) == 1, "one INSERT of 100 jobs, one transaction: one NOTIFY"

        received.clear()
        # Concurrent single submissions share transactions (group commit): far fewer notifications than jobs.
        await asyncio.gather(*(stores.jobs.submit_job(_new_job(index)) for index in range(50)))
        await wait_until(lambda: len(received) >= 1, "the notifications arrive")
        await asyncio.sleep(0.5)
        assert 1 <= len(received) < 50, f"{len(received)} notifications for 50 jobs"
    finally:
        await listener.close()


async def test_a_node_whose_lease_lapsed_claims_nothing_and_records_nothing_until_it_renews(
    database_url: str, engine: AsyncEngine, stores: Stores
) -> None:
    nodes = NodeStore(Database(engine))
    await nodes.register(_registration("node-a"), lease_seconds=LEASE_SECONDS)
    await stores.jobs.submit_jobs([_new_job(index) for index in range(3)])
    (attempt,) = await stores.attempts.claim_due_jobs(node_id="node-a", limit=1)

    await _lapse(database_url, "node-a", 1)
    assert await stores.attempts.claim_due_jobs(node_id="node-a", limit=10) == []
    now = datetime.now(UTC)
    with pytest.raises(LeaseLapsedError):
        await stores.attempts.record_process_started(
            attempt_id=attempt.attempt_id, pid=12345, process_started_at=now, started_at=now
        )
    ending = AttemptEnding(outcome=AttemptOutcome.SUCCEEDED, finished_at=now, exit_code=0, duration_ms=5)
    with pytest.raises(LeaseLapsedError):
        await stores.attempts.record_outcome(attempt_id=attempt.attempt_id, ending=ending, retry_policy=NO_WAIT)
    # Another node is not fenced by node-a's lease.
    assert len(await stores.attempts.claim_due_jobs(node_id="node-b", limit=1)) == 1

    assert await nodes.renew("node-a", lease_seconds=LEASE_SECONDS)
    recorded = await stores.attempts.record_outcome(attempt_id=attempt.attempt_id, ending=ending, retry_policy=NO_WAIT)
    assert recorded is not None
    assert recorded.job_status is not None
    assert recorded.job_status.value == "completed"


async def test_a_dead_nodes_attempts_are_settled_once_by_one_live_node_by_the_state_machine(
    database_url: str, engine: AsyncEngine, stores: Stores
) -> None:
    nodes = NodeStore(Database(engine))
    for node_id in ("node-a", "node-b", "node-c"):
        await nodes.register(_registration(node_id), lease_seconds=LEASE_SECONDS)
    retried_job = await stores.jobs.submit_job(_new_job(1, max_attempts=2))
    last_attempt_job = await stores.jobs.submit_job(_new_job(2, max_attempts=1))
    cancelled_job = await stores.jobs.submit_job(_new_job(3, max_attempts=2))
    on_b = await stores.attempts.claim_due_jobs(node_id="node-b", limit=3)
    assert len(on_b) == 3
    await stores.jobs.cancel_job(cancelled_job.id)
    live_job = await stores.jobs.submit_job(_new_job(4))
    (on_a,) = await stores.attempts.claim_due_jobs(node_id="node-a", limit=1)
    assert on_a.job_id == live_job.id

    # Within the margin past its lease, node-b is not dead yet.
    await _lapse(database_url, "node-b", MARGIN_SECONDS / 5)
    report = await nodes.rescue(rescuer_id="node-a", margin_seconds=MARGIN_SECONDS, retry_policy=NO_WAIT)
    assert report.nodes == []

    await _lapse(database_url, "node-b", MARGIN_SECONDS * 2)
    reports = await asyncio.gather(
        *(
            NodeStore(Database(engine)).rescue(rescuer_id=rescuer, margin_seconds=MARGIN_SECONDS, retry_policy=NO_WAIT)
            for rescuer in ("node-a", "node-c", "node-a", "node-c")
        )
    )
    assert sorted(node for report in reports for node in report.nodes) == ["node-b"], "declared dead exactly once"
    assert sum(report.lost for report in reports) == 3
    assert sum(report.retried for report in reports) == 1

    statuses = {job.id: (await stores.jobs.find_job(job.id)).status.value for job in (retried_job, last_attempt_job)}  # type: ignore[union-attr]
    assert statuses == {retried_job.id: "retried", last_attempt_job.id: "crashed"}
    assert (await stores.jobs.find_job(cancelled_job.id)).status.value == "cancelled"  # type: ignore[union-attr]
    (lost,) = await stores.jobs.list_attempts(retried_job.id)
    assert lost.outcome is AttemptOutcome.LOST
    assert lost.error is not None
    assert "node 'node-b' stopped renewing its lease, which ended at " in lost.error
    assert "node 'node-a' declared it dead" in lost.error or "node 'node-c' declared it dead" in lost.error
    (running_on_a,) = await stores.jobs.list_attempts(live_job.id)
    assert running_on_a.outcome is AttemptOutcome.RUNNING, "a live node's attempt is never touched"
    assert (await nodes.find_node("node-b")).state == "dead"  # type: ignore[union-attr]

    # node-b comes back: it writes nothing over what the rescue wrote, and learns which attempts were taken.
    ending = AttemptEnding(outcome=AttemptOutcome.SUCCEEDED, finished_at=datetime.now(UTC), exit_code=0)
    assert not await nodes.renew("node-b", lease_seconds=LEASE_SECONDS)
    assert await nodes.taken_attempts([attempt.attempt_id for attempt in on_b]) == sorted(
        attempt.attempt_id for attempt in on_b
    )
    before = await nodes.register(_registration("node-b"), lease_seconds=LEASE_SECONDS)
    assert before is not None
    assert before.state == "dead"
    for attempt in on_b:
        assert (
            await stores.attempts.record_outcome(attempt_id=attempt.attempt_id, ending=ending, retry_policy=NO_WAIT)
            is None
        )


async def test_a_rescuer_without_a_valid_lease_declares_nobody_dead(database_url: str, engine: AsyncEngine) -> None:
    nodes = NodeStore(Database(engine))
    for node_id in ("node-a", "node-b"):
        await nodes.register(_registration(node_id), lease_seconds=LEASE_SECONDS)
    await _lapse(database_url, "node-a", 10)
    await _lapse(database_url, "node-b", 10)
    report = await nodes.rescue(rescuer_id="node-a", margin_seconds=MARGIN_SECONDS, retry_policy=NO_WAIT)
    assert report.nodes == []


async def test_forgetting_a_node(database_url: str, engine: AsyncEngine, stores: Stores) -> None:
    nodes = NodeStore(Database(engine))
    await nodes.register(_registration("node-b"), lease_seconds=LEASE_SECONDS)
    job = await stores.jobs.submit_job(_new_job(1))
    await stores.attempts.claim_due_jobs(node_id="node-b", limit=1)
    with pytest.raises(NodeStillAliveError):
        await nodes.forget("node-b", by="a test", retry_policy=NO_WAIT)
    with pytest.raises(NodeNotFoundError):
        await nodes.forget("node-z", by="a test", retry_policy=NO_WAIT)

    await _lapse(database_url, "node-b", 1)
    report = await nodes.forget("node-b", by="a test", retry_policy=NO_WAIT)
    assert (report.lost, report.retried) == (1, 1)
    assert await nodes.find_node("node-b") is None
    (attempt,) = await stores.jobs.list_attempts(job.id)
    assert attempt.outcome is AttemptOutcome.LOST
    assert attempt.error is not None
    assert "node 'node-b' was forgotten by a test" in attempt.error


async def test_a_program_whose_attempt_was_taken_over_before_it_started_is_never_let_go(
    database_url: str, engine: AsyncEngine, stores: Stores
) -> None:
    nodes = NodeStore(Database(engine))
    for node_id in ("node-a", "node-b"):
        await nodes.register(_registration(node_id), lease_seconds=LEASE_SECONDS)
    await stores.jobs.submit_job(_new_job(1))
    (claimed,) = await stores.attempts.claim_due_jobs(node_id="node-b", limit=1)
    await _lapse(database_url, "node-b", MARGIN_SECONDS * 2)
    assert (await nodes.rescue(rescuer_id="node-a", margin_seconds=MARGIN_SECONDS, retry_policy=NO_WAIT)).lost == 1
    await nodes.register(_registration("node-b"), lease_seconds=LEASE_SECONDS)
    now = datetime.now(UTC)
    started = await stores.attempts.record_process_started(
        attempt_id=claimed.attempt_id, pid=12345, process_started_at=now, started_at=now
    )
    assert started is False, "the supervisor abandons the keeper: its program never runs"
