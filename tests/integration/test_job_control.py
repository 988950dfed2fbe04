"""Job control in the supervisor, with real processes and a real PostgreSQL: cancel (reaching a grandchild that
ignores SIGTERM, across nodes, across a restart), timeouts, retry backoff, priorities, runAt, rusage, output tails."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.app import create_app
from service.domain.identifiers import format_job_id
from service.domain.records import CancelEffect
from service.domain.retry import NO_WAIT, RetryPolicy
from service.domain.shutdown import ShutdownMode
from service.domain.status import AttemptOutcome, JobStatus
from service.runner.launcher import ProcessLauncher
from service.settings import Settings
from service.supervisor.listener import DueJobListener
from service.supervisor.reconciler import Reconciler
from service.supervisor.supervisor import Supervisor
from tests.support.keeper import with_prebuilt_keeper
from tests.support.processes import WAIT_SECONDS, wait_until, write_script
from tests.support.stores import Stores
from tests.support.supervision import Supervisors, find_job, submit, supervisor_config, wait_for_final, wait_for_pid

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="uses /bin/sh scripts, POSIX signals and groups")

GRACE_SECONDS = 0.6
# On top of the tests' usual supervisor: a short cancel grace, and output bounded with a tail kept.
CONTROL_SETTINGS: dict[str, Any] = {
    "cancel_grace_seconds": GRACE_SECONDS,
    "output_limit_bytes": 1024 * 1024,
    "output_tail_bytes": 1024,
}


def live_members(pgid: int) -> list[int]:
    """Processes of group `pgid` that still run (zombies excluded: they only wait to be reaped)."""
    members = []
    for process in psutil.process_iter(["status"]):
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if os.getpgid(process.pid) == pgid and process.info["status"] != psutil.STATUS_ZOMBIE:
                members.append(process.pid)
    return members


class Node(Supervisors):
    """Supervisors (one node's successive lives, or several nodes) over one database, and their cleanup."""

    def __init__(self, stores: Stores, tmp_path: Path, launcher: ProcessLauncher) -> None:
        super().__init__(stores, launcher)
        self.tmp_path = tmp_path

    def supervisor(self, node_id: str = "node-a", **overrides: Any) -> Supervisor:
        output_dir = self.tmp_path / node_id / "output"
        return self.create(supervisor_config(node_id, output_dir, **(CONTROL_SETTINGS | overrides)))


@pytest.fixture
async def node(stores: Stores, tmp_path: Path, launcher: ProcessLauncher) -> AsyncIterator[Node]:
    created = Node(stores, tmp_path, launcher)
    yield created
    await created.cleanup()


async def wait_for_file(path: Path) -> None:
    async def exists() -> bool:
        return await asyncio.to_thread(path.exists)

    await wait_until(exists, f"{path.name} was never written")


# A script whose child ignores SIGTERM: only SIGKILL, after the grace period, can end the whole group.
STUBBORN_GRANDCHILD = """
    sh -c 'trap "" TERM; echo $$ > "$1.tmp"; mv "$1.tmp" "$1"; while :; do sleep 0.05; done' grandchild "$1" &
    wait
"""


# --- cancel -----------------------------------------------------------------------------------------------------


async def test_cancel_ends_the_whole_group_even_a_grandchild_that_ignores_sigterm(
    node: Node, stores: Stores, tmp_path: Path
) -> None:
    ready = tmp_path / "grandchild.pid"
    job = await submit(stores, write_script(tmp_path, "stubborn.sh", STUBBORN_GRANDCHILD), str(ready), max_attempts=3)
    supervisor = node.supervisor()
    await supervisor.run_once()
    attempt = await wait_for_pid(stores, job.id)
    assert attempt.pid is not None
    await wait_for_file(ready)
    grandchild = int(ready.read_text())
    assert os.getpgid(grandchild) == attempt.pid

    result = await stores.jobs.cancel_job(job.id)
    assert result is not None
    assert result.effect is CancelEffect.REQUESTED
    assert result.job.status is JobStatus.RUNNING
    assert result.job.cancel_requested_at is not None
    cancelled_at = time.monotonic()
    assert await supervisor.apply_cancel_requests() == 1

    finished = await wait_for_final(stores, job.id)
    took = time.monotonic() - cancelled_at

    assert finished.status is JobStatus.CANCELLED
    assert finished.finished_at is not None
    # The grandchild outlived SIGTERM, so the attempt lasted the grace period, and not much more.
    assert GRACE_SECONDS <= took < GRACE_SECONDS + 5
    assert live_members(attempt.pid) == [], "a process of the cancelled attempt's group still runs"
    assert not psutil.pid_exists(grandchild) or psutil.Process(grandchild).status() == psutil.STATUS_ZOMBIE
    [recorded] = await stores.jobs.list_attempts(job.id)
    assert recorded.outcome is AttemptOutcome.CANCELLED
    assert recorded.signal == signal.SIGTERM  # the script itself died of the polite signal
    assert recorded.error is not None
    assert "cancelled" in recorded.error
    # Never retried, though attempts remained.
    assert await supervisor.run_once() == 0
    assert (await find_job(stores, job.id)).attempts_count == 1


async def test_a_program_that_ignores_sigterm_is_killed_and_its_keeper_still_records_it(
    node: Node, stores: Stores, tmp_path: Path
) -> None:
    ready = tmp_path / "trap-installed"
    script = write_script(tmp_path, "stubborn.sh", f"trap '' TERM\ntouch {ready}\nwhile :; do sleep 0.05; done\n")
    job = await submit(stores, script)
    supervisor = node.supervisor()
    await supervisor.run_once()
    attempt = await wait_for_pid(stores, job.id)
    assert attempt.pid is not None
    await wait_for_file(ready)

    await stores.jobs.cancel_job(job.id)
    await supervisor.apply_cancel_requests()
    await wait_for_final(stores, job.id)

    [recorded] = await stores.jobs.list_attempts(job.id)
    assert (recorded.outcome, recorded.signal) == (AttemptOutcome.CANCELLED, signal.SIGKILL)
    # The keeper was spared the SIGKILL: it wrote the ending down, rusage included, as for any other.
    assert recorded.user_cpu_ms is not None
    assert recorded.max_rss_kb is not None
    assert live_members(attempt.pid) == []


async def test_a_program_that_exits_on_sigterm_is_cancelled_without_waiting_for_the_grace_period(
    node: Node, stores: Stores, tmp_path: Path
) -> None:
    job = await submit(stores, write_script(tmp_path, "sleeps.sh", "exec sleep 30\n"))
    supervisor = node.supervisor(cancel_grace_seconds=30.0)
    await supervisor.run_once()
    await wait_for_pid(stores, job.id)

    await stores.jobs.cancel_job(job.id)
    begun = time.monotonic()
    await supervisor.apply_cancel_requests()
    finished = await wait_for_final(stores, job.id)

    assert time.monotonic() - begun < 5
    assert finished.status is JobStatus.CANCELLED
    [recorded] = await stores.jobs.list_attempts(job.id)
    assert (recorded.outcome, recorded.signal) == (AttemptOutcome.CANCELLED, signal.SIGTERM)


async def test_a_waiting_job_is_cancelled_at_once_and_a_final_one_not_at_all(stores: Stores) -> None:
    job = await submit(stores, Path("/bin/true"), run_at=datetime.now(UTC) + timedelta(hours=1))

    first = await stores.jobs.cancel_job(job.id)
    second = await stores.jobs.cancel_job(job.id)

    assert first is not None
    assert first.effect is CancelEffect.CANCELLED
    assert first.job.status is JobStatus.CANCELLED
    assert first.job.finished_at is not None
    assert second is not None
    assert second.effect is CancelEffect.ALREADY_FINAL
    assert await stores.attempts.claim_due_jobs(node_id="node-a", limit=10) == []
    assert await stores.jobs.cancel_job(job.id + 1000) is None


async def test_a_cancel_asked_on_one_node_ends_the_attempt_another_node_runs(
    node: Node,
    stores: Stores,
    database_url: str,
    tmp_path: Path,
    make_settings: Callable[..., Settings],
    keeper_build_dir: Path,
) -> None:
    job = await submit(stores, write_script(tmp_path, "sleeps.sh", "exec sleep 30\n"), max_attempts=2)
    # Node B runs the job. Its poll is far too slow to matter: only the notification can make it act in time.
    node_b = node.supervisor("node-b", poll_interval_seconds=60.0)
    assert await node_b.run_once() == 1
    await wait_for_pid(stores, job.id)
    listener = DueJobListener(database_url, node_b.wake, on_cancel_requested=node_b.cancel_requested)
    await listener.start()
    await node_b.start()
    try:
        # Node A: the real service, whose API takes the cancel; its own supervisor has nothing to end.
        settings = make_settings(node_id="node-a", data_dir=tmp_path / "node-a-data", shutdown_mode="kill")
        app = create_app(with_prebuilt_keeper(settings, keeper_build_dir))
        async with AsyncTestClient(app=app) as client:
            begun = time.monotonic()
            response = await client.post(f"/jobs/{format_job_id(job.id)}/cancel")

            assert response.status_code == 200, response.text
            assert response.json()["status"] == "running"
            assert response.json()["cancelRequestedAt"] is not None
            finished = await wait_for_final(stores, job.id)
            assert time.monotonic() - begun < 5, "node B waited for its poll instead of the notification"
    finally:
        await listener.stop()

    assert finished.status is JobStatus.CANCELLED
    [recorded] = await stores.jobs.list_attempts(job.id)
    assert (recorded.node_id, recorded.outcome) == ("node-b", AttemptOutcome.CANCELLED)


async def test_a_cancel_nobody_announced_is_still_carried_out_at_the_next_poll(
    node: Node, stores: Stores, tmp_path: Path
) -> None:
    # No listener: the NOTIFY reaches nobody, and only the claim loop's periodic look can find the request.
    poll_interval = 0.3
    job = await submit(stores, write_script(tmp_path, "sleeps.sh", "exec sleep 30\n"), max_attempts=2)
    supervisor = node.supervisor(poll_interval_seconds=poll_interval)
    await supervisor.start()
    await wait_for_pid(stores, job.id)

    asked = time.monotonic()
    result = await stores.jobs.cancel_job(job.id)
    assert result is not None
    assert result.effect is CancelEffect.REQUESTED
    finished = await wait_for_final(stores, job.id)

    assert finished.status is JobStatus.CANCELLED
    assert time.monotonic() - asked < poll_interval + 3, "the cancel waited for more than one poll"


async def test_a_cancel_asked_while_the_node_was_down_is_carried_out_when_it_adopts_the_job(
    node: Node, stores: Stores, tmp_path: Path
) -> None:
    job = await submit(stores, write_script(tmp_path, "sleeps.sh", "exec sleep 30\n"), max_attempts=3)
    first_life = node.supervisor(shutdown_mode=ShutdownMode.LEAVE)
    await first_life.run_once()
    attempt = await wait_for_pid(stores, job.id)
    assert attempt.pid is not None
    node.groups.add(attempt.pid)
    await first_life.stop()  # as after a crash: the program runs on, nobody watches it

    result = await stores.jobs.cancel_job(job.id)
    assert result is not None
    assert result.effect is CancelEffect.REQUESTED

    second_life = node.supervisor()
    report = await Reconciler(
        stores.attempts,
        second_life,
        output_dir=tmp_path / "node-a" / "output",
        retry_policy=NO_WAIT,
        keeper_in_use=True,
    ).run_once()
    finished = await wait_for_final(stores, job.id)

    assert report.adopted == 1
    assert finished.status is JobStatus.CANCELLED
    [recorded] = await stores.jobs.list_attempts(job.id)
    assert recorded.outcome is AttemptOutcome.CANCELLED
    assert live_members(attempt.pid) == []


# --- timeouts ---------------------------------------------------------------------------------------------------


async def test_an_attempt_over_its_timeout_is_ended_as_timed_out_and_retried(
    node: Node, stores: Stores, tmp_path: Path
) -> None:
    timeout = 0.5
    job = await submit(
        stores, write_script(tmp_path, "sleeps.sh", "exec sleep 30\n"), max_attempts=2, timeout_seconds=timeout
    )
    supervisor = node.supervisor()
    await supervisor.start()

    finished = await wait_for_final(stores, job.id)

    assert finished.status is JobStatus.CRASHED
    attempts = await stores.jobs.list_attempts(job.id)
    assert [(a.attempt_number, a.outcome, a.signal) for a in attempts] == [
        (1, AttemptOutcome.TIMED_OUT, signal.SIGTERM),
        (2, AttemptOutcome.TIMED_OUT, signal.SIGTERM),
    ]
    # The timeout runs from the go-ahead; the program itself starts a moment later, by the keeper's exec.
    start_delay_ms = 50
    for attempt in attempts:
        assert attempt.duration_ms is not None
        assert timeout * 1000 - start_delay_ms <= attempt.duration_ms < 5000
        assert attempt.error == f"ran longer than its timeout of {timeout:g} s"


async def test_an_adopted_attempt_keeps_the_timeout_it_started_with(node: Node, stores: Stores, tmp_path: Path) -> None:
    # The service stays down for most of the timeout: a timeout counted from the adoption would end the attempt
    # at about downtime + timeout, well past the bound below.
    timeout, downtime = 4.0, 3.0
    job = await submit(
        stores, write_script(tmp_path, "sleeps.sh", "exec sleep 30\n"), timeout_seconds=timeout, max_attempts=1
    )
    first_life = node.supervisor(shutdown_mode=ShutdownMode.LEAVE)
    await first_life.run_once()
    attempt = await wait_for_pid(stores, job.id)
    assert attempt.pid is not None
    node.groups.add(attempt.pid)
    await first_life.stop()
    down_until = attempt.started_at + timedelta(seconds=downtime)
    await asyncio.sleep(max(0.0, (down_until - datetime.now(UTC)).total_seconds()))

    second_life = node.supervisor()
    await Reconciler(
        stores.attempts,
        second_life,
        output_dir=tmp_path / "node-a" / "output",
        retry_policy=NO_WAIT,
        keeper_in_use=True,
    ).run_once()
    finished = await wait_for_final(stores, job.id)

    [recorded] = await stores.jobs.list_attempts(job.id)
    assert finished.status is JobStatus.CRASHED
    assert recorded.outcome is AttemptOutcome.TIMED_OUT
    assert recorded.finished_at is not None
    # Timed from the attempt's own start, not from the adoption.
    assert timeout <= (recorded.finished_at - recorded.started_at).total_seconds() < timeout + downtime / 2


# --- retry backoff ----------------------------------------------------------------------------------------------


async def db_now(engine: AsyncEngine) -> datetime:
    async with engine.connect() as connection:
        moment: datetime = (await connection.execute(text("SELECT clock_timestamp()"))).scalar_one()
        return moment


async def test_a_retry_is_due_within_zero_and_the_backoff_bound(
    node: Node, stores: Stores, engine: AsyncEngine, tmp_path: Path
) -> None:
    policy = RetryPolicy(base_seconds=3000.0, cap_seconds=3600.0)
    script = write_script(tmp_path, "fails.sh", "exit 1\n")
    jobs = [await submit(stores, script, name=f"fails-{n}", max_attempts=3) for n in range(6)]
    supervisor = node.supervisor(retry_policy=policy, max_concurrent_jobs=len(jobs))

    before = await db_now(engine)
    assert await supervisor.run_once() == len(jobs)
    assert await supervisor.wait_until_idle(WAIT_SECONDS)
    after = await db_now(engine)

    async with engine.connect() as connection:
        due = (
            (
                await connection.execute(
                    text("SELECT next_attempt_at FROM jobs WHERE id = ANY(:ids) AND status = 'retried'"),
                    {"ids": [job.id for job in jobs]},
                )
            )
            .scalars()
            .all()
        )
    bound = timedelta(seconds=policy.bound_seconds(1))
    assert len(due) == len(jobs)
    assert all(before <= moment <= after + bound for moment in due), (before, after, due)
    assert len(set(due)) == len(due), "full jitter: jobs failing together come back at different times"


# --- priority and runAt -----------------------------------------------------------------------------------------


async def test_a_full_node_starts_the_highest_priority_first_and_fifo_within_one(
    node: Node, stores: Stores, tmp_path: Path
) -> None:
    log, release = tmp_path / "order.log", tmp_path / "release"
    blocker = write_script(tmp_path, "blocks.sh", f'while [ ! -e "{release}" ]; do sleep 0.02; done\n')
    recorder = write_script(tmp_path, "records.sh", f'echo "$JOB_NAME" >> "{log}"\n')
    supervisor = node.supervisor(max_concurrent_jobs=1)
    first = await submit(stores, blocker, name="blocker")
    await supervisor.start()
    await wait_for_pid(stores, first.id)

    submitted = []
    for name, priority in [("low", 0), ("high-a", 10), ("mid", 5), ("high-b", 10), ("negative", -3), ("mid-b", 5)]:
        submitted.append(await submit(stores, recorder, name=name, priority=priority))
    release.touch()

    for job in submitted:
        assert (await wait_for_final(stores, job.id)).status is JobStatus.COMPLETED
    assert log.read_text(encoding="utf-8").split() == ["high-a", "high-b", "mid", "mid-b", "low", "negative"]


async def test_a_job_does_not_start_before_its_run_at(node: Node, stores: Stores, tmp_path: Path) -> None:
    script = write_script(tmp_path, "true.sh", "exit 0\n")
    run_at = datetime.now(UTC) + timedelta(seconds=1.5)
    later = await submit(stores, script, name="later", run_at=run_at)
    past = await submit(stores, script, name="past", run_at=datetime.now(UTC) - timedelta(days=1))
    supervisor = node.supervisor()
    await supervisor.start()

    finished_past = await wait_for_final(stores, past.id)
    finished_later = await wait_for_final(stores, later.id)

    # A time already past means now: it ran at once, ahead of the job submitted before it.
    assert finished_past.started_at is not None
    assert finished_later.started_at is not None
    assert finished_past.started_at < run_at
    assert finished_later.started_at >= run_at
    assert finished_later.run_at == run_at
    assert finished_later.status is JobStatus.COMPLETED


# --- what an attempt leaves on its row --------------------------------------------------------------------------


async def test_rusage_and_output_tails_are_recorded_on_the_attempt(
    node: Node, stores: Stores, engine: AsyncEngine, tmp_path: Path
) -> None:
    program = tmp_path / "burns.py"
    program.write_text(
        textwrap.dedent("""
            import sys, time
            held = b"x" * (64 * 1024 * 1024)  # written, so resident
            while time.process_time() < 0.5:  # CPU time, whatever else the machine is doing
                sum(range(100_000))
            print("x" * 3000)
            print("the end of stdout")
            print("why it failed", file=sys.stderr)
            sys.exit(4)
        """),
        encoding="utf-8",
    )
    job = await submit(stores, program, max_attempts=1)
    supervisor = node.supervisor()
    await supervisor.run_once()

    await wait_for_final(stores, job.id)

    [attempt] = await stores.jobs.list_attempts(job.id)
    assert (attempt.outcome, attempt.exit_code) == (AttemptOutcome.FAILED, 4)
    assert attempt.user_cpu_ms is not None
    assert attempt.system_cpu_ms is not None
    assert attempt.user_cpu_ms + attempt.system_cpu_ms >= 500
    assert attempt.user_cpu_ms >= 250  # the loop is arithmetic
    assert attempt.max_rss_kb is not None
    assert attempt.max_rss_kb >= 64 * 1024
    assert attempt.stdout_bytes == 3001 + len("the end of stdout\n")
    assert attempt.stderr_bytes == len("why it failed\n")
    stdout_tail = await stores.jobs.attempt_output_tail(attempt.id, "stdout")
    assert stdout_tail is not None
    assert len(stdout_tail) == 1024  # OUTPUT_TAIL_BYTES of this node
    assert stdout_tail.endswith("x\nthe end of stdout\n")
    assert await stores.jobs.attempt_output_tail(attempt.id, "stderr") == "why it failed\n"
