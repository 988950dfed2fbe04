"""End to end: jobs outlive the server (kill -9, a graceful stop, a long outage) truthfully; the other stop modes.

A restart must adopt the processes still running, recover the exit codes of those that ended meanwhile, lose
nothing and run nothing twice. Each job appends "<JOB_ID> <JOB_ATTEMPT>" to a file, so executions are counted from
what really ran, not from what the service says.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil
import pytest

from service.domain.identifiers import format_job_id
from tests.support.jobs import executions_of, wait_until_final
from tests.support.server import ServerProcess, ServerStarter, free_port, service_environment, wait_until

pytestmark = pytest.mark.e2e

# A shell script: cheap to start, and `sleep` makes the runs overlap a restart.
JOB_SCRIPT = """\
#!/bin/sh
# A job for the restart tests: record this run in the file $1, sleep $2 seconds, exit with code $3.
echo "$JOB_ID $JOB_ATTEMPT" >> "$1"
sleep "$2"
exit "$3"
"""
MAX_ATTEMPTS = 2
# Long enough that no retry is claimed before a test has stopped the first server, short enough to keep tests fast.
RETRY_BACKOFF_BASE_SECONDS = 0.5
SIGTERM = 15
# Twelve jobs as (seconds, exit code): half succeed, half fail with codes 1 to 3. The failing ones are the shorter,
# as they run twice. The longest outlives a restart even on a loaded machine, so that one is always adopted.
BATCH = [
    (1.0, 0), (1.0, 1), (1.5, 0), (1.5, 2), (2.0, 0), (2.0, 3),
    (2.5, 0), (1.0, 3), (3.0, 0), (1.5, 1), (6.0, 0), (2.0, 2),
]  # fmt: skip
LONGEST_JOB_SECONDS = max(seconds for seconds, _ in BATCH)
RAN_SECONDS = 10.0
ENDED_SECONDS = LONGEST_JOB_SECONDS + 10.0
PROCESS_EXIT_SECONDS = 5.0

RECONCILED = re.compile(
    r"reconciled (?P<examined>\d+) running attempt\(s\) on node \S+ in [0-9.]+ s: "
    r"(?P<adopted>\d+) adopted, (?P<recovered>\d+) ended while down, (?P<lost>\d+) lost"
)
ADOPTED = re.compile(r"job (?P<job>job-\d+) attempt (?P<attempt>\d+) adopted: pid (?P<pid>\d+) still running")
RECORDED_AFTER_RESTART = re.compile(
    r"job (?P<job>job-\d+) attempt (?P<attempt>\d+) recorded after restart: (?P<outcome>\w+)"
)

AttemptKey = tuple[str, int]


@dataclass(frozen=True)
class Job:
    job_id: str
    seconds: float
    exit_code: int

    @property
    def expected_attempts(self) -> int:
        return 1 if self.exit_code == 0 else MAX_ATTEMPTS

    @property
    def expected_status(self) -> str:
        return "completed" if self.exit_code == 0 else "crashed"


@dataclass(frozen=True)
class AttemptRow:
    """An attempt as the database holds it, read directly: it tells what a stopped server left behind."""

    job_id: str
    attempt: int
    pid: int | None
    outcome: str
    exit_code: int | None
    signal: int | None
    finished_at: datetime | None

    @property
    def key(self) -> AttemptKey:
        return (self.job_id, self.attempt)


@dataclass(frozen=True)
class Reconciliation:
    """What a restarted server's log says its reconciler did."""

    examined: int
    lost: int
    adopted: dict[AttemptKey, int]
    """Pid of each attempt adopted."""
    recorded: dict[AttemptKey, str]
    """Outcome of each attempt recorded at start-up (ended while the service was down, or lost)."""


def reconciliation_in(output: str) -> Reconciliation:
    summaries = list(RECONCILED.finditer(output))
    assert len(summaries) == 1, f"expected one reconciliation summary in the restarted server's log:\n{output}"
    summary = summaries[0]
    return Reconciliation(
        examined=int(summary["examined"]),
        lost=int(summary["lost"]),
        adopted={(m["job"], int(m["attempt"])): int(m["pid"]) for m in ADOPTED.finditer(output)},
        recorded={(m["job"], int(m["attempt"])): m["outcome"] for m in RECORDED_AFTER_RESTART.finditer(output)},
    )


def is_alive(pid: int) -> bool:
    """Whether `pid` runs; a zombie has ended (here an orphan's zombie may linger: PID 1 need not reap it)."""
    try:
        status: str = psutil.Process(pid).status()
    except psutil.NoSuchProcess:
        return False
    return bool(status != psutil.STATUS_ZOMBIE)


class Installation:
    """One installation of the service: data folder, database, log and job program stay; servers come and go."""

    def __init__(self, tmp_path: Path, database_url: str, start_server: ServerStarter) -> None:
        self.database_url = database_url
        self.start_server = start_server
        self.data_dir = tmp_path / "data"
        self.log_file = tmp_path / "logs" / "app.log"
        self.executions = tmp_path / "executions.txt"
        self.script = tmp_path / "record_sleep_exit.sh"
        self.script.write_text(JOB_SCRIPT, encoding="utf-8")
        self.script.chmod(0o755)

    def start(self, **settings: str) -> ServerProcess:
        defaults = {
            "MAX_CONCURRENT_JOBS": "50",  # the whole batch at once
            "MAX_ATTEMPTS": str(MAX_ATTEMPTS),
            "RETRY_BACKOFF_BASE_SECONDS": str(RETRY_BACKOFF_BASE_SECONDS),
            "POLL_INTERVAL_SECONDS": "0.2",
        }
        environment = service_environment(
            PORT=str(free_port()),
            DATABASE_URL=self.database_url,
            DATA_DIR=str(self.data_dir),
            LOG_FILE=str(self.log_file),
            JOB_SCRIPT_PATH=str(self.script),
            **{**defaults, **settings},
        )
        server = self.start_server(environment)
        server.wait_until_healthy()
        return server

    def start_with_jobs_running(
        self, batch: list[tuple[float, int]], **settings: str
    ) -> tuple[ServerProcess, list[Job]]:
        """Start a server, submit `batch` (seconds, exit code), and return once every job's first attempt runs."""
        server = self.start(**settings)
        with server.client() as client:
            jobs = self.submit(client, batch)
            self.wait_until_first_attempts_run(client, jobs, server)
        return server, jobs

    def submit(self, client: httpx.Client, batch: list[tuple[float, int]]) -> list[Job]:
        jobs = []
        for index, (seconds, exit_code) in enumerate(batch):
            arguments = [str(self.executions), str(seconds), str(exit_code)]
            response = client.post("/jobs", json={"jobName": f"restart-{index}", "arguments": arguments})
            assert response.status_code == 201, response.text
            jobs.append(Job(response.json()["jobId"], seconds, exit_code))
        return jobs

    def wait_until_first_attempts_run(self, client: httpx.Client, jobs: list[Job], server: ServerProcess) -> None:
        """Until every job's program has really started (it wrote its line), which implies its pid is committed."""
        wanted = Counter((job.job_id, 1) for job in jobs)

        def all_ran() -> bool | None:
            return (executions_of(self.executions) & wanted) == wanted or None

        wait_until(
            all_ran,
            timeout=RAN_SECONDS,
            message=lambda: (
                f"every first attempt ran; ran: {sorted(executions_of(self.executions))}\n{server.output()}"
            ),
        )
        for job in jobs:
            first = client.get(f"/jobs/{job.job_id}").json()["attemptHistory"][0]
            assert first["pid"] is not None, (job, first)

    def attempts(self) -> list[AttemptRow]:
        """Every attempt, straight from the database (no server needs to run)."""

        async def fetch() -> list[AttemptRow]:
            connection = await asyncpg.connect(self.database_url)
            try:
                rows = await connection.fetch(
                    "SELECT job_id, attempt_number, pid, outcome, exit_code, signal, finished_at"
                    " FROM attempts ORDER BY job_id, attempt_number"
                )
            finally:
                await connection.close()
            return [
                AttemptRow(
                    format_job_id(row["job_id"]),
                    row["attempt_number"],
                    row["pid"],
                    row["outcome"],
                    row["exit_code"],
                    row["signal"],
                    row["finished_at"],
                )
                for row in rows
            ]

        return asyncio.run(fetch())

    def running_attempts(self) -> dict[AttemptKey, AttemptRow]:
        return {row.key: row for row in self.attempts() if row.outcome == "running"}

    def exit_status(self, key: AttemptKey) -> dict[str, Any] | None:
        """What the exit keeper wrote for an attempt, or None while its program runs."""
        job_id, attempt = key
        path = self.data_dir / "output" / job_id / f"attempt-{attempt}" / "exit-status.json"
        try:
            status: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        return status

    def job_processes(self) -> list[psutil.Process]:
        """Live keepers and programs of this installation's jobs (both name the script on their command line)."""
        return [
            process
            for process in psutil.process_iter(["cmdline", "status"])
            if process.info["status"] != psutil.STATUS_ZOMBIE and str(self.script) in (process.info["cmdline"] or [])
        ]

    def end_job_processes(self) -> None:
        """Kill the process group of every job process still alive, and wait for them to go."""
        leftovers = self.job_processes()
        for process in leftovers:
            with contextlib.suppress(ProcessLookupError, PermissionError, psutil.Error):
                os.killpg(os.getpgid(process.pid), signal.SIGKILL)
        wait_until(
            lambda: not self.job_processes() or None,
            timeout=PROCESS_EXIT_SECONDS,
            message=lambda: f"job processes ended: {self.job_processes()}",
        )


@pytest.fixture
def installation(tmp_path: Path, database_url: str, start_server: ServerStarter) -> Iterator[Installation]:
    """The installation under test; at teardown its servers are killed first, then any job process left over."""
    installed = Installation(tmp_path, database_url, start_server)
    yield installed
    start_server.kill_all()  # no server may start another job while the leftovers are cleared away
    installed.end_job_processes()


def assert_history_is_true(client: httpx.Client, installation: Installation, jobs: list[Job]) -> None:
    """Every job final with its true exit code, each attempt run exactly once, nothing running, nothing lost."""
    listed = wait_until_final(client, [job.job_id for job in jobs], timeout=ENDED_SECONDS + 10)
    executions = executions_of(installation.executions)
    for job in jobs:
        item = listed[job.job_id]
        assert (item["status"], item["exitCode"], item["attempts"]) == (
            job.expected_status,
            job.exit_code,
            job.expected_attempts,
        ), item
        history = client.get(f"/jobs/{job.job_id}").json()["attemptHistory"]
        outcomes = [attempt["outcome"] for attempt in history]
        assert "running" not in outcomes, (job, history)
        assert "lost" not in outcomes, (job, history)
        expected_outcome = "succeeded" if job.exit_code == 0 else "failed"
        assert [(a["attempt"], a["outcome"], a["exitCode"], a["signal"]) for a in history] == [
            (attempt, expected_outcome, job.exit_code, None) for attempt in range(1, job.expected_attempts + 1)
        ], (job, history)
        # The keeper timed the program itself, also for an attempt that ended while no service watched it.
        assert all(a["duration"] >= job.seconds * 1000 for a in history), (job, history)
        ran = sum(count for (job_id, _), count in executions.items() if job_id == job.job_id)
        assert ran == len(history) == job.expected_attempts, (job, history, executions)
    assert executions == Counter(
        (job.job_id, attempt) for job in jobs for attempt in range(1, job.expected_attempts + 1)
    ), "some attempt ran twice, or a run is not recorded as an attempt"
    assert not installation.job_processes(), "a job process still runs after every job is final"


def restart_until_history_is_true(installation: Installation, jobs: list[Job]) -> ServerProcess:
    restarted = installation.start()
    with restarted.client() as client:
        assert_history_is_true(client, installation, jobs)
    return restarted


def assert_adopted(restarted: ServerProcess, left_running: dict[AttemptKey, AttemptRow]) -> None:
    """The restart adopted what still ran (the very processes), recorded what had ended meanwhile, lost nothing."""
    reconciled = reconciliation_in(restarted.output())
    assert (reconciled.examined, reconciled.lost) == (len(left_running), 0), restarted.output()
    assert reconciled.adopted, f"no attempt was adopted:\n{restarted.output()}"
    assert reconciled.adopted.keys() | reconciled.recorded.keys() == left_running.keys(), restarted.output()
    assert reconciled.adopted == {key: left_running[key].pid for key in reconciled.adopted}
    assert set(reconciled.recorded.values()) <= {"succeeded", "failed"}, reconciled.recorded


def test_kill_9_while_jobs_run_adopts_them(installation: Installation) -> None:
    server, jobs = installation.start_with_jobs_running(BATCH)
    server.kill_hard()
    left_running = installation.running_attempts()
    assert left_running, "every attempt had ended before the kill: the test proves nothing"

    assert_adopted(restart_until_history_is_true(installation, jobs), left_running)


def test_graceful_stop_leaves_jobs_running_for_the_next_start(installation: Installation) -> None:
    server, jobs = installation.start_with_jobs_running(BATCH)
    assert server.stop() == 0, server.output()
    # Right after the exit: every attempt left running is still running, or has ended by itself with its own code.
    left_running = installation.running_attempts()
    still_alive = {key for key, row in left_running.items() if row.pid is not None and is_alive(row.pid)}
    assert still_alive, f"no job process outlived the server:\n{server.output()}"
    expected_code = {job.job_id: job.exit_code for job in jobs}
    for key in left_running.keys() - still_alive:
        status = installation.exit_status(key)
        assert status is not None, (key, "neither running nor ended with an exit status")
        assert (status["exit_code"], status["signal"]) == (expected_code[key[0]], None), (key, status)
    assert f"leaving {len(left_running)} job(s) running" in server.output(), server.output()

    assert_adopted(restart_until_history_is_true(installation, jobs), left_running)


def test_jobs_that_end_while_the_server_is_down_keep_their_exit_codes(installation: Installation) -> None:
    server, jobs = installation.start_with_jobs_running(BATCH)
    server.kill_hard()
    left_running = installation.running_attempts()
    assert left_running, "every attempt had ended before the kill: the test proves nothing"
    # The outage lasts until every job's program has ended and its keeper has written how.
    wait_until(
        lambda: all(installation.exit_status(key) is not None for key in left_running) or None,
        timeout=ENDED_SECONDS,
        message=lambda: "every attempt left running wrote its exit status",
    )
    wait_until(
        lambda: not installation.job_processes() or None,
        timeout=PROCESS_EXIT_SECONDS,
        message=lambda: f"no job process runs: {installation.job_processes()}",
    )

    restarted_at = datetime.now(UTC)
    restarted = restart_until_history_is_true(installation, jobs)

    reconciled = reconciliation_in(restarted.output())
    assert (reconciled.examined, reconciled.lost, reconciled.adopted) == (len(left_running), 0, {}), restarted.output()
    expected_code = {job.job_id: job.exit_code for job in jobs}
    assert reconciled.recorded == {
        key: "succeeded" if expected_code[key[0]] == 0 else "failed" for key in left_running
    }, restarted.output()
    # The end times are the keepers', from before the restart, not the moment the restarted server found out.
    recovered = [row for row in installation.attempts() if row.key in left_running]
    assert all(row.finished_at is not None and row.finished_at < restarted_at for row in recovered), recovered


def test_kill_mode_stop_ends_running_jobs_and_records_them(installation: Installation) -> None:
    seconds = LONGEST_JOB_SECONDS
    server, jobs = installation.start_with_jobs_running(
        [(seconds, 0)] * 4, SHUTDOWN_MODE="kill", SHUTDOWN_GRACE_SECONDS="10", MAX_ATTEMPTS="1"
    )
    stopping = time.monotonic()
    assert server.stop() == 0, server.output()
    # Well before the jobs would have ended by themselves, and far from the grace period: SIGTERM ended them.
    assert time.monotonic() - stopping < seconds, server.output()
    assert "shutdown (kill): 4 job(s) running" in server.output(), server.output()

    # Read from the database with no server running: the stopped server wrote these before it exited.
    attempts = installation.attempts()
    assert [(row.job_id, row.attempt, row.outcome, row.exit_code, row.signal) for row in attempts] == [
        (job.job_id, 1, "killed", None, SIGTERM) for job in jobs
    ], server.output()
    assert all(row.finished_at is not None for row in attempts), attempts
    assert executions_of(installation.executions) == Counter((job.job_id, 1) for job in jobs)
    assert not installation.job_processes(), "a job process outlived a stop in kill mode"

    restarted = installation.start()
    with restarted.client() as client:
        listed = wait_until_final(client, [job.job_id for job in jobs])
        assert {item["status"] for item in listed.values()} == {"crashed"}, listed
    assert RECONCILED.search(restarted.output()) is None, "the stop left attempts running for the next start"


def test_drain_mode_stop_waits_for_running_jobs(installation: Installation) -> None:
    server, jobs = installation.start_with_jobs_running(
        [(1.0, 0), (1.5, 2), (1.5, 0), (1.0, 3)], SHUTDOWN_MODE="drain", SHUTDOWN_GRACE_SECONDS="10"
    )
    assert server.stop() == 0, server.output()
    assert "shutdown (drain)" in server.output(), server.output()

    # Every attempt ended by itself and was recorded during the stop; the failed ones wait for their retry, which
    # a stopping server no longer claims.
    attempts = installation.attempts()
    assert [(row.job_id, row.attempt, row.outcome, row.exit_code, row.signal) for row in attempts] == [
        (job.job_id, 1, "succeeded" if job.exit_code == 0 else "failed", job.exit_code, None) for job in jobs
    ], server.output()
    assert executions_of(installation.executions) == Counter((job.job_id, 1) for job in jobs)
    assert not installation.job_processes(), "a job process outlived a drained stop"

    restarted = restart_until_history_is_true(installation, jobs)
    assert RECONCILED.search(restarted.output()) is None, "the stop left attempts running for the next start"
