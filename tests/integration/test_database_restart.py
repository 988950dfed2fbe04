"""A supervisor through a PostgreSQL restart: an outcome observed while the server is down, then starting up
(refusing connections with "not accepting connections"), is recorded once it is back, and exactly once; an
attempt left unrecorded is found by the outcome sweep."""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.db.engine import Timeouts, create_engine
from service.db.migrate import upgrade_to_head
from service.domain.identifiers import format_job_id
from service.domain.status import AttemptOutcome, JobStatus
from service.runner.launcher import ProcessLauncher
from service.supervisor.reconciler import Reconciler
from service.supervisor.sweeper import OutcomeSweeper
from tests.support.clusters import Cluster
from tests.support.processes import wait_until, write_script
from tests.support.stores import Stores
from tests.support.supervision import Supervisors, submit, supervisor_config, wait_for_final, wait_for_pid

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="uses /bin/sh scripts and pg_ctl")

NODE_ID = "restart-node"
OUTAGE_SECONDS = 30.0
JOB_SECONDS = "1"


@pytest.fixture
async def cluster_engine(private_cluster: Cluster) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(private_cluster.url, pool_size=2, timeouts=Timeouts(connect_seconds=3.0))
    await upgrade_to_head(engine)
    yield engine
    await engine.dispose()


def _job_program(tmp_path: Path) -> Path:
    return write_script(tmp_path, "job.sh", f'echo "$JOB_ID $JOB_ATTEMPT" >> "$1"\nsleep {JOB_SECONDS}\nexit 0\n')


async def test_an_outcome_observed_during_a_restart_is_recorded_once_the_database_is_back(
    private_cluster: Cluster,
    cluster_engine: AsyncEngine,
    launcher: ProcessLauncher,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="service.supervisor.supervisor")
    stores = Stores.over(cluster_engine)
    supervisors = Supervisors(stores, launcher)
    executions = tmp_path / "executions"
    supervisor = supervisors.create(supervisor_config(NODE_ID, tmp_path / "output"))
    try:
        job = await submit(stores, _job_program(tmp_path), str(executions))
        assert await supervisor.run_once() == 1
        await wait_for_pid(stores, job.id)

        private_cluster.stop()
        # The program ends while the server is down: its outcome writer retries through refused connections.
        await wait_until(lambda: supervisor.running_count == 0, "the job's process never ended", OUTAGE_SECONDS)
        private_cluster.start_as_standby()
        # Starting up: every connection is refused with SQLSTATE 57P03, which must count as "try again".
        await wait_until(
            lambda: "CannotConnectNowError" in caplog.text,
            f"the outcome writer never met the server starting up:\n{caplog.text}",
            OUTAGE_SECONDS,
        )
        private_cluster.promote()

        final = await wait_for_final(stores, job.id, OUTAGE_SECONDS)
        attempts = await stores.jobs.list_attempts(job.id)
    finally:
        await supervisors.cleanup()

    assert "outcome-writer" not in caplog.text or "failed" not in caplog.text, caplog.text
    assert final.status is JobStatus.COMPLETED
    assert [attempt.outcome for attempt in attempts] == [AttemptOutcome.SUCCEEDED]
    assert executions.read_text().splitlines() == [f"{format_job_id(final.id)} 1"]


async def test_the_sweep_records_an_attempt_nobody_watches_from_its_exit_status_file(
    private_cluster: Cluster, cluster_engine: AsyncEngine, launcher: ProcessLauncher, tmp_path: Path
) -> None:
    stores = Stores.over(cluster_engine)
    supervisors = Supervisors(stores, launcher)
    executions = tmp_path / "executions"
    output_dir = tmp_path / "output"
    config = supervisor_config(NODE_ID, output_dir)
    supervisor = supervisors.create(config)
    try:
        job = await submit(stores, _job_program(tmp_path), str(executions))
        assert await supervisor.run_once() == 1
        attempt = await wait_for_pid(stores, job.id)
        # The outcome write meets an error no retry mends: the attempt's row refuses updates for a while.
        async with cluster_engine.begin() as connection:
            await connection.execute(
                text("""
                    CREATE FUNCTION refuse_outcome() RETURNS trigger LANGUAGE plpgsql AS
                    $$ BEGIN RAISE EXCEPTION 'outcomes refused for this test'; END $$
                """)
            )
            await connection.execute(
                text("""
                    CREATE TRIGGER refuse_outcome BEFORE UPDATE ON attempts FOR EACH ROW
                    WHEN (NEW.outcome <> 'running') EXECUTE FUNCTION refuse_outcome()
                """)
            )
        await wait_until(lambda: not supervisor.is_tracking(attempt.id), "the outcome writer never gave up", 30.0)
        assert (await stores.jobs.find_job(job.id)).status is JobStatus.RUNNING  # type: ignore[union-attr]

        async with cluster_engine.begin() as connection:
            await connection.execute(text("DROP TRIGGER refuse_outcome ON attempts"))
        sweeper = OutcomeSweeper(
            stores.attempts,
            supervisor,
            Reconciler(
                stores.attempts, supervisor, output_dir=output_dir, retry_policy=config.retry_policy, keeper_in_use=True
            ),
            interval_seconds=60.0,
        )
        report = await sweeper.run_once()
        again = await sweeper.run_once()
        final = await wait_for_final(stores, job.id)
        attempts = await stores.jobs.list_attempts(job.id)
    finally:
        await supervisors.cleanup()

    assert (report.untracked, report.recovered, report.lost) == (1, 1, 0)
    assert again.untracked == 0
    assert final.status is JobStatus.COMPLETED
    assert [a.outcome for a in attempts] == [AttemptOutcome.SUCCEEDED]
    assert executions.read_text().splitlines() == [f"{format_job_id(final.id)} 1"]
