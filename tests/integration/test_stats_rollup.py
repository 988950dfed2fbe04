"""The /stats rollup, kept up to date as attempts finish, always equals a full scan of the history."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from datetime import UTC, datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.domain.records import AttemptEnding, NewJob
from service.domain.retry import NO_WAIT
from service.domain.status import AttemptOutcome, JobStatus
from service.stats.compute import compute_stats
from service.stats.discovery_sql import REBUILD_MIN_VALUE_ATTEMPTS, RECENT_PREFIX, SAMPLE_DIMENSION, VALUE_PREFIX
from service.stats.filters import StatsFilters
from service.stats.patterns import PATTERNS, Pattern
from service.stats.query import CountRow
from service.stats.rollup import read_rollup, refresh_rollup, scan_counts
from tests.support.stats_history import CraftedAttempt, CraftedJob, S, insert_jobs, use_utc
from tests.support.stores import Stores

NODE = "rollup-test-node"
_COMPLETED = JobStatus.COMPLETED
ENDINGS = [
    AttemptOutcome.SUCCEEDED,
    AttemptOutcome.SUCCEEDED,
    AttemptOutcome.FAILED,
    AttemptOutcome.KILLED,
    AttemptOutcome.LOST,
]


def _nonzero(rows: list[CountRow]) -> Counter[tuple[str, str, str, int, int]]:
    """Rows as comparable values; a rollup keeps a count that went back to zero (a job that left 'queued')."""
    return Counter((row.program, row.dimension, repr(row.key), row.total, row.successes) for row in rows if row.total)


async def rollup_rows(engine: AsyncEngine) -> list[CountRow]:
    async with engine.begin() as connection:
        await refresh_rollup(connection, PATTERNS)
        return await read_rollup(connection, None)


async def scanned_rows(engine: AsyncEngine) -> list[CountRow]:
    """The scan's rows of the rollup's shape (without the findings' value, sample and recent rows, which it adds)."""
    async with engine.connect() as connection:
        rows = await scan_counts(connection, PATTERNS, StatsFilters(), datetime.now(UTC))
    return [
        row
        for row in rows
        if row.dimension != SAMPLE_DIMENSION and not row.dimension.startswith((VALUE_PREFIX, RECENT_PREFIX))
    ]


_VALUE_TABLES = {
    "stats_rollup_values": "SELECT scope, dimension, key::text, total, successes FROM stats_rollup_values",
    "stats_rollup_hours": "SELECT scope, hour, kind, value, total, successes FROM stats_rollup_hours",
}


async def value_rollup(engine: AsyncEngine) -> dict[str, Counter[tuple[object, ...]]]:
    async with engine.connect() as connection:
        return {
            table: Counter(tuple(row) for row in (await connection.execute(text(sql))).all())
            for table, sql in _VALUE_TABLES.items()
        }


async def assert_rollup_equals_scan(engine: AsyncEngine) -> None:
    rolled_up, scanned = await rollup_rows(engine), await scanned_rows(engine)
    assert _nonzero(rolled_up) == _nonzero(scanned)
    # The findings' counts per value and per hour, folded as they came, equal the same counts rebuilt from scratch,
    # but for the values a rebuild leaves out (fewer than REBUILD_MIN_VALUE_ATTEMPTS attempts): those may be short of
    # what they had then.
    folded = await value_rollup(engine)
    async with engine.begin() as connection:
        await connection.execute(text("INSERT INTO stats_rollup_invalidations (reason) VALUES ('test: rebuild')"))
    await rollup_rows(engine)
    rebuilt = await value_rollup(engine)
    assert rebuilt["stats_rollup_hours"] == folded["stats_rollup_hours"]
    shortfall = REBUILD_MIN_VALUE_ATTEMPTS - 1
    folded_values = {row[:3]: (int(str(row[3])), int(str(row[4]))) for row in folded["stats_rollup_values"]}
    rebuilt_values = {row[:3]: (int(str(row[3])), int(str(row[4]))) for row in rebuilt["stats_rollup_values"]}
    for value, (total, successes) in rebuilt_values.items():
        assert total >= REBUILD_MIN_VALUE_ATTEMPTS
        folded_total, folded_successes = folded_values.get(value, (0, 0))
        assert total - shortfall <= folded_total <= total, value
        assert successes - shortfall <= folded_successes <= successes, value
    assert all(folded_values[value][0] < REBUILD_MIN_VALUE_ATTEMPTS for value in folded_values.keys() - rebuilt_values)


async def run_round(stores: Stores, generator: random.Random, *, submit: int) -> None:
    """Submit jobs, then claim what is due and end every claimed attempt the way the supervisor would record it."""
    for number in range(submit):
        await stores.jobs.submit_job(
            NewJob(
                name=generator.choice(["backup", f"task-{number}", "nightly-report-generation", "x"]),
                program=generator.choice(["/bin/true", "/usr/bin/env"]),
                arguments=[f"a{i}" for i in range(generator.randint(0, 3))],
                max_attempts=generator.randint(1, 3),
            )
        )
    for claimed in await stores.attempts.claim_due_jobs(node_id=NODE, limit=1000):
        if generator.random() < 0.15:
            continue  # still running at the end of the round
        outcome = generator.choice(ENDINGS)
        ending = AttemptEnding(
            outcome=outcome,
            finished_at=datetime.now(UTC),
            exit_code={AttemptOutcome.SUCCEEDED: 0, AttemptOutcome.FAILED: 3}.get(outcome),
            signal=15 if outcome is AttemptOutcome.KILLED else None,
            duration_ms=generator.choice([None, 5, 800, 1500]) if outcome is AttemptOutcome.LOST else 1200,
        )
        assert await stores.attempts.record_outcome(attempt_id=claimed.attempt_id, ending=ending, retry_policy=NO_WAIT)


async def test_the_rollup_follows_the_history_as_it_grows(engine: AsyncEngine, stores: Stores) -> None:
    await use_utc(engine)
    generator = random.Random(5)
    for submit in (30, 20, 0, 10):
        await run_round(stores, generator, submit=submit)
        # Folded between rounds: each round's new jobs, status changes and finished attempts.
        await assert_rollup_equals_scan(engine)

    async with engine.connect() as connection:
        finished = (await connection.execute(text("SELECT count(*) FROM attempt_facts"))).scalar_one()
        pending = (await connection.execute(text("SELECT count(*) FROM stats_rollup_pending_attempts"))).scalar_one()
    assert finished > 40  # the rounds made a real history
    assert pending == 0
    report = await compute_stats(engine)
    assert report.computed_from == "rollup"
    assert report.finished_attempts == finished


async def test_requests_racing_to_fold_count_each_attempt_once(engine: AsyncEngine, stores: Stores) -> None:
    await use_utc(engine)
    generator = random.Random(11)
    await compute_stats(engine)  # the rollup exists: from now on, requests fold

    async def keep_asking() -> None:
        for _ in range(5):
            await compute_stats(engine)

    await asyncio.gather(run_round(stores, generator, submit=40), keep_asking(), keep_asking(), keep_asking())
    await run_round(stores, generator, submit=0)

    await assert_rollup_equals_scan(engine)


async def test_an_edited_or_deleted_finished_attempt_forces_a_rebuild(engine: AsyncEngine) -> None:
    await use_utc(engine)
    job_ids = await insert_jobs(
        engine,
        [
            CraftedJob("keep", [], _COMPLETED, [CraftedAttempt(S, 10)]),
            CraftedJob("gone", ["x"], _COMPLETED, [CraftedAttempt(S, 20)]),
        ],
    )
    assert (await compute_stats(engine)).successful_attempts == 2

    async with engine.begin() as connection:
        await connection.execute(
            text("UPDATE attempts SET outcome = 'failed', exit_code = 1 WHERE job_id = :id"), {"id": job_ids[0]}
        )
    async with engine.begin() as connection:
        refresh = await refresh_rollup(connection, PATTERNS)
    assert refresh.rebuilt
    await assert_rollup_equals_scan(engine)
    assert (await compute_stats(engine)).successful_attempts == 1

    async with engine.begin() as connection:
        await connection.execute(text("DELETE FROM jobs WHERE id = :id"), {"id": job_ids[1]})
    report = await compute_stats(engine)
    assert (report.total_jobs, report.finished_attempts, report.successful_attempts) == (1, 1, 0)
    await assert_rollup_equals_scan(engine)

    async with engine.begin() as connection:
        assert not (await refresh_rollup(connection, PATTERNS)).rebuilt  # nothing changed since: no rebuild


async def test_another_pattern_registry_rebuilds_the_rollup(engine: AsyncEngine) -> None:
    await use_utc(engine)
    await insert_jobs(engine, [CraftedJob("one", [], _COMPLETED, [CraftedAttempt(S, 3000)])])
    await compute_stats(engine)
    extra = Pattern("slow", "Slower than 2 seconds", "duration_ms > 2000")

    async with engine.begin() as connection:
        assert (await refresh_rollup(connection, [*PATTERNS, extra])).rebuilt
    report = await compute_stats(engine, patterns=[*PATTERNS, extra])
    [finding] = [f for f in report.patterns if f.pattern.id == "slow"]
    assert (finding.match_count, finding.success_count) == (1, 1)


async def test_a_large_backlog_is_rebuilt_rather_than_folded(engine: AsyncEngine) -> None:
    await use_utc(engine)
    await compute_stats(engine)  # an empty rollup exists
    await insert_jobs(engine, [CraftedJob(f"job-{n}", [], _COMPLETED, [CraftedAttempt(S, n)]) for n in range(12)])

    async with engine.begin() as connection:
        refresh = await refresh_rollup(connection, PATTERNS, rebuild_pending_minimum=10)
    assert refresh.rebuilt  # 12 pending, more than a quarter of the 0 already counted
    await assert_rollup_equals_scan(engine)

    await insert_jobs(engine, [CraftedJob(f"more-{n}", [], _COMPLETED, [CraftedAttempt(S, n)]) for n in range(3)])
    async with engine.begin() as connection:
        refresh = await refresh_rollup(connection, PATTERNS, rebuild_pending_minimum=10)
    assert not refresh.rebuilt
    await assert_rollup_equals_scan(engine)
