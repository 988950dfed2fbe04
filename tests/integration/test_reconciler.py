"""The start-up reconciler against a real PostgreSQL and real processes: gone, leftover, reused and foreign pids."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import psutil
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.db.repository import AttemptRecord, ClaimedAttempt, Repository
from service.domain.status import AttemptOutcome, JobStatus
from service.runner.process import ProcessExit, ProcessSpec, RunningProcess, start_process
from service.supervisor.reconciler import Reconciler

pytestmark = pytest.mark.skipif(
    sys.platform == "win32", reason="uses /bin/sh scripts, POSIX signals and process groups"
)

NODE_ID = "test-node"
OTHER_NODE_ID = "other-node"
WAIT_SECONDS = 10.0


def write_script(folder: Path, name: str, body: str) -> Path:
    path = folder / name
    path.write_text("#!/bin/sh\n" + textwrap.dedent(body).lstrip(), encoding="utf-8")
    path.chmod(0o755)
    return path


def wait_until(condition: Callable[[], bool], message: str, timeout: float = WAIT_SECONDS) -> None:
    """Poll `condition` until it holds; fail with `message` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"after {timeout} s: {message}")
        time.sleep(0.01)


def is_gone(pid: int, create_time: float) -> bool:
    """True once the process has ended: no such pid, a different process under that pid, or a zombie."""
    try:
        process = psutil.Process(pid)
        # A dead orphan stays a zombie until init reaps it, which some container inits do late.
        return bool(process.create_time() != create_time or process.status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def still_running(process: RunningProcess) -> bool:
    """Our child has not exited (waitpid without reaping would say so; psutil does not reap)."""
    try:
        return bool(psutil.Process(process.pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


class ProcessTracker:
    """Starts processes for a test and makes sure none outlives it."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self._started: list[RunningProcess] = []
        self._adopted: list[tuple[int, float]] = []

    def start(self, script: Path, *arguments: str) -> RunningProcess:
        number = len(self._started) + 1
        process = start_process(
            ProcessSpec(
                argv=[str(script), *arguments],
                environment=dict(os.environ),
                stdout_path=self._folder / "output" / f"{number}.stdout",
                stderr_path=self._folder / "output" / f"{number}.stderr",
            )
        )
        self._started.append(process)
        return process

    def adopt(self, pid: int) -> float:
        """Also end `pid` (a grandchild) at teardown, if it is still that process; returns its create time."""
        create_time = float(psutil.Process(pid).create_time())
        self._adopted.append((pid, create_time))
        return create_time

    def cleanup(self) -> None:
        for process in self._started:
            popen = process._popen
            # Only a leader not yet reaped guarantees that its pid still names our group.
            if popen.returncode is None:
                process.kill_group()
                popen.wait(timeout=WAIT_SECONDS)
        for pid, create_time in self._adopted:
            if not is_gone(pid, create_time):
                psutil.Process(pid).kill()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[ProcessTracker]:
    tracker = ProcessTracker(tmp_path)
    yield tracker
    tracker.cleanup()


async def running_attempt(repository: Repository, *, max_attempts: int = 2, node_id: str = NODE_ID) -> ClaimedAttempt:
    """A job whose first attempt the database says is running on `node_id`, as a crashed service leaves it."""
    await repository.submit_job(name="task-1", program="/bin/true", arguments=[], max_attempts=max_attempts)
    [claimed] = await repository.claim_due_jobs(node_id=node_id, limit=1)
    return claimed


async def record_process(engine: AsyncEngine, attempt_id: int, pid: int, started_at: datetime) -> None:
    async with engine.begin() as connection:
        await connection.execute(
            text("UPDATE attempts SET pid = :pid, process_started_at = :started_at WHERE id = :id"),
            {"pid": pid, "started_at": started_at, "id": attempt_id},
        )


async def only_attempt(repository: Repository, job_id: int) -> AttemptRecord:
    [attempt] = await repository.list_attempts(job_id)
    return attempt


def reconciler(repository: Repository) -> Reconciler:
    return Reconciler(repository, node_id=NODE_ID, retry_backoff_seconds=0)


async def exited(process: RunningProcess) -> ProcessExit:
    return await asyncio.wait_for(process.wait(), WAIT_SECONDS)


async def test_attempt_whose_process_is_gone_is_lost_and_the_job_retried(
    repository: Repository, engine: AsyncEngine, processes: ProcessTracker, tmp_path: Path
) -> None:
    finished = processes.start(write_script(tmp_path, "exits.sh", "exit 0\n"))
    await exited(finished)
    claimed = await running_attempt(repository, max_attempts=2)
    await record_process(engine, claimed.attempt_id, finished.pid, finished.started_at)

    report = await reconciler(repository).run_once()

    assert (report.examined, report.lost, report.ended_leftovers) == (1, 1, 0)
    attempt = await only_attempt(repository, claimed.job_id)
    assert attempt.outcome is AttemptOutcome.LOST
    assert attempt.finished_at is not None
    assert attempt.error is not None
    job = await repository.find_job(claimed.job_id)
    assert job is not None
    assert job.status is JobStatus.RETRIED
    [retry] = await repository.claim_due_jobs(node_id=NODE_ID, limit=5)
    assert (retry.job_id, retry.attempt_number) == (claimed.job_id, 2)


async def test_lost_last_attempt_crashes_the_job(repository: Repository) -> None:
    claimed = await running_attempt(repository, max_attempts=1)

    report = await reconciler(repository).run_once()

    assert report.lost == 1
    assert (await only_attempt(repository, claimed.job_id)).outcome is AttemptOutcome.LOST
    job = await repository.find_job(claimed.job_id)
    assert job is not None
    assert job.status is JobStatus.CRASHED
    assert await repository.claim_due_jobs(node_id=NODE_ID, limit=5) == []


async def test_leftover_process_of_ours_has_its_group_ended(
    repository: Repository, engine: AsyncEngine, processes: ProcessTracker, tmp_path: Path
) -> None:
    pid_file = tmp_path / "grandchild.pid"
    script = write_script(
        tmp_path,
        "spawns.sh",
        """
        sleep 30 &
        echo $! > "$1.tmp" && mv "$1.tmp" "$1"
        wait
        """,
    )
    leftover = processes.start(script, str(pid_file))
    wait_until(pid_file.exists, "the script never wrote its background child's pid")
    grandchild = int(pid_file.read_text(encoding="utf-8"))
    grandchild_created = processes.adopt(grandchild)
    claimed = await running_attempt(repository)
    await record_process(engine, claimed.attempt_id, leftover.pid, leftover.started_at)

    report = await reconciler(repository).run_once()

    assert (report.examined, report.lost, report.ended_leftovers) == (1, 1, 1)
    assert (await exited(leftover)).signal == signal.SIGKILL
    wait_until(lambda: is_gone(grandchild, grandchild_created), f"grandchild {grandchild} still runs")
    assert (await only_attempt(repository, claimed.job_id)).outcome is AttemptOutcome.LOST


async def test_reused_pid_is_not_killed(
    repository: Repository, engine: AsyncEngine, processes: ProcessTracker, tmp_path: Path
) -> None:
    stranger = processes.start(write_script(tmp_path, "sleeps.sh", "exec sleep 30\n"))
    claimed = await running_attempt(repository)
    # The recorded process started an hour earlier: this pid now names someone else's process.
    await record_process(engine, claimed.attempt_id, stranger.pid, stranger.started_at - timedelta(hours=1))

    report = await reconciler(repository).run_once()

    assert (report.examined, report.lost, report.ended_leftovers) == (1, 1, 0)
    assert still_running(stranger)
    assert (await only_attempt(repository, claimed.job_id)).outcome is AttemptOutcome.LOST


async def test_attempt_running_on_another_node_is_left_alone(
    repository: Repository, engine: AsyncEngine, processes: ProcessTracker, tmp_path: Path
) -> None:
    theirs = processes.start(write_script(tmp_path, "sleeps.sh", "exec sleep 30\n"))
    claimed = await running_attempt(repository, node_id=OTHER_NODE_ID)
    await record_process(engine, claimed.attempt_id, theirs.pid, theirs.started_at)

    report = await reconciler(repository).run_once()

    assert report.examined == 0
    assert still_running(theirs)
    attempt = await only_attempt(repository, claimed.job_id)
    assert attempt.outcome is AttemptOutcome.RUNNING
    assert attempt.node_id == OTHER_NODE_ID
    job = await repository.find_job(claimed.job_id)
    assert job is not None
    assert job.status is JobStatus.RUNNING


async def test_second_run_finds_nothing_left_to_do(repository: Repository) -> None:
    claimed = await running_attempt(repository)

    first = await reconciler(repository).run_once()
    after_first = await repository.list_attempts(claimed.job_id)
    second = await reconciler(repository).run_once()

    assert (first.examined, first.lost) == (1, 1)
    assert (second.examined, second.lost, second.ended_leftovers) == (0, 0, 0)
    assert await repository.list_attempts(claimed.job_id) == after_first
