"""End to end: the `jobmanager` command line, run as a real process (`python -m service ...`), against a real server."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.server import ServerStarter, free_port, service_environment, wait_until

pytestmark = pytest.mark.e2e

# Prints its arguments, then ends as the first one says: a number is the exit code, `kill` is SIGKILL to itself,
# `sleep` sleeps long (to be cancelled).
JOB_SCRIPT = """\
import os
import signal
import sys
import time

print("started with", sys.argv[1:], flush=True)
print("a line on stderr", file=sys.stderr, flush=True)
how = sys.argv[1] if len(sys.argv) > 1 else "0"
if how == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
if how == "sleep":
    time.sleep(120)
time.sleep(0.3)
print("ending with", how, flush=True)
sys.exit(int(how))
"""
CLI_SECONDS = 60.0
SIGKILL = 9


@dataclass
class Cli:
    """`python -m service ARGS` pointed at the server by JOBMANAGER_URL, from a folder with no `.env`."""

    url: str
    cwd: Path

    def start(self, *arguments: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "service", *arguments],
            cwd=self.cwd,
            env=service_environment(JOBMANAGER_URL=self.url),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def __call__(self, *arguments: str) -> subprocess.CompletedProcess[str]:
        environment = service_environment(JOBMANAGER_URL=self.url)
        return subprocess.run(
            [sys.executable, "-m", "service", *arguments],
            cwd=self.cwd,
            env=environment,
            capture_output=True,
            text=True,
            timeout=CLI_SECONDS,
            check=False,
        )

    def json(self, *arguments: str) -> Any:
        completed = self(*arguments, "--json")
        assert completed.returncode == 0, completed.stderr
        return json.loads(completed.stdout)


def _has_a_process(cli: Cli, job_id: str) -> bool | None:
    history = cli.json("show", job_id)["attemptHistory"]
    return True if history and history[0]["pid"] else None


@pytest.fixture
def cli(start_server: ServerStarter, database_url: str, tmp_path: Path) -> Iterator[Cli]:
    script = tmp_path / "cli_job.py"
    script.write_text(JOB_SCRIPT, encoding="utf-8")
    port = free_port()
    environment = service_environment(
        DATABASE_URL=database_url,
        PORT=str(port),
        JOB_SCRIPT_PATH=str(script),
        DATA_DIR=str(tmp_path / "data"),
        LOG_FILE=str(tmp_path / "logs" / "app.log"),
        MAX_ATTEMPTS="1",
        POLL_INTERVAL_SECONDS="0.2",
        CANCEL_GRACE_SECONDS="1",
        SHUTDOWN_MODE="kill",  # nothing a test started outlives it
        SHUTDOWN_GRACE_SECONDS="2",
    )
    server = start_server(environment)
    server.wait_until_healthy()
    workdir = tmp_path / "cli"
    workdir.mkdir()
    yield Cli(url=server.base_url, cwd=workdir)
    server.stop()


@pytest.mark.parametrize(("how", "expected_status"), [("0", 0), ("3", 3), ("kill", 128 + SIGKILL)])
def test_submit_wait_ends_with_the_jobs_exit_status(cli: Cli, how: str, expected_status: int) -> None:
    completed = cli("submit", "--wait", f"exit-{how}", how)

    assert completed.returncode == expected_status, completed.stderr
    job_id = completed.stdout.strip()
    assert job_id.startswith("job-")
    shown = cli.json("show", job_id)
    assert shown["status"] == ("completed" if how == "0" else "crashed")


def test_submit_follow_streams_the_output_and_ends_with_the_exit_status(cli: Cli) -> None:
    completed = cli("submit", "--follow", "followed", "4")

    assert completed.returncode == 4, completed.stderr
    assert completed.stdout.splitlines() == ["started with ['4']", "ending with 4"]
    assert "crashed: attempt 1 failed with exit code 4" in completed.stderr


def test_submit_prints_only_the_id_and_options_reach_the_job(cli: Cli) -> None:
    completed = cli(
        "submit", "later", "a", "--priority", "7", "--timeout", "30", "--run-at", "2099-01-01T00:00:00Z",
        "--idempotency-key", "cli-key-1",
    )  # fmt: skip
    again = cli("submit", "later", "a", "--priority", "7", "--timeout", "30", "--run-at", "2099-01-01T00:00:00Z",
                "--idempotency-key", "cli-key-1")  # fmt: skip

    assert completed.returncode == 0, completed.stderr
    job_id = completed.stdout.strip()
    assert again.stdout.strip() == job_id  # the same key and request: the same job
    job = cli.json("show", job_id)
    assert (job["args"], job["priority"], job["timeoutSeconds"], job["status"]) == (["a"], 7, 30.0, "queued")
    assert job["runAt"].startswith("2099-01-01T00:00:00")


def test_list_show_logs_cancel_and_retry(cli: Cli) -> None:
    done = cli("submit", "--wait", "done", "0").stdout.strip()
    sleeper = cli("submit", "sleeper", "sleep").stdout.strip()

    listed = cli.json("list")
    assert [job["jobId"] for job in listed] == [sleeper, done]
    assert [job["jobId"] for job in cli.json("list", "--status", "completed")] == [done]
    assert [job["jobId"] for job in cli.json("list", "--name", "sle")] == [sleeper]
    assert len(cli.json("list", "--limit", "1")) == 1
    table = cli("list")
    assert table.returncode == 0
    assert done in table.stdout
    assert "completed" in table.stdout

    shown = cli("show", done)
    assert shown.returncode == 0
    assert "succeeded" in shown.stdout  # the attempts table
    assert cli("logs", done).stdout == "started with ['0']\nending with 0\n"
    assert cli("logs", done, "--stderr", "--attempt", "1").stdout == "a line on stderr\n"

    # The sleeper's output, followed until a cancel ends its attempt.
    follower = cli.start("logs", sleeper, "--follow")
    wait_until(lambda: _has_a_process(cli, sleeper), timeout=CLI_SECONDS, message=lambda: f"{sleeper} runs")
    cancelled = cli("cancel", sleeper)
    followed, follow_errors = follower.communicate(timeout=CLI_SECONDS)

    assert cancelled.returncode == 0, cancelled.stderr
    assert follower.returncode == 0, follow_errors
    assert followed == "started with ['sleep']\n"
    wait_until(
        lambda: True if cli.json("show", sleeper)["status"] == "cancelled" else None,
        timeout=CLI_SECONDS,
        message=lambda: f"{sleeper} is cancelled",
    )
    assert cli("cancel", sleeper).returncode == 1  # already final: the API's 409, as one line

    retried = cli("retry", sleeper)
    assert retried.returncode == 0, retried.stderr
    assert cli.json("show", sleeper)["status"] in ("retried", "running")


def test_reading_commands_print_parsable_json(cli: Cli) -> None:
    cli("submit", "--wait", "for-stats", "0")

    stats = cli.json("stats")
    nodes = cli.json("nodes")

    assert stats["totalAttempts"] == 1
    assert {pattern["pattern"] for pattern in stats["patterns"]}
    assert len(nodes) == 1
    assert nodes[0]["status"] == "ok"
    assert cli("nodes").stderr.strip() == "this service has no node registry; showing the node that answered"
    assert "Job name contains digits" in cli("stats").stdout


def test_an_api_error_is_one_line_and_exit_1(cli: Cli) -> None:
    missing = cli("show", "job-424242")
    refused = cli("--url", f"http://127.0.0.1:{free_port()}", "list")
    invalid = cli("submit", "x", "--priority", "5000")
    usage = cli("list", "--no-such-option")

    assert (missing.returncode, missing.stdout) == (1, "")
    assert missing.stderr.splitlines() == ["jobmanager: no job with jobId 'job-424242'"]
    assert refused.returncode == 1
    assert len(refused.stderr.splitlines()) == 1
    assert "cannot connect to http://127.0.0.1:" in refused.stderr
    assert invalid.returncode == 1
    assert len(invalid.stderr.splitlines()) == 1
    assert "priority" in invalid.stderr
    assert "Traceback" not in missing.stderr + refused.stderr + invalid.stderr
    assert usage.returncode == 2


def test_no_command_still_serves_and_db_current_reads_the_schema(cli: Cli, database_url: str) -> None:
    # The server under test was started as `python -m service` with no command (tests/support/server.py).
    assert cli.json("nodes")[0]["database"] == "ok"
    environment = service_environment(DATABASE_URL=database_url)
    current = subprocess.run(
        [sys.executable, "-m", "service", "db", "current", "--json"],
        cwd=cli.cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=CLI_SECONDS,
        check=False,
    )
    assert current.returncode == 0, current.stderr
    revisions = json.loads(current.stdout)
    assert revisions["upToDate"] is True
    assert revisions["current"] == revisions["heads"]


def test_the_token_is_sent_as_a_bearer_token(start_server: ServerStarter, database_url: str, tmp_path: Path) -> None:
    token = "cli-test-token-0123456789"
    port = free_port()
    server = start_server(
        service_environment(
            DATABASE_URL=database_url,
            PORT=str(port),
            API_TOKEN=token,
            DATA_DIR=str(tmp_path / "data"),
            LOG_FILE=str(tmp_path / "logs" / "app.log"),
        )
    )
    server.wait_until_healthy()
    workdir = tmp_path / "cli"
    workdir.mkdir()
    cli = Cli(url=server.base_url, cwd=workdir)

    refused = cli("list")
    by_option = cli("--token", token, "list", "--json")
    by_variable = subprocess.run(
        [sys.executable, "-m", "service", "list", "--json"],
        cwd=workdir,
        env=service_environment(JOBMANAGER_URL=server.base_url, JOBMANAGER_TOKEN=token),
        capture_output=True,
        text=True,
        timeout=CLI_SECONDS,
        check=False,
    )

    assert refused.returncode == 1
    assert len(refused.stderr.splitlines()) == 1
    assert by_option.returncode == 0, by_option.stderr
    assert json.loads(by_option.stdout) == []
    assert by_variable.returncode == 0, by_variable.stderr
    server.stop()
