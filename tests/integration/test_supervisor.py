"""The supervisor against a real PostgreSQL and real processes: outcomes, retries, the slot limit, wake-up, stop."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.db.attempt_store import AttemptStore
from service.db.connections import Database
from service.domain.identifiers import format_job_id
from service.domain.paths import attempt_files
from service.domain.records import AttemptEnding, ClaimedAttempt, JobRecord, NewJob
from service.domain.retry import NO_WAIT, RetryPolicy
from service.domain.shutdown import ShutdownMode
from service.domain.status import AttemptOutcome, JobStatus
from service.runner.launcher import ProcessLauncher
from service.supervisor.config import SupervisorConfig
from service.supervisor.supervisor import Supervisor
from tests.support.processes import WAIT_SECONDS, wait_until, write_script
from tests.support.stores import Stores
from tests.support.supervision import find_job, supervisor_config, wait_for_pid

pytestmark = pytest.mark.skipif(
    sys.platform == "win32", reason="uses /bin/sh scripts, POSIX signals and process groups"
)

NODE_ID = "test-node"
SECRET_DATABASE_URL = "postgresql://service:hunter2@db/jobs"

MakeSupervisor = Callable[..., Supervisor]


def config(tmp_path: Path, **overrides: Any) -> SupervisorConfig:
    values: dict[str, Any] = {
        "retry_policy": RetryPolicy(base_seconds=0.05, cap_seconds=0.05),
        "parent_environment": {**os.environ, "DATABASE_URL": SECRET_DATABASE_URL, "SOME_TOKEN": "s3cr3t"},
    }
    output_dir = overrides.pop("output_dir", tmp_path / "output")
    return supervisor_config(NODE_ID, output_dir, **(values | overrides))


@pytest.fixture
async def make_supervisor(
    stores: Stores, engine: AsyncEngine, tmp_path: Path, launcher: ProcessLauncher
) -> AsyncIterator[MakeSupervisor]:
    """Supervisors over the test's database; each is stopped (its processes ended) when the test ends."""
    created: list[Supervisor] = []

    def _make(attempts: AttemptStore | None = None, **overrides: Any) -> Supervisor:
        supervisor = Supervisor(attempts or stores.attempts, config(tmp_path, **overrides), launcher)
        created.append(supervisor)
        return supervisor

    yield _make
    for supervisor in created:
        await supervisor.stop()
    # Stopped in kill mode, a supervisor ends every process it started and records how each ended.
    async with engine.connect() as connection:
        still_running = await connection.execute(
            text("SELECT count(*) FROM attempts WHERE node_id = :node AND outcome = 'running'"), {"node": NODE_ID}
        )
        assert still_running.scalar_one() == 0


async def submit(
    stores: Stores, program: Path, arguments: Sequence[str] = (), *, name: str = "task-1", max_attempts: int = 2
) -> JobRecord:
    return await stores.jobs.submit_job(
        NewJob(name=name, program=str(program), arguments=arguments, max_attempts=max_attempts)
    )


async def run_until_final(
    supervisor: Supervisor, stores: Stores, job_id: int, timeout: float = WAIT_SECONDS
) -> JobRecord:
    """Drive claim rounds by hand (no loop) until the job is final, waiting out retry backoffs."""
    deadline = time.monotonic() + timeout
    while True:
        await supervisor.run_once()
        assert await supervisor.wait_until_idle(max(0.0, deadline - time.monotonic())), "attempts still running"
        job = await find_job(stores, job_id)
        if job.status.is_final:
            return job
        if time.monotonic() > deadline:
            pytest.fail(f"after {timeout} s job {job_id} is still {job.status.value}")
        await asyncio.sleep(0.02)  # the retry's backoff


async def test_succeeding_job_completes_with_one_succeeded_attempt(
    make_supervisor: MakeSupervisor, stores: Stores, tmp_path: Path
) -> None:
    script = write_script(tmp_path, "succeeds.sh", "sleep 0.05\nexit 0\n")
    job = await submit(stores, script)

    finished = await run_until_final(make_supervisor(), stores, job.id)

    assert finished.status is JobStatus.COMPLETED
    assert finished.exit_code == 0
    assert finished.attempts_count == 1
    assert finished.finished_at is not None
    [attempt] = await stores.jobs.list_attempts(job.id)
    assert attempt.outcome is AttemptOutcome.SUCCEEDED
    assert attempt.node_id == NODE_ID
    assert attempt.exit_code == 0
    assert attempt.signal is None
    assert attempt.pid is not None
    assert attempt.process_started_at is not None
    assert attempt.duration_ms is not None
    assert attempt.duration_ms >= 50
    assert finished.last_duration_ms == attempt.duration_ms


async def test_child_gets_job_identity_and_no_secrets(
    make_supervisor: MakeSupervisor, stores: Stores, tmp_path: Path
) -> None:
    script = write_script(tmp_path, "prints-env.sh", "env\n")
    job = await submit(stores, script, name="env-task")

    await run_until_final(make_supervisor(), stores, job.id)

    stdout = attempt_files(tmp_path / "output", job.id, 1).stdout
    received = dict(line.split("=", 1) for line in stdout.read_text(encoding="utf-8").splitlines() if "=" in line)
    assert received["JOB_ID"] == format_job_id(job.id)
    assert received["JOB_NAME"] == "env-task"
    assert received["JOB_ATTEMPT"] == "1"
    assert "DATABASE_URL" not in received
    assert "SOME_TOKEN" not in received


async def test_failing_job_is_retried_once_then_crashes(
    make_supervisor: MakeSupervisor, stores: Stores, tmp_path: Path
) -> None:
    script = write_script(tmp_path, "fails.sh", "exit 3\n")
    job = await submit(stores, script, max_attempts=2)

    finished = await run_until_final(make_supervisor(), stores, job.id)

    assert finished.status is JobStatus.CRASHED
    assert finished.exit_code == 3
    assert finished.attempts_count == 2
    attempts = await stores.jobs.list_attempts(job.id)
    assert [(a.attempt_number, a.outcome, a.exit_code) for a in attempts] == [
        (1, AttemptOutcome.FAILED, 3),
        (2, AttemptOutcome.FAILED, 3),
    ]
    assert all(a.pid is not None and a.finished_at is not None for a in attempts)
    # The job started when its first attempt did; a retry does not move it.
    first, second = attempts
    assert finished.started_at is not None
    assert first.finished_at is not None
    assert finished.started_at <= first.started_at < first.finished_at <= second.started_at


async def test_job_failing_first_and_succeeding_on_retry_completes(
    make_supervisor: MakeSupervisor, stores: Stores, tmp_path: Path
) -> None:
    script = write_script(tmp_path, "flaky.sh", '[ "$JOB_ATTEMPT" = 1 ] && exit 5\nexit 0\n')
    job = await submit(stores, script, max_attempts=2)

    finished = await run_until_final(make_supervisor(), stores, job.id)

    assert finished.status is JobStatus.COMPLETED
    assert finished.exit_code == 0
    attempts = await stores.jobs.list_attempts(job.id)
    assert [(a.outcome, a.exit_code) for a in attempts] == [(AttemptOutcome.FAILED, 5), (AttemptOutcome.SUCCEEDED, 0)]


async def test_missing_program_ends_in_spawn_failed_attempts(
    make_supervisor: MakeSupervisor, stores: Stores, tmp_path: Path
) -> None:
    job = await submit(stores, tmp_path / "no-such-program", max_attempts=2)

    finished = await run_until_final(make_supervisor(), stores, job.id)

    assert finished.status is JobStatus.CRASHED
    attempts = await stores.jobs.list_attempts(job.id)
    assert [a.outcome for a in attempts] == [AttemptOutcome.SPAWN_FAILED] * 2
    for attempt in attempts:
        assert attempt.pid is None
        assert attempt.error is not None
        assert "not found" in attempt.error
        assert "no-such-program" in attempt.error


async def test_an_output_folder_that_cannot_be_made_gives_spawn_failed_not_a_stuck_attempt(
    make_supervisor: MakeSupervisor, stores: Stores, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the output folder should go\n")  # unusable even for root
    marker = tmp_path / "ran"
    job = await submit(stores, write_script(tmp_path, "marks.sh", f"touch {marker}\n"), max_attempts=1)

    finished = await run_until_final(make_supervisor(output_dir=blocker), stores, job.id)

    assert finished.status is JobStatus.CRASHED
    [attempt] = await stores.jobs.list_attempts(job.id)
    assert attempt.outcome is AttemptOutcome.SPAWN_FAILED
    assert attempt.error is not None
    assert "could not prepare the output files" in attempt.error
    assert str(blocker) in attempt.error
    assert not marker.exists()


async def test_a_process_start_that_cannot_be_recorded_is_withdrawn_and_its_program_never_runs(
    make_supervisor: MakeSupervisor, stores: Stores, engine: AsyncEngine, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    job = await submit(stores, write_script(tmp_path, "marks.sh", f"echo ran >> {marker}\n"), max_attempts=1)
    # A real error from the database, not one a retry mends: every write of a pid is refused.
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "CREATE FUNCTION refuse_pid() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'pid refused for the test'; END $$"
            )
        )
        await connection.execute(
            text(
                "CREATE TRIGGER refuse_pid BEFORE UPDATE OF pid ON attempts FOR EACH ROW "
                "WHEN (NEW.pid IS NOT NULL) EXECUTE FUNCTION refuse_pid()"
            )
        )
    supervisor = make_supervisor()

    assert await supervisor.run_once() == 1
    assert await supervisor.wait_until_idle(WAIT_SECONDS)

    assert supervisor.running_count == 0, "the slot was not given back"
    assert await stores.jobs.list_attempts(job.id) == []
    waiting = await find_job(stores, job.id)
    assert (waiting.status, waiting.attempts_count) == (JobStatus.QUEUED, 0)
    assert not marker.exists(), "the program ran although its process was never recorded"

    async with engine.begin() as connection:
        await connection.execute(text("DROP TRIGGER refuse_pid ON attempts"))
    finished = await run_until_final(supervisor, stores, job.id)

    assert (finished.status, finished.attempts_count) == (JobStatus.COMPLETED, 1)
    assert marker.read_text().splitlines() == ["ran"]


async def test_job_killed_by_a_signal_is_recorded_as_killed(
    make_supervisor: MakeSupervisor, stores: Stores, tmp_path: Path
) -> None:
    script = write_script(tmp_path, "dies.sh", "kill -KILL $$\nsleep 30\n")
    job = await submit(stores, script, max_attempts=1)

    finished = await run_until_final(make_supervisor(), stores, job.id)

    assert finished.status is JobStatus.CRASHED
    [attempt] = await stores.jobs.list_attempts(job.id)
    assert attempt.outcome is AttemptOutcome.KILLED
    assert attempt.signal == signal.SIGKILL
    assert attempt.exit_code is None


async def test_loop_never_runs_more_than_the_limit_at_once(
    make_supervisor: MakeSupervisor, stores: Stores, tmp_path: Path
) -> None:
    limit = 3
    log = tmp_path / "events.log"
    script = write_script(
        tmp_path,
        "logs.sh",
        """
        echo "start $JOB_ID $(date +%s.%N)" >> "$1"
        sleep 0.3
        echo "end $JOB_ID $(date +%s.%N)" >> "$1"
        """,
    )
    jobs = [await submit(stores, script, [str(log)], name=f"task-{n}") for n in range(10)]
    supervisor = make_supervisor(max_concurrent_jobs=limit)

    await supervisor.start()

    async def all_final() -> bool:
        statuses = [(await find_job(stores, job.id)).status for job in jobs]
        return all(status.is_final for status in statuses)

    await wait_until(all_final, "not every job finished", timeout=20)
    await supervisor.stop()

    # Appends of one short line are atomic, so the file's order is the order in which things happened.
    events = [line.split() for line in log.read_text(encoding="utf-8").splitlines()]
    running = peak = 0
    for kind, _job_id, _when in events:
        running += 1 if kind == "start" else -1
        peak = max(peak, running)
    assert peak == limit, f"at most {limit} at once, and the limit should be reached: {events}"
    expected_ids = [format_job_id(job.id) for job in jobs]
    assert Counter(job_id for kind, job_id, _ in events if kind == "start") == Counter(expected_ids)
    assert Counter(job_id for kind, job_id, _ in events if kind == "end") == Counter(expected_ids)
    assert {(await find_job(stores, job.id)).status for job in jobs} == {JobStatus.COMPLETED}


class ObservedAttemptStore(AttemptStore):
    """The real attempt store, counting finished claim rounds so a test can tell when the loop has gone idle."""

    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(Database(engine))
        self.claim_rounds = 0

    async def claim_due_jobs(self, *, node_id: str, limit: int) -> list[ClaimedAttempt]:
        claimed = await super().claim_due_jobs(node_id=node_id, limit=limit)
        self.claim_rounds += 1
        return claimed


async def test_wake_starts_a_submitted_job_without_waiting_for_the_poll(
    make_supervisor: MakeSupervisor, stores: Stores, engine: AsyncEngine, tmp_path: Path
) -> None:
    poll_interval = 30.0
    observed = ObservedAttemptStore(engine)
    supervisor = make_supervisor(observed, poll_interval_seconds=poll_interval)
    await supervisor.start()

    async def first_round_done() -> bool:
        return observed.claim_rounds >= 1

    # After its first (empty) round the loop sleeps for the poll interval unless woken.
    await wait_until(first_round_done, "the claim loop never ran")
    job = await submit(stores, write_script(tmp_path, "succeeds.sh", "exit 0\n"))
    submitted = time.monotonic()
    supervisor.wake()

    async def completed() -> bool:
        return (await find_job(stores, job.id)).status is JobStatus.COMPLETED

    await wait_until(completed, "the woken loop did not run the job", timeout=5)
    assert time.monotonic() - submitted < poll_interval / 6


async def test_stop_in_kill_mode_terminates_a_running_job_and_records_it(
    make_supervisor: MakeSupervisor, stores: Stores, tmp_path: Path
) -> None:
    grace = 5.0
    script = write_script(tmp_path, "long.sh", "sleep 30\n")
    job = await submit(stores, script, max_attempts=1)
    supervisor = make_supervisor(shutdown_grace_seconds=grace, shutdown_mode=ShutdownMode.KILL)
    await supervisor.run_once()
    await wait_for_pid(stores, job.id)

    stopping = time.monotonic()
    await supervisor.stop()
    stop_took = time.monotonic() - stopping

    assert stop_took < grace, "SIGTERM ends a plain program at once; stop must not wait out the grace period"
    assert supervisor.running_count == 0
    [attempt] = await stores.jobs.list_attempts(job.id)
    assert attempt.outcome is AttemptOutcome.KILLED
    assert attempt.signal == signal.SIGTERM
    assert (await find_job(stores, job.id)).status is JobStatus.CRASHED


async def test_stop_in_kill_mode_kills_a_job_that_ignores_sigterm_after_the_grace_period(
    make_supervisor: MakeSupervisor, stores: Stores, tmp_path: Path
) -> None:
    grace = 0.5
    ready = tmp_path / "trap-installed"
    script = write_script(tmp_path, "stubborn.sh", f"trap '' TERM\ntouch {ready}\nwhile :; do sleep 0.05; done\n")
    job = await submit(stores, script, max_attempts=1)
    supervisor = make_supervisor(shutdown_grace_seconds=grace, shutdown_mode=ShutdownMode.KILL)
    await supervisor.run_once()

    async def trap_installed() -> bool:
        return ready.exists()

    await wait_until(trap_installed, "the script never installed its SIGTERM trap")

    stopping = time.monotonic()
    await supervisor.stop()
    stop_took = time.monotonic() - stopping

    assert grace <= stop_took < grace + 5
    [attempt] = await stores.jobs.list_attempts(job.id)
    assert attempt.outcome is AttemptOutcome.KILLED
    assert attempt.signal == signal.SIGKILL


async def test_a_second_outcome_for_a_finished_attempt_writes_nothing(
    make_supervisor: MakeSupervisor, stores: Stores, tmp_path: Path
) -> None:
    job = await submit(stores, write_script(tmp_path, "succeeds.sh", "exit 0\n"))
    finished = await run_until_final(make_supervisor(), stores, job.id)
    attempts = await stores.jobs.list_attempts(job.id)

    late = await stores.attempts.record_outcome(
        attempt_id=attempts[0].id,
        ending=AttemptEnding(outcome=AttemptOutcome.FAILED, finished_at=datetime.now(UTC), exit_code=9),
        retry_policy=NO_WAIT,
    )

    assert late is None
    assert await stores.jobs.list_attempts(job.id) == attempts
    assert await find_job(stores, job.id) == finished


async def test_outcome_of_a_job_cancelled_meanwhile_leaves_it_cancelled(
    make_supervisor: MakeSupervisor, stores: Stores, engine: AsyncEngine, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    script = write_script(tmp_path, "waits.sh", 'while [ ! -e "$1" ]; do sleep 0.02; done\nexit 1\n')
    job = await submit(stores, script, [str(release)], max_attempts=2)
    supervisor = make_supervisor()
    await supervisor.run_once()
    await wait_for_pid(stores, job.id)

    async with engine.begin() as connection:
        await connection.execute(
            text("UPDATE jobs SET status = 'cancelled', finished_at = now() WHERE id = :id"), {"id": job.id}
        )
    release.touch()
    assert await supervisor.wait_until_idle(WAIT_SECONDS)

    after = await find_job(stores, job.id)
    assert after.status is JobStatus.CANCELLED
    assert after.attempts_count == 1
    [attempt] = await stores.jobs.list_attempts(job.id)
    assert attempt.outcome is AttemptOutcome.FAILED  # the attempt's own ending is still history
    assert attempt.exit_code == 1
    assert await supervisor.run_once() == 0  # a cancelled job is never retried
