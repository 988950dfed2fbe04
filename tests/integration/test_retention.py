"""Retention and the background /stats drain, against a real PostgreSQL and real processes: old output files and
finished jobs go in batches, and /stats stays equal to a full scan of what is left."""

from __future__ import annotations

import random
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.db.connections import Database
from service.db.retention_store import RetentionStore
from service.domain.paths import attempt_files
from service.runner.launcher import ProcessLauncher
from service.stats.rollup import QUEUE_TABLES, ROLLUP_LOCK_KEY, read_rollup
from service.supervisor.pruner import Pruner, RetentionConfig
from service.supervisor.stats_drainer import StatsDrainer
from service.supervisor.supervisor import Supervisor
from tests.integration.test_output_files import entries_under
from tests.integration.test_stats_rollup import _nonzero, run_round, scanned_rows
from tests.support.processes import write_script
from tests.support.stats_history import use_utc
from tests.support.stores import Stores
from tests.support.supervision import Supervisors, submit, supervisor_config, wait_for_final

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="uses /bin/sh scripts")

NODE_ID = "retention-node"
OUTPUT_DAYS = 14.0
JOB_DAYS = 30.0


async def queued_rows(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        counts = [
            (await connection.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one() for table in QUEUE_TABLES
        ]
    return sum(counts)


async def assert_stored_rollup_equals_scan(engine: AsyncEngine) -> None:
    """The rollup as stored, not refreshed first: what the drainer left is already the whole truth."""
    async with engine.connect() as connection:
        stored = await read_rollup(connection, None)
    assert _nonzero(stored) == _nonzero(await scanned_rows(engine))


# --- the /stats drainer -----------------------------------------------------------------------------------------


async def test_the_drainer_empties_the_queues_and_leaves_the_rollup_equal_to_a_scan(
    engine: AsyncEngine, stores: Stores
) -> None:
    await use_utc(engine)
    generator = random.Random(7)
    drainer = StatsDrainer(engine, interval_seconds=60)
    for submitted in (30, 10, 0):
        await run_round(stores, generator, submit=submitted)
        queued = await queued_rows(engine)
        assert queued > 0
        report = await drainer.run_once()
        assert (report.drained, report.skipped) == (queued, False)
        assert await queued_rows(engine) == 0
        await assert_stored_rollup_equals_scan(engine)
    assert (await drainer.run_once()).drained == 0  # nothing new


async def test_a_drainer_that_finds_the_rollup_locked_leaves_it_to_the_holder(
    engine: AsyncEngine, stores: Stores
) -> None:
    await run_round(stores, random.Random(3), submit=5)
    queued = await queued_rows(engine)
    async with engine.begin() as holder:
        await holder.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ROLLUP_LOCK_KEY})
        report = await StatsDrainer(engine, interval_seconds=60).run_once()
    assert (report.drained, report.skipped) == (0, True)
    assert await queued_rows(engine) == queued


# --- the pruner -------------------------------------------------------------------------------------------------


@pytest.fixture
async def supervisor(
    engine: AsyncEngine, stores: Stores, launcher: ProcessLauncher, tmp_path: Path
) -> AsyncIterator[Supervisor]:
    # Before the supervisor starts: use_utc disposes of the engine's pool, which must not happen under a claim round.
    await use_utc(engine)
    supervisors = Supervisors(stores, launcher)
    created = supervisors.create(supervisor_config(NODE_ID, tmp_path / "output"))
    await created.start()
    yield created
    await supervisors.cleanup()


def pruner(engine: AsyncEngine, tmp_path: Path, **overrides: object) -> Pruner:
    values: dict[str, object] = {
        "node_id": NODE_ID,
        "output_dir": tmp_path / "output",
        "output_retention_days": OUTPUT_DAYS,
        "batch_size": 2,  # several batches for a handful of jobs
    }
    return Pruner(RetentionStore(Database(engine)), RetentionConfig(**(values | overrides)))  # type: ignore[arg-type]


async def run_jobs(stores: Stores, supervisor: Supervisor, tmp_path: Path, count: int) -> list[int]:
    talks = write_script(tmp_path, "talks.sh", 'echo "out $1"; echo "err $1" >&2; exit "$2"\n')
    jobs = [await submit(stores, talks, str(n), str(n % 2), name=f"talks-{n}") for n in range(count)]
    for job in jobs:
        await wait_for_final(stores, job.id)
    assert await supervisor.wait_until_idle(10)
    return [job.id for job in jobs]


async def test_output_past_its_retention_is_removed_and_its_tails_stay(
    engine: AsyncEngine, stores: Stores, supervisor: Supervisor, tmp_path: Path
) -> None:
    job_ids = await run_jobs(stores, supervisor, tmp_path, 5)
    output_dir = tmp_path / "output"
    assert entries_under(output_dir)  # each printed: its files are kept for now
    prune = pruner(engine, tmp_path)

    too_early = await prune.run_once(now=datetime.now(UTC) + timedelta(days=OUTPUT_DAYS - 1))
    assert (too_early.attempts_cleared, too_early.jobs_deleted) == (0, 0)
    assert all(attempt_files(output_dir, job_id, 1).stdout.exists() for job_id in job_ids)

    report = await prune.run_once(now=datetime.now(UTC) + timedelta(days=OUTPUT_DAYS + 1))
    assert (report.attempts_cleared, report.jobs_deleted) == (len(job_ids), 0)  # no JOB_RETENTION_DAYS
    assert entries_under(output_dir) == []
    [attempt] = await stores.jobs.list_attempts(job_ids[3])
    assert await stores.jobs.attempt_output_tail(attempt.id, "stdout") == "out 3\n"
    assert (await prune.run_once(now=datetime.now(UTC) + timedelta(days=OUTPUT_DAYS + 1))).attempts_cleared == 0


async def test_finished_jobs_past_their_retention_are_deleted_and_stats_stay_equal_to_a_scan(
    engine: AsyncEngine, stores: Stores, supervisor: Supervisor, tmp_path: Path
) -> None:
    old_ids = await run_jobs(stores, supervisor, tmp_path, 5)
    drainer = StatsDrainer(engine, interval_seconds=60)
    await drainer.run_once()  # the rollup counts the old jobs
    waiting = write_script(tmp_path, "never.sh", "exit 0\n")
    later = await submit(stores, waiting, name="not-yet-due", run_at=datetime.now(UTC) + timedelta(days=365))

    report = await pruner(engine, tmp_path, job_retention_days=JOB_DAYS).run_once(
        now=datetime.now(UTC) + timedelta(days=JOB_DAYS + 1)
    )

    assert (report.attempts_cleared, report.jobs_deleted) == (5, 5)
    assert [await stores.jobs.find_job(job_id) for job_id in old_ids] == [None] * 5
    assert await stores.jobs.find_job(later.id) is not None  # not final: kept
    async with engine.connect() as connection:
        assert (await connection.execute(text("SELECT count(*) FROM attempts"))).scalar_one() == 0
    assert (await drainer.run_once()).drained > 0
    await assert_stored_rollup_equals_scan(engine)


async def test_a_job_whose_output_is_still_on_another_node_is_kept(
    engine: AsyncEngine, stores: Stores, supervisor: Supervisor, tmp_path: Path
) -> None:
    [job_id] = await run_jobs(stores, supervisor, tmp_path, 1)
    later = datetime.now(UTC) + timedelta(days=JOB_DAYS + 1)

    elsewhere = await pruner(engine, tmp_path, node_id="another-node", job_retention_days=JOB_DAYS).run_once(now=later)

    assert (elsewhere.attempts_cleared, elsewhere.jobs_deleted) == (0, 0)
    assert await stores.jobs.find_job(job_id) is not None
    here = await pruner(engine, tmp_path, job_retention_days=JOB_DAYS).run_once(now=later)
    assert (here.attempts_cleared, here.jobs_deleted) == (1, 1)
