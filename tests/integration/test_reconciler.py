"""Reconciliation after a restart, with real processes left behind by a previous supervisor.

A "previous life" of the service is a supervisor stopped in `leave` mode: its processes keep running under their
exit keepers, exactly as after `kill -9` of the service. A new supervisor and its reconciler then take over.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import psutil
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.domain.paths import attempt_files
from service.domain.records import AttemptRecord, JobRecord
from service.domain.retry import NO_WAIT
from service.domain.shutdown import ShutdownMode
from service.domain.status import AttemptOutcome, JobStatus
from service.runner.exit_status import read_exit_status
from service.runner.identity import process_start_time
from service.runner.keeper import KeeperKind, keeper_command
from service.runner.launcher import ProcessLauncher, ProcessSpec
from service.supervisor.reconciler import Reconciler, ReconcileReport
from service.supervisor.supervisor import Supervisor
from tests.support.processes import WAIT_SECONDS, until_reaped, wait_until, write_script
from tests.support.stores import Stores
from tests.support.supervision import (
    Supervisors,
    find_job,
    submit,
    supervisor_config,
    wait_for_final,
    wait_for_pid,
)

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="uses /bin/sh scripts and POSIX process groups")

NODE_ID = "test-node"
# A life ends leaving its processes running, as a crash would.
LIFE_SETTINGS: dict[str, Any] = {"max_concurrent_jobs": 10, "shutdown_mode": ShutdownMode.LEAVE}


class Lives(Supervisors):
    """Supervisors standing for successive lives of one node, and the cleanup of whatever they leave behind."""

    def __init__(self, stores: Stores, output_dir: Path, launcher: ProcessLauncher) -> None:
        super().__init__(stores, launcher)
        self.output_dir = output_dir

    def supervisor(self, *, launcher: ProcessLauncher | None = None, **overrides: Any) -> Supervisor:
        return self.create(supervisor_config(NODE_ID, self.output_dir, **(LIFE_SETTINGS | overrides)), launcher)

    def reconciler(self, supervisor: Supervisor, *, keeper_in_use: bool = True) -> Reconciler:
        return Reconciler(
            self.stores.attempts,
            supervisor,
            output_dir=self.output_dir,
            retry_policy=NO_WAIT,
            keeper_in_use=keeper_in_use,
        )

    async def previous_life(self, job: JobRecord) -> AttemptRecord:
        """Start the job's first attempt, then stop the supervisor leaving it running, as a crash would."""
        supervisor = self.supervisor()
        assert await supervisor.run_once() == 1
        attempt = await wait_for_pid(self.stores, job.id)
        await supervisor.stop()
        assert attempt.pid is not None
        self.groups.add(attempt.pid)
        return attempt


@pytest.fixture
async def lives(stores: Stores, tmp_path: Path, launcher: ProcessLauncher) -> AsyncIterator[Lives]:
    assert launcher.uses_keeper, "these tests need a C compiler or Python's fork: the exit keeper"
    created = Lives(stores, tmp_path / "output", launcher)
    yield created
    await created.cleanup()


async def attempts_of(stores: Stores, job_id: int) -> list[AttemptRecord]:
    return await stores.jobs.list_attempts(job_id)


def executions(log: Path) -> list[str]:
    return log.read_text(encoding="utf-8").splitlines() if log.exists() else []


async def test_a_live_keeper_is_adopted_and_its_real_outcome_recorded(lives: Lives, tmp_path: Path) -> None:
    log, release = tmp_path / "executions.log", tmp_path / "release"
    script = write_script(
        tmp_path,
        "waits.sh",
        f"""
        echo "$JOB_ID $JOB_ATTEMPT" >> {log}
        while [ ! -e {release} ]; do sleep 0.02; done
        exit 7
        """,
    )
    job = await submit(lives.stores, script)
    before = await lives.previous_life(job)

    supervisor = lives.supervisor()
    report = await lives.reconciler(supervisor).run_once()

    assert (report.examined, report.adopted, report.lost, report.recovered) == (1, 1, 0, 0)
    assert supervisor.running_count == 1
    assert (await attempts_of(lives.stores, job.id))[0].outcome is AttemptOutcome.RUNNING
    release.touch()
    finished = await wait_for_final(lives.stores, job.id)
    [attempt] = await attempts_of(lives.stores, job.id)
    assert (attempt.id, attempt.pid) == (before.id, before.pid)
    assert attempt.outcome is AttemptOutcome.FAILED
    assert attempt.exit_code == 7
    assert finished.status is JobStatus.CRASHED
    assert finished.exit_code == 7
    assert executions(log) == [f"job-{job.id} 1"], "the adopted program ran exactly once"


async def test_an_ending_while_the_service_was_down_is_read_from_the_exit_status_file(
    lives: Lives, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    script = write_script(tmp_path, "ends.sh", f"while [ ! -e {release} ]; do sleep 0.02; done\nsleep 0.2\nexit 3\n")
    job = await submit(lives.stores, script, max_attempts=2)
    attempt = await lives.previous_life(job)
    release.touch()
    status_file = attempt_files(lives.output_dir, job.id, 1).exit_status

    async def written() -> bool:
        return status_file.exists()

    await wait_until(written, "the exit keeper never wrote the exit status")

    report = await lives.reconciler(lives.supervisor()).run_once()

    assert (report.examined, report.recovered, report.adopted, report.lost) == (1, 1, 0, 0)
    [recorded] = await attempts_of(lives.stores, job.id)
    assert recorded.id == attempt.id
    assert recorded.outcome is AttemptOutcome.FAILED
    assert recorded.exit_code == 3
    assert recorded.duration_ms is not None
    assert recorded.duration_ms >= 200
    job_after = await lives.stores.jobs.find_job(job.id)
    assert job_after is not None
    assert job_after.status is JobStatus.RETRIED


async def test_a_program_killed_while_the_service_was_down_is_recorded_with_its_signal(
    lives: Lives, tmp_path: Path
) -> None:
    ready = tmp_path / "ready"
    script = write_script(tmp_path, "sleeps.sh", f"touch {ready}\nexec sleep 30\n")
    job = await submit(lives.stores, script)
    attempt = await lives.previous_life(job)

    async def started() -> bool:
        return ready.exists()

    await wait_until(started, "the program never started")
    assert attempt.pid is not None
    os.killpg(attempt.pid, signal.SIGTERM)  # the keeper ignores it and records the program's death
    status_file = attempt_files(lives.output_dir, job.id, 1).exit_status

    async def written() -> bool:
        return status_file.exists()

    await wait_until(written, "the exit keeper never wrote the exit status")

    report = await lives.reconciler(lives.supervisor()).run_once()

    assert report.recovered == 1
    [recorded] = await attempts_of(lives.stores, job.id)
    assert recorded.outcome is AttemptOutcome.KILLED
    assert recorded.signal == signal.SIGTERM


async def test_a_keeper_killed_with_its_program_is_lost_and_the_job_retried(lives: Lives, tmp_path: Path) -> None:
    script = write_script(tmp_path, "sleeps.sh", "exec sleep 30\n")
    job = await submit(lives.stores, script, max_attempts=2)
    attempt = await lives.previous_life(job)
    assert attempt.pid is not None
    os.killpg(attempt.pid, signal.SIGKILL)
    await until_reaped(attempt.pid)  # as init would reap it

    report = await lives.reconciler(lives.supervisor()).run_once()

    assert (report.examined, report.lost, report.adopted, report.recovered) == (1, 1, 0, 0)
    [recorded] = await attempts_of(lives.stores, job.id)
    assert recorded.outcome is AttemptOutcome.LOST
    assert recorded.error is not None
    assert "no exit status" in recorded.error
    job_after = await lives.stores.jobs.find_job(job.id)
    assert job_after is not None
    assert job_after.status is JobStatus.RETRIED


async def test_a_reused_pid_is_not_adopted_nor_signalled(lives: Lives, engine: AsyncEngine, tmp_path: Path) -> None:
    job = await submit(lives.stores, write_script(tmp_path, "true.sh", "exit 0\n"))
    [claimed] = await lives.stores.attempts.claim_due_jobs(node_id=NODE_ID, limit=1)
    stranger = await asyncio.create_subprocess_exec("sleep", "30", start_new_session=True)
    try:
        stranger_start = process_start_time(stranger.pid)
        assert stranger_start is not None
        async with engine.begin() as connection:
            await connection.execute(
                text("UPDATE attempts SET pid = :pid, process_started_at = :started WHERE id = :id"),
                {"pid": stranger.pid, "started": stranger_start - timedelta(hours=1), "id": claimed.attempt_id},
            )

        report = await lives.reconciler(lives.supervisor()).run_once()

        assert (report.lost, report.adopted, report.ended_leftovers) == (1, 0, 0)
        assert psutil.Process(stranger.pid).status() != psutil.STATUS_ZOMBIE, "a stranger was signalled"
        [recorded] = await attempts_of(lives.stores, job.id)
        assert recorded.outcome is AttemptOutcome.LOST
    finally:
        stranger.kill()
        await stranger.wait()


async def test_an_attempt_claimed_without_a_process_is_withdrawn_and_the_job_runs_as_if_nothing_happened(
    lives: Lives, tmp_path: Path
) -> None:
    log = tmp_path / "executions.log"
    script = write_script(tmp_path, "fails.sh", f'echo "$JOB_ATTEMPT" >> {log}\nexit 3\n')
    job = await submit(lives.stores, script, max_attempts=1)
    await lives.stores.attempts.claim_due_jobs(node_id=NODE_ID, limit=1)  # the crash came before the spawn

    supervisor = lives.supervisor()
    report = await lives.reconciler(supervisor).run_once()

    assert (report.examined, report.withdrawn, report.lost) == (1, 1, 0)
    assert await attempts_of(lives.stores, job.id) == []
    waiting = await find_job(lives.stores, job.id)
    assert (waiting.status, waiting.attempts_count, waiting.started_at) == (JobStatus.QUEUED, 0, None)

    assert await supervisor.run_once() == 1, "the withdrawn job is due at once"
    finished = await wait_for_final(lives.stores, job.id)
    assert (finished.status, finished.attempts_count, finished.exit_code) == (JobStatus.CRASHED, 1, 3)
    [attempt] = await attempts_of(lives.stores, job.id)
    assert (attempt.attempt_number, attempt.outcome) == (1, AttemptOutcome.FAILED)
    assert executions(log) == ["1"], "its one allowed attempt ran"


async def test_a_withdrawn_later_attempt_leaves_the_job_retried_with_its_earlier_attempts(lives: Lives) -> None:
    job = await submit(lives.stores, Path("/bin/false"), max_attempts=3)
    supervisor = lives.supervisor()
    await supervisor.run_once()
    assert await supervisor.wait_until_idle(WAIT_SECONDS)
    await lives.stores.attempts.claim_due_jobs(node_id=NODE_ID, limit=1)  # attempt 2; the crash came before the spawn

    report = await lives.reconciler(lives.supervisor()).run_once()

    assert report.withdrawn == 1
    [first] = await attempts_of(lives.stores, job.id)
    assert (first.attempt_number, first.outcome) == (1, AttemptOutcome.FAILED)
    waiting = await find_job(lives.stores, job.id)
    assert (waiting.status, waiting.attempts_count) == (JobStatus.RETRIED, 1)
    assert waiting.started_at is not None


@pytest.fixture(params=[KeeperKind.NATIVE, KeeperKind.PYTHON])
def any_keeper(request: pytest.FixtureRequest, keeper_build_dir: Path) -> ProcessLauncher:
    """The compiled exit keeper and its Python twin, which must write the same abandonment record."""
    kind: KeeperKind = request.param
    return ProcessLauncher(keeper_command(kind, keeper_build_dir))


async def test_a_keeper_abandoned_before_its_go_ahead_says_so_and_its_attempt_is_withdrawn(
    lives: Lives, any_keeper: ProcessLauncher, tmp_path: Path
) -> None:
    log = tmp_path / "executions.log"
    script = write_script(tmp_path, "fails.sh", f'echo "$JOB_ATTEMPT" >> {log}\nexit 3\n')
    job = await submit(lives.stores, script, max_attempts=1)
    # A previous life: the attempt claimed, its keeper started and its pid committed; then the service died.
    [claimed] = await lives.stores.attempts.claim_due_jobs(node_id=NODE_ID, limit=1)
    files = attempt_files(lives.output_dir, job.id, 1)
    process = any_keeper.start(
        ProcessSpec(
            argv=[str(script)],
            environment=dict(os.environ),
            stdout_path=files.stdout,
            stderr_path=files.stderr,
            status_path=files.exit_status,
        )
    )
    await lives.stores.attempts.record_process_started(
        attempt_id=claimed.attempt_id,
        pid=process.pid,
        process_started_at=process.started_at,
        started_at=process.spawned_at,
    )
    process.abandon()
    _, status = await asyncio.to_thread(os.waitpid, process.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 124
    recorded = read_exit_status(files.exit_status, str(script), keeper_pid=process.pid)
    assert recorded is not None
    assert recorded.abandoned

    supervisor = lives.supervisor()
    report = await lives.reconciler(supervisor).run_once()

    assert (report.examined, report.withdrawn, report.lost, report.recovered) == (1, 1, 0, 0)
    assert await attempts_of(lives.stores, job.id) == []
    assert not files.exit_status.exists()
    assert executions(log) == []
    await supervisor.run_once()
    finished = await wait_for_final(lives.stores, job.id)
    assert (finished.status, finished.attempts_count, finished.exit_code) == (JobStatus.CRASHED, 1, 3)
    assert executions(log) == ["1"]


async def test_an_abandonment_written_by_another_keeper_says_nothing_of_this_one(lives: Lives, tmp_path: Path) -> None:
    job = await submit(lives.stores, write_script(tmp_path, "sleeps.sh", "exec sleep 30\n"), max_attempts=2)
    attempt = await lives.previous_life(job)  # released: its program runs
    assert attempt.pid is not None
    # Left by the keeper of an earlier, withdrawn, claim of the same attempt number.
    status_file = attempt_files(lives.output_dir, job.id, 1).exit_status
    status_file.write_text('{"abandoned":true,"keeper_pid":1,"duration_ns":0,"finished_at_ns":0}\n')
    os.killpg(attempt.pid, signal.SIGKILL)  # this keeper dies with its program and writes nothing
    await until_reaped(attempt.pid)

    report = await lives.reconciler(lives.supervisor()).run_once()

    assert (report.lost, report.withdrawn) == (1, 0), "a program that ran was taken for one that never did"
    [recorded] = await attempts_of(lives.stores, job.id)
    assert recorded.outcome is AttemptOutcome.LOST


async def test_a_keeper_that_never_got_its_go_ahead_never_runs_the_program(lives: Lives, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    script = write_script(tmp_path, "marks.sh", f"touch {marker}\n")
    files = attempt_files(lives.output_dir, 1, 1)
    process = lives.launcher.start(
        ProcessSpec(
            argv=[str(script)],
            environment=dict(os.environ),
            stdout_path=files.stdout,
            stderr_path=files.stderr,
            status_path=files.exit_status,
        )
    )

    process.abandon()  # the service died before committing the pid

    _, status = await asyncio.to_thread(os.waitpid, process.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 124
    assert not marker.exists()
    assert json.loads(files.exit_status.read_text()) == {
        "abandoned": True,
        "keeper_pid": process.pid,
        "duration_ns": 0,
        "finished_at_ns": ANY,
    }


async def test_attempts_of_other_nodes_are_left_alone_and_a_second_run_finds_nothing(lives: Lives) -> None:
    await submit(lives.stores, Path("/bin/true"))
    await submit(lives.stores, Path("/bin/true"))
    [mine] = await lives.stores.attempts.claim_due_jobs(node_id=NODE_ID, limit=1)
    [theirs] = await lives.stores.attempts.claim_due_jobs(node_id="other-node", limit=1)
    reconciler = lives.reconciler(lives.supervisor())

    first: ReconcileReport = await reconciler.run_once()
    second = await reconciler.run_once()

    assert (first.examined, second.examined) == (1, 0)
    [other] = await attempts_of(lives.stores, theirs.job_id)
    assert other.outcome is AttemptOutcome.RUNNING
    assert await attempts_of(lives.stores, mine.job_id) == [], "never ran: withdrawn"


async def test_without_a_keeper_a_leftover_is_ended_so_it_never_runs_beside_its_retry(
    lives: Lives, tmp_path: Path
) -> None:
    script = write_script(tmp_path, "sleeps.sh", "exec sleep 30\n")
    job = await submit(lives.stores, script, max_attempts=2)
    direct = ProcessLauncher(None)
    first_life = lives.supervisor(launcher=direct)
    await first_life.run_once()
    attempt = await wait_for_pid(lives.stores, job.id)
    await first_life.stop()
    assert attempt.pid is not None

    report = await lives.reconciler(lives.supervisor(launcher=direct), keeper_in_use=False).run_once()

    assert (report.lost, report.ended_leftovers) == (1, 1)
    _, status = await asyncio.to_thread(os.waitpid, attempt.pid, 0)
    assert os.waitstatus_to_exitcode(status) == -signal.SIGKILL
    [recorded] = await attempts_of(lives.stores, job.id)
    assert recorded.outcome is AttemptOutcome.LOST
